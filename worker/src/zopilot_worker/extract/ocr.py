"""OCR of page images with docstrange's GPU processor and a locally mounted model.

What docstrange 1.1.8's GPU mode does: ``GPUProcessor`` → ``NanonetsOCRService``
→ ``NanonetsDocumentProcessor``, which asks ``ModelDownloader`` for
``~/.cache/docstrange/models/nanonets-ocr/Nanonets-OCR-ss`` (downloading it
from Nanonets' S3 or the Hugging Face hub when absent) and loads it with
``AutoModelForImageTextToText`` (Nanonets-OCR-s is a Qwen2.5-VL-3B fine-tune,
~7.5 GB in bf16). We keep docstrange's processor, prompt and generation, and
replace only the model loading: from ``ExtractSettings.ocr_model_dir`` with
``local_files_only=True``, never the cache, the hub or S3.

The model is loaded once per engine, lazily, and ``generate`` calls are
serialised: one model instance, one GPU, and the page images are large.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

from docstrange.pipeline.nanonets_processor import NanonetsDocumentProcessor
from docstrange.pipeline.ocr_service import NanonetsOCRService
from docstrange.processors import GPUProcessor
from PIL import Image

log = logging.getLogger(__name__)

# Layouts we accept under ocr_model_dir: the model itself (a Hugging Face
# snapshot) or docstrange's own cache layout copied onto the volume.
_MODEL_SUBDIRS = (
    ".",
    "Nanonets-OCR-s",
    "nanonets-ocr/Nanonets-OCR-ss",
    "nanonets-ocr/Nanonets-OCR-s",
)


class OcrEngine(Protocol):
    """Turns one page image into markdown."""

    name: str

    def ocr_image(self, image: Image.Image) -> str: ...


def resolve_model_dir(root: Path) -> Path | None:
    """The directory under ``root`` holding the OCR model (its config.json), or None."""
    for sub in _MODEL_SUBDIRS:
        candidate = root / sub
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    return None


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken torch install means no GPU OCR, not a failed request
        return False


class _LocalNanonetsProcessor(NanonetsDocumentProcessor):  # type: ignore[misc]
    """docstrange's Nanonets OCR, with the model read from our directory only."""

    def __init__(self, model_dir: Path, device: str) -> None:
        self._device = device
        super().__init__(cache_dir=model_dir)  # calls _initialize_models(model_dir)

    def _initialize_models(self, cache_dir: Path | None = None) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        path = str(cache_dir)
        model: Any = AutoModelForImageTextToText.from_pretrained(
            path, dtype="auto", device_map=self._device, local_files_only=True
        )
        model.eval()
        self.model = model
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.processor = AutoProcessor.from_pretrained(  # type: ignore[no-untyped-call]
            path, local_files_only=True
        )


class _LocalNanonetsService(NanonetsOCRService):  # type: ignore[misc]
    # NanonetsOCRService.__init__ would build the downloading processor; skip it.
    def __init__(self, model_dir: Path, device: str) -> None:
        self._processor = _LocalNanonetsProcessor(model_dir, device)


class DocstrangeOcr:
    """docstrange's ``GPUProcessor`` over a local Nanonets-OCR model."""

    name = "docstrange.GPUProcessor"

    def __init__(self, model_dir: Path, device: str = "cuda") -> None:
        # Loading takes tens of seconds on a GPU; callers cache the engine.
        service = _LocalNanonetsService(model_dir, device)
        self._processor: Any = GPUProcessor(
            preserve_layout=True, include_images=False, ocr_enabled=True, ocr_service=service
        )
        self._lock = threading.Lock()

    def ocr_image(self, image: Image.Image) -> str:
        # docstrange's processor and the model's chat template take a file path.
        with tempfile.TemporaryDirectory(prefix="zopilot-ocr-") as tmp:
            path = os.path.join(tmp, "page.png")
            image.save(path, "PNG")
            with self._lock:
                result = self._processor.process(path)
        return str(result.extract_markdown()).strip()


def load_engine(model_root: Path | None) -> tuple[OcrEngine | None, str]:
    """(engine, "") when OCR can run here, else (None, why not — a public sentence)."""
    if model_root is None:
        return None, "no OCR model is configured (set the OCR model directory, ocr_model_dir)"
    model_dir = resolve_model_dir(model_root)
    if model_dir is None:
        return None, "the configured OCR model directory holds no model (config.json missing)"
    if not cuda_available():
        return None, "an OCR model is configured but this worker has no CUDA GPU"
    try:
        return DocstrangeOcr(model_dir), ""
    except Exception:
        log.exception("loading the OCR model from %s failed", model_dir)
        return None, "the OCR model failed to load (see the worker log)"
