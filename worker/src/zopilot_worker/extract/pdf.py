"""PDF access through pypdfium2: page count, text layer per page, page images for OCR.

Licence check (done when this module was written, pypdfium2 5.x): pypdfium2 is
``Apache-2.0 OR BSD-3-Clause`` (SPDX headers of its sources, PyPI metadata);
the PDFium binary in its wheels is BSD-3-Clause (Google/Foxit) with permissive
third-party parts (FreeType, libjpeg-turbo, OpenJPEG, zlib, lcms2...). All are
permissive and may ship in our image. PyMuPDF was ruled out: AGPL-3.0.

PDFium is not thread-safe, not even across different documents (pypdfium2's
"Thread incompatibility" note), while the service extracts up to 4 documents at
once. Every PDFium call therefore runs under one process-wide lock, taken per
page so that concurrent documents interleave, and every PDFium object is closed
explicitly under that lock: left to the garbage collector, a finalizer could
close it from another thread in the middle of someone else's call.

The bytes are handed to PDFium as they are: no temporary file, one parse.
"""

from __future__ import annotations

import threading
from types import TracebackType

import pypdfium2 as pdfium
from PIL import Image

from zopilot_worker.errors import CorruptDocument, DocumentTooLarge, EmptyDocument

PDFIUM_LOCK = threading.Lock()
"""Serialises every PDFium call in the process; use it for any other pypdfium2 use too."""

# Pages are rendered for OCR at 200 dpi: enough for small print, and the OCR
# model's processor downsizes larger images anyway. A hostile page size
# (PDF allows 200 x 200 inches) is capped at 25 megapixels.
OCR_DPI = 200
MAX_RENDER_PIXELS = 25_000_000


class PdfFile:
    """An open PDF; use as a context manager so PDFium's handle is always closed."""

    def __init__(self, data: bytes, max_pages: int) -> None:
        with PDFIUM_LOCK:
            try:
                self._doc = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as exc:
                if "password" in str(exc).lower():
                    raise CorruptDocument(
                        "The PDF is password-protected; send it without a password.",
                        detail=str(exc),
                    ) from exc
                raise CorruptDocument(
                    "The PDF is damaged and cannot be read.", detail=str(exc)
                ) from exc
            self.pages = len(self._doc)
        if self.pages == 0:
            self.close()
            raise EmptyDocument("The PDF has no pages.")
        if self.pages > max_pages:
            self.close()
            raise DocumentTooLarge(
                f"The PDF has {self.pages} pages; the limit is {max_pages}. "
                "Split it into smaller documents."
            )

    def __enter__(self) -> PdfFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with PDFIUM_LOCK:
            self._doc.close()

    def text(self, index: int) -> str:
        """The text layer of page ``index`` (0-based), with ``\\n`` line breaks."""
        with PDFIUM_LOCK:
            page = self._doc[index]
            try:
                textpage = page.get_textpage()
                try:
                    text: str = textpage.get_text_range()
                finally:
                    textpage.close()
            finally:
                page.close()
        # PDFium emits CRLF line breaks and \ufffe for soft hyphens at line ends.
        return text.replace("\r\n", "\n").replace("\ufffe", "")

    def render(self, index: int, dpi: int = OCR_DPI) -> Image.Image:
        """Page ``index`` (0-based) as an RGB image for OCR, independent of PDFium memory."""
        with PDFIUM_LOCK:
            page = self._doc[index]
            try:
                width, height = page.get_size()  # PDF points, 1/72 inch
                scale = dpi / 72
                pixels = width * height * scale * scale
                if pixels > MAX_RENDER_PIXELS:
                    scale *= (MAX_RENDER_PIXELS / pixels) ** 0.5
                bitmap = page.render(scale=scale)
                try:
                    # to_pil() may share the bitmap's buffer; copy before closing it.
                    image: Image.Image = bitmap.to_pil().convert("RGB")
                finally:
                    bitmap.close()
            finally:
                page.close()
        return image
