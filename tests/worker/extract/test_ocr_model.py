"""The OCR path with a real (tiny, random) Nanonets-architecture model loaded from a local dir.

On CPU the engine is built directly with ``device="cpu"``: it proves the model
loads with ``from_pretrained(local_files_only=True)`` and a page goes through
docstrange's GPUProcessor → NanonetsOCRService → generate. The ``gpu`` test
runs the whole Extractor path (settings.ocr_model_dir, CUDA check, lazy load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from zopilot_worker.extract import Extractor, ExtractSettings
from zopilot_worker.testing.documents import make_mixed_pdf, make_scanned_pdf


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.slow
def test_docstrange_ocr_with_local_model_on_cpu(
    tiny_ocr_model: Path, no_network: list[Any]
) -> None:
    from zopilot_worker.extract.ocr import DocstrangeOcr

    engine = DocstrangeOcr(tiny_ocr_model, device="cpu")
    doc = Extractor(ocr_engine=engine).extract(
        make_mixed_pdf(["Text page one here.", "scan"]), "mixed.pdf"
    )
    assert doc.ocr_pages == (2,) and doc.ocr_pending == ()
    assert doc.engine == "pdfium-text+docstrange.GPUProcessor"
    # The random model ends its turn at once: the page went through OCR, found nothing.
    assert doc.warnings == ("OCR found no text on page 2.",)
    assert no_network == []


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
def test_ocr_on_gpu_from_settings(tiny_ocr_model: Path) -> None:
    extractor = Extractor(ExtractSettings(ocr_model_dir=tiny_ocr_model))
    doc = extractor.extract(make_scanned_pdf(["Scanned invoice", "Page two"]), "scan.pdf")
    assert doc.ocr_pages == (1, 2) and doc.ocr_pending == ()
    assert doc.engine == "pdfium-text+docstrange.GPUProcessor"
    engine: Any = extractor._ocr_engine
    assert engine is not None
    assert str(engine._processor._ocr_service._processor.model.device).startswith("cuda")
