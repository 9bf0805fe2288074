"""The Extractor: bytes in, ``ExtractedDocument`` out, or a ``WorkerError``.

Order of checks, cheapest first: empty, size, type (magic bytes), then the
per-format guards (zip bomb, page count) before any parser runs. Anything a
parser raises beyond that becomes ``CorruptDocument``; the process never sees
a hostile file's exception.

PDF policy: the text layer is read page by page; a page with fewer than
``min_text_chars_per_page`` visible characters needs OCR. ``ocr="auto"`` OCRs
only those pages, ``"always"`` every page (the OCR text replaces the text
layer where it produced any), ``"never"`` none. Pages that need OCR but did
not get it (no model/GPU, or ``"never"``) are listed in ``ocr_pending`` with a
warning, so callers always know which pages' text is missing or unverified; with
``"always"`` and no engine that is every page (text-layer pages keep their text).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Literal

from zopilot_worker.errors import (
    BadRequest,
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    GPUOutOfMemory,
    ParsingMemoryExceeded,
    WorkerError,
)
from zopilot_worker.extract import ocr as ocr_mod
from zopilot_worker.extract import office
from zopilot_worker.extract.detect import detect_kind
from zopilot_worker.extract.ooxml import check_ooxml
from zopilot_worker.extract.pdf import PdfFile
from zopilot_worker.extract.schema import ExtractedDocument, ExtractSettings, Kind
from zopilot_worker.extract.text import markdown_to_text, non_space_chars, page_ranges

log = logging.getLogger(__name__)

PDF_ENGINE = "pdfium-text"
_OCR_MODES = ("auto", "always", "never")

OcrLoader = Callable[[], tuple[ocr_mod.OcrEngine | None, str]]
"""Returns (engine, "") or (None, why OCR is unavailable: a public sentence)."""


class Extractor:
    """Extracts documents; safe to share between threads (one per process is enough)."""

    def __init__(
        self,
        settings: ExtractSettings = ExtractSettings(),  # noqa: B008 - frozen, so sharing is safe
        *,
        ocr_engine: ocr_mod.OcrEngine | None = None,
        ocr_loader: OcrLoader | None = None,
    ) -> None:
        """``ocr_engine`` replaces the engine built from ``settings.ocr_model_dir`` (tests);
        ``ocr_loader`` replaces how it is loaded (a parsing process asks the service's)."""
        self.settings = settings
        self._ocr_loader = ocr_loader
        self._ocr_engine = ocr_engine
        self._ocr_unavailable = ""
        self._ocr_loaded = ocr_engine is not None
        self._ocr_lock = threading.Lock()

    def extract(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = None,
        *,
        ocr: Literal["auto", "always", "never"] = "auto",
    ) -> ExtractedDocument:
        """Extract one document; raises only ``WorkerError`` subclasses."""
        if ocr not in _OCR_MODES:
            raise BadRequest(f"ocr must be one of {', '.join(_OCR_MODES)}.")
        name = PurePosixPath(filename.replace("\\", "/")).name or "document"
        if not data:
            raise EmptyDocument(f"{name!r} is empty (0 bytes).")
        limit = self.settings.max_bytes
        if len(data) > limit:
            raise DocumentTooLarge(f"{name!r} has {len(data)} bytes; the limit is {limit}.")
        kind: Kind = detect_kind(data, name, content_type)  # type: ignore[assignment]
        try:
            if kind == "pdf":
                return self._extract_pdf(name, bytes(data), ocr)
            return self._extract_office(name, kind, bytes(data))
        except WorkerError:
            raise
        except MemoryError as exc:
            raise memory_exceeded(name) from exc
        except Exception as exc:  # parsers on hostile input: never past this line
            log.warning("extraction of %r (%s) failed unexpectedly", name, kind, exc_info=True)
            raise CorruptDocument(
                f"The {kind.upper()} document could not be read.", detail=repr(exc)
            ) from exc

    def _extract_office(self, name: str, kind: Kind, data: bytes) -> ExtractedDocument:
        pages = check_ooxml(data, kind, self.settings) if kind in ("docx", "pptx", "xlsx") else 1
        markdown, warnings = office.convert(kind, data)
        text = markdown_to_text(markdown) if kind != "text" else markdown
        if not text.strip():
            warnings += ("No text was found in the document.",)
        return ExtractedDocument(
            name=name,
            kind=kind,
            markdown=markdown,
            text=text,
            pages=pages,
            ocr_pages=(),
            ocr_pending=(),
            engine=office.processor_name(kind),
            warnings=warnings,
        )

    def _extract_pdf(self, name: str, data: bytes, ocr: str) -> ExtractedDocument:
        min_chars = self.settings.min_text_chars_per_page
        with PdfFile(data, self.settings.max_pages) as pdf:
            texts = [pdf.text(i) for i in range(pdf.pages)]
            needs = [i + 1 for i, t in enumerate(texts) if non_space_chars(t) < min_chars]
            wanted = list(range(1, pdf.pages + 1)) if ocr == "always" else needs
            engine = self._engine() if wanted and ocr != "never" else None
            ocr_done: dict[int, str] = {}
            warnings: list[str] = []
            if engine is not None:
                for page in wanted:
                    try:
                        ocr_done[page] = engine.ocr_image(pdf.render(page - 1))
                    except GPUOutOfMemory:
                        raise  # the plan was too small: exit 76 and a re-plan, not a warning
                    except Exception:
                        log.exception("OCR of page %d of %r failed", page, name)
                        warnings.append(f"OCR failed on page {page}.")
        pending = [p for p in (needs if ocr != "always" else wanted) if p not in ocr_done]
        if pending:
            why = (
                "OCR was turned off for this request (ocr=never)"
                if ocr == "never"
                else self._ocr_unavailable or "OCR did not produce text"
            )
            which = (
                f"Page {pending[0]} needs"
                if len(pending) == 1
                else f"Pages {page_ranges(pending)} need"
            )
            reason = "OCR was requested" if ocr == "always" else "no usable text layer"
            warnings.append(f"{which} OCR ({reason}) but did not get it: {why}.")
        md_parts, text_parts = [], []
        for number, layer in enumerate(texts, start=1):
            body, note = layer.strip(), ""
            if ocr_done.get(number):
                body, note = ocr_done[number], " (OCR)"
            elif number in ocr_done:
                warnings.append(f"OCR found no text on page {number}.")
            elif number in pending:
                note = " (needs OCR)"
            md_parts.append(f"<!-- page {number}{note} -->\n\n{body}".rstrip())
            if body:
                text_parts.append(body if not note else markdown_to_text(body))
        ocr_pages = tuple(sorted(p for p, t in ocr_done.items()))
        return ExtractedDocument(
            name=name,
            kind="pdf",
            markdown="\n\n".join(md_parts) + "\n",
            text="\n\n".join(text_parts),
            pages=len(texts),
            ocr_pages=ocr_pages,
            ocr_pending=tuple(pending),
            engine=PDF_ENGINE + (f"+{engine.name}" if engine and ocr_pages else ""),
            warnings=tuple(warnings),
        )

    def load_ocr(self) -> tuple[ocr_mod.OcrEngine | None, str]:
        """(engine, "") or (None, why not), loading the engine once on first call."""
        engine = self._engine()
        return engine, self._ocr_unavailable

    def _engine(self) -> ocr_mod.OcrEngine | None:
        """The OCR engine, loaded once on first need; None (with the reason kept) if unavailable."""
        with self._ocr_lock:
            if not self._ocr_loaded:
                if self._ocr_loader is not None:
                    self._ocr_engine, self._ocr_unavailable = self._ocr_loader()
                else:
                    self._ocr_engine, self._ocr_unavailable = ocr_mod.load_engine(
                        self.settings.ocr_model_dir
                    )
                self._ocr_loaded = True
            return self._ocr_engine


def memory_exceeded(name: str) -> ParsingMemoryExceeded:
    return ParsingMemoryExceeded(
        f"{name!r} needs more memory to parse than a document is allowed; it is too large or "
        "too complex once unpacked. Split it into smaller documents.",
        detail="MemoryError",
    )
