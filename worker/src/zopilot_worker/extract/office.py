"""DOCX/PPTX/XLSX/HTML/text through docstrange's local processors.

docstrange's ``DocumentExtractor`` is never used: its default mode uploads the
file to the Nanonets cloud and its ``gpu=True`` mode refuses to start without
CUDA. Its per-format processors are plain local code (python-docx,
python-pptx, pandas+openpyxl, markdownify) and are called here directly.
They take a path, not bytes, and pick their parser by extension, so each
document is written to a private temporary directory that is always removed.

Processors are created per call: they are cheap and hold configuration only,
which keeps concurrent calls from sharing any state.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile

from docstrange.processors import (
    DOCXProcessor,
    ExcelProcessor,
    HTMLProcessor,
    PPTXProcessor,
    TXTProcessor,
)
from docstrange.processors.base import BaseProcessor
from docstrange.result import ConversionResult

from zopilot_worker.errors import CorruptDocument
from zopilot_worker.extract.detect import decode_text
from zopilot_worker.extract.schema import Kind

log = logging.getLogger(__name__)


class _ExcelProcessor(ExcelProcessor):  # type: ignore[misc]
    """docstrange's ExcelProcessor with its workbook handling fixed; same markdown.

    docstrange 1.1.8 opens ``pd.ExcelFile`` and never closes it (a leaked
    handle and a ResourceWarning per file), then re-reads the whole workbook
    once per sheet: N+1 full parses for N sheets, a cheap amplification for a
    hostile many-sheet file. Here the workbook is parsed once and closed.
    """

    def _process_excel(self, file_path: str) -> ConversionResult:
        import pandas as pd

        with pd.ExcelFile(file_path) as workbook:
            sheets = pd.read_excel(workbook, sheet_name=None)  # every sheet, one parse
        parts: list[str] = []
        for name, frame in sheets.items():
            if not frame.empty:
                parts += [f"\n## Sheet: {name}", "", self._dataframe_to_markdown(frame, pd), ""]
        metadata = {"sheet_count": len(sheets), "sheet_names": list(sheets), "extractor": "pandas"}
        return ConversionResult("\n".join(parts), metadata)


# kind → (processor, file suffix it dispatches on, engine name reported).
# _ExcelProcessor is docstrange's ExcelProcessor with one method repaired: same name.
_PROCESSORS: dict[str, tuple[type[BaseProcessor], str, str]] = {
    "docx": (DOCXProcessor, ".docx", "docstrange.DOCXProcessor"),
    "pptx": (PPTXProcessor, ".pptx", "docstrange.PPTXProcessor"),
    "xlsx": (_ExcelProcessor, ".xlsx", "docstrange.ExcelProcessor"),
    "html": (HTMLProcessor, ".html", "docstrange.HTMLProcessor"),
    "text": (TXTProcessor, ".txt", "docstrange.TXTProcessor"),
}
# docstrange's DOCXProcessor keeps only the first 20 rows of a table and says so
# in the markdown; surface that as a warning instead of losing it silently.
_TRUNCATED = re.compile(r"\*Table truncated to first (\d+) rows out of (\d+) total\.\*")
# docstrange's DOCX clean-up inserts a newline before every "## ", which splits
# its own "### Table N" headings into "#" + "## Table N"; put them back together.
_SPLIT_H3 = re.compile(r"^#\n(## )", re.MULTILINE)


def _caused_by_memory(exc: BaseException) -> bool:
    """Whether a MemoryError is in ``exc``'s chain (docstrange wraps errors it catches)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def processor_name(kind: Kind) -> str:
    return _PROCESSORS[kind][2]


def convert(kind: Kind, data: bytes) -> tuple[str, tuple[str, ...]]:
    """Run docstrange's processor for ``kind``; return (markdown, warnings)."""
    processor_cls, suffix, _ = _PROCESSORS[kind]
    if kind in ("html", "text"):
        # docstrange reads HTML as strict UTF-8 and guesses text encodings
        # without BOM support; hand it UTF-8 we decoded ourselves.
        text = decode_text(data)
        if text is None:  # detect_kind already checked; only a direct caller gets here
            raise CorruptDocument("The document is not readable text.", detail=kind)
        data = text.encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="zopilot-extract-") as tmp:
        path = os.path.join(tmp, "document" + suffix)
        with open(path, "wb") as f:
            f.write(data)
        try:
            processor = processor_cls(preserve_layout=True, include_images=False, ocr_enabled=False)
            markdown = processor.process(path).extract_markdown()
        except MemoryError:
            raise  # the parsing process's memory limit: reported as such, not as damage
        except Exception as exc:  # docstrange wraps parser errors in ConversionError
            if _caused_by_memory(exc):
                raise MemoryError from exc
            log.info("docstrange %s failed: %r", processor_cls.__name__, exc)
            raise CorruptDocument(
                f"The {kind.upper() if kind != 'text' else 'text'} document could not be read; "
                "it is damaged or not what its type says.",
                detail=f"{processor_cls.__name__}: {exc!r}",
            ) from exc
    if kind == "docx":
        markdown = _SPLIT_H3.sub(r"#\1", markdown)
    warnings = tuple(
        f"Table truncated by docstrange to its first {m[1]} of {m[2]} rows."
        for m in _TRUNCATED.finditer(markdown)
    )
    return markdown.strip(), warnings
