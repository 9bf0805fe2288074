"""Document extraction: docstrange's local processors plus a pypdfium2 fast path for PDFs.

Public surface (other modules code against exactly this):
``ExtractSettings``, ``ExtractedDocument``, ``SUPPORTED_TYPES`` (content type →
kind), ``SUPPORTED_EXTENSIONS`` (extension → kind), ``detect_kind`` and
``Extractor``. Layers inside: ``detect`` (type sniffing), ``ooxml`` (zip-bomb
guard), ``office`` (docstrange processors), ``pdf`` (PDFium access), ``ocr``
(docstrange GPU OCR from a local model), ``extractor`` (the policy).
"""

from zopilot_worker.extract.detect import SUPPORTED_EXTENSIONS, SUPPORTED_TYPES, detect_kind
from zopilot_worker.extract.extractor import Extractor
from zopilot_worker.extract.schema import ExtractedDocument, ExtractSettings

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "SUPPORTED_TYPES",
    "ExtractSettings",
    "ExtractedDocument",
    "Extractor",
    "detect_kind",
]
