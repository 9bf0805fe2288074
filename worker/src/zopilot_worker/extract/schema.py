"""The extraction settings and result types (the package's public data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["pdf", "docx", "pptx", "xlsx", "html", "text"]
OcrMode = Literal["auto", "always", "never"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class ExtractSettings:
    """Limits and OCR configuration of an :class:`Extractor`.

    max_bytes: largest input accepted, in bytes. 50 MiB: a 500-page scanned PDF
        at office quality, and what the RunPod worker accepted.
    max_pages: most pages (PDF pages, PPTX slides, XLSX sheets) per document.
    max_uncompressed_bytes: zip-bomb guard for DOCX/PPTX/XLSX: the sum of the
        entries' declared uncompressed sizes, in bytes, checked before parsing.
    max_compression_ratio: zip-bomb guard: largest uncompressed/compressed
        ratio of one entry (above 1 MiB) or of the whole archive. Real OOXML
        XML deflates 5-30x; bombs reach ~1000x.
    ocr_model_dir: local directory of the OCR model (Nanonets-OCR-s, a
        Qwen2.5-VL checkpoint, as docstrange's GPU mode uses), read with
        ``local_files_only``; never downloaded. None: pages needing OCR are
        reported in ``ocr_pending``, not OCR'd.
    min_text_chars_per_page: a PDF page whose text layer has fewer
        non-whitespace characters needs OCR (16: more than a page number or a
        stray header, less than one real line of text).
    """

    max_bytes: int = 50 * MiB
    max_pages: int = 500
    max_uncompressed_bytes: int = 200 * MiB
    max_compression_ratio: float = 100.0
    ocr_model_dir: Path | None = None
    min_text_chars_per_page: int = 16


@dataclass(frozen=True)
class ExtractedDocument:
    """One extracted document.

    pages: PDF pages, PPTX slides or XLSX sheets; 1 for DOCX, HTML and text
        (they have no fixed pagination without a layout engine).
    ocr_pages: 1-based pages whose text came from OCR.
    ocr_pending: 1-based pages that need OCR (no usable text layer) but were
        not OCR'd: no model/CUDA, or ``ocr="never"``. Their text is missing.
    engine: what produced the text, e.g. ``pdfium-text``,
        ``pdfium-text+docstrange.GPUProcessor``, ``docstrange.DOCXProcessor``.
    warnings: public, human-readable notes (no paths, no internals).
    """

    name: str
    kind: str
    markdown: str
    text: str
    pages: int
    ocr_pages: tuple[int, ...]
    ocr_pending: tuple[int, ...]
    engine: str
    warnings: tuple[str, ...]
