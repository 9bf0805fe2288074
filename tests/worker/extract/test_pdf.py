"""PDFs: the pypdfium2 text fast path, pages that need OCR, and the OCR modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from zopilot_worker.errors import GPUOutOfMemory
from zopilot_worker.extract import Extractor, ExtractSettings
from zopilot_worker.testing.documents import make_mixed_pdf, make_scanned_pdf, make_text_pdf

PAGES = [
    "Invoice INV-7 from Acme Logistics.\nAmount due: 1,250.00 EUR.",
    "Payment terms: thirty days net.\nBank: Example Bank, IBAN DE89 3704.",
    "Thank you for your business. Questions: billing@example.com",
]


class FakeOcr:
    """An OcrEngine double: records what it was asked, answers with fixed markdown."""

    name = "fake-ocr"

    def __init__(self, fail: bool = False) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.fail = fail

    def ocr_image(self, image: Image.Image) -> str:
        self.sizes.append(image.size)
        if self.fail:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return f"**OCR text** of image {len(self.sizes)}"


def test_text_pdf_fast_path(extractor: Extractor) -> None:
    doc = extractor.extract(make_text_pdf(PAGES), "invoice.pdf", "application/pdf")
    assert (doc.kind, doc.engine, doc.pages) == ("pdf", "pdfium-text", 3)
    assert doc.ocr_pages == doc.ocr_pending == () and doc.warnings == ()
    assert "Amount due: 1,250.00 EUR." in doc.text
    assert doc.text.index("INV-7") < doc.text.index("thirty days") < doc.text.index("billing@")
    for number in (1, 2, 3):
        assert f"<!-- page {number} -->" in doc.markdown
    assert "\r" not in doc.text


def test_scanned_pdf_reports_pages_pending_without_network(
    extractor: Extractor, no_network: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import docstrange.processors.cloud_processor as cloud

    def no_cloud(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("docstrange's cloud processor must never be used")

    monkeypatch.setattr(cloud.CloudProcessor, "__init__", no_cloud)
    doc = extractor.extract(make_scanned_pdf(["Scanned receipt", "Page two"]), "scan.pdf")
    assert doc.pages == 2 and doc.text == ""
    assert doc.ocr_pending == (1, 2) and doc.ocr_pages == ()
    assert len(doc.warnings) == 1
    assert "Pages 1-2 need OCR" in doc.warnings[0]
    assert "no OCR model is configured" in doc.warnings[0]
    assert "<!-- page 2 (needs OCR) -->" in doc.markdown
    assert no_network == []  # nothing even tried to connect


def test_mixed_pdf_only_image_pages_are_pending(extractor: Extractor) -> None:
    doc = extractor.extract(make_mixed_pdf(PAGES, scanned={2}), "mixed.pdf")
    assert doc.ocr_pending == (2,)
    assert "Amount due" in doc.text and "billing@example.com" in doc.text
    assert "Payment terms" not in doc.text  # page 2 is an image


def test_auto_ocrs_only_pages_without_text() -> None:
    engine = FakeOcr()
    doc = Extractor(ocr_engine=engine).extract(make_mixed_pdf(PAGES, scanned={2}), "m.pdf")
    assert doc.ocr_pages == (2,) and doc.ocr_pending == () and doc.warnings == ()
    assert doc.engine == "pdfium-text+fake-ocr"
    assert "<!-- page 2 (OCR) -->\n\n**OCR text** of image 1" in doc.markdown
    assert "OCR text of image 1" in doc.text  # markdown stripped for the classifier
    # A4 at 200 dpi: the page was rendered, not its thumbnail.
    assert engine.sizes == [(1654, 2339)]


def test_always_ocrs_every_page() -> None:
    engine = FakeOcr()
    doc = Extractor(ocr_engine=engine).extract(make_text_pdf(PAGES), "t.pdf", ocr="always")
    assert doc.ocr_pages == (1, 2, 3) and len(engine.sizes) == 3
    assert "Amount due" not in doc.text  # OCR output replaced the text layer


def test_never_skips_ocr_and_lists_pages_pending() -> None:
    engine = FakeOcr()
    doc = Extractor(ocr_engine=engine).extract(make_scanned_pdf(["x"]), "s.pdf", ocr="never")
    assert engine.sizes == [] and doc.ocr_pending == (1,) and doc.ocr_pages == ()
    assert "ocr=never" in doc.warnings[0]


def test_always_without_an_engine_keeps_the_text_layer(extractor: Extractor) -> None:
    doc = extractor.extract(make_text_pdf(PAGES), "t.pdf", ocr="always")
    assert doc.ocr_pending == (1, 2, 3) and "Amount due" in doc.text


def test_failing_ocr_is_a_warning_not_an_error() -> None:
    doc = Extractor(ocr_engine=FakeOcr(fail=True)).extract(make_scanned_pdf(["x"]), "s.pdf")
    assert doc.ocr_pending == (1,) and doc.ocr_pages == ()
    assert doc.warnings[0] == "OCR failed on page 1."
    assert "CUDA" not in " ".join(doc.warnings)  # internals stay in the log


def test_configured_model_without_cuda_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zopilot_worker.extract import ocr

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(ocr, "cuda_available", lambda: False)
    doc = Extractor(ExtractSettings(ocr_model_dir=tmp_path)).extract(make_scanned_pdf(["x"]), "s")
    assert doc.ocr_pending == (1,)
    assert "an OCR model is configured but this worker has no CUDA GPU" in doc.warnings[0]


def test_model_dir_without_a_model_is_reported(tmp_path: Path) -> None:
    doc = Extractor(ExtractSettings(ocr_model_dir=tmp_path)).extract(make_scanned_pdf(["x"]), "s")
    assert "holds no model" in doc.warnings[0]


@pytest.mark.parametrize("layout", [".", "Nanonets-OCR-s", "nanonets-ocr/Nanonets-OCR-ss"])
def test_model_dir_layouts(tmp_path: Path, layout: str) -> None:
    from zopilot_worker.extract.ocr import resolve_model_dir

    (tmp_path / layout).mkdir(parents=True, exist_ok=True)
    (tmp_path / layout / "config.json").write_text("{}")
    assert resolve_model_dir(tmp_path) == (tmp_path / layout).resolve()


class OomOcr(FakeOcr):
    def ocr_image(self, image: Image.Image) -> str:
        raise GPUOutOfMemory("CUDA ran out of memory running the OCR model")


def test_cuda_oom_while_running_ocr_is_not_a_page_warning() -> None:
    """A CUDA OOM on a page means the job's plan was too small: it must reach the
    job runner (exit 76, re-planned), not become an "OCR failed" warning."""
    with pytest.raises(GPUOutOfMemory):
        Extractor(ocr_engine=OomOcr()).extract(make_scanned_pdf(["Scanned receipt"]), "s.pdf")
