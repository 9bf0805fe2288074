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

Loading goes through the GPU-memory gate (the planner's ``OCR_MODEL_BYTES``,
the estimate the operator plans with) and raises, so that nothing is
remembered when it fails and the next document that needs OCR tries again:
``GPUMemoryUnavailable`` when the gate refuses, ``GPUOutOfMemory`` when CUDA
runs out of memory loading it (the job exits 76 and is re-planned), and
``OcrModelUnavailable`` for any other failure. Only conditions that cannot
change while the process runs (no model configured, none in the directory,
no CUDA) return ``(None, reason)``.
"""

from __future__ import annotations

import gc
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
from zopilot_common.planner import OCR_MODEL_BYTES

from zopilot_worker.errors import GPUOutOfMemory, OcrModelUnavailable, WorkerError
from zopilot_worker.gate import MIB, GPUMemoryGate, cuda_memory_probe

log = logging.getLogger(__name__)

# Free GPU memory kept on top of the OCR model's estimate (the worker's default headroom).
DEFAULT_HEADROOM_BYTES = 512 * MIB

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


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is CUDA running out of memory."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain, bounded
        if seen is None:
            return False
        if type(seen).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _release_cuda_cache() -> None:
    """Give back what a failed load left in PyTorch's cache, for the next try and others."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort: the error being reported matters more
        log.debug("could not empty the CUDA cache", exc_info=True)


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
                try:
                    result = self._processor.process(path)
                except Exception as exc:
                    if is_cuda_oom(exc):
                        _release_cuda_cache()
                        raise GPUOutOfMemory(
                            "CUDA out of memory running OCR on a page image; the job's "
                            "memory plan is too small for OCR",
                            detail=repr(exc),
                        ) from exc
                    raise
        return str(result.extract_markdown()).strip()


def load_engine(
    model_root: Path | None, *, gate: GPUMemoryGate | None = None
) -> tuple[OcrEngine | None, str]:
    """(engine, "") when OCR can run here, (None, why not: a public sentence) when it never
    can in this process; raises a WorkerError when loading failed now (see the module doc).
    """
    if model_root is None:
        return None, "no OCR model is configured (set the OCR model directory, ocr_model_dir)"
    model_dir = resolve_model_dir(model_root)
    if model_dir is None:
        return None, "the configured OCR model directory holds no model (config.json missing)"
    if not cuda_available():
        return None, "an OCR model is configured but this worker has no CUDA GPU"
    gate = gate or GPUMemoryGate(DEFAULT_HEADROOM_BYTES, cuda_memory_probe())
    # Raises GPUMemoryUnavailable (retriable) when the memory is not free now.
    gate.check(OCR_MODEL_BYTES, what=f"load the OCR model ({OCR_MODEL_BYTES // MIB} MiB)")
    try:
        return DocstrangeOcr(model_dir), ""
    except WorkerError:
        raise
    except Exception as exc:
        _release_cuda_cache()
        if is_cuda_oom(exc):
            raise GPUOutOfMemory(
                "CUDA out of memory loading the OCR model; the job's memory plan is too small",
                detail=repr(exc),
            ) from exc
        log.exception("loading the OCR model from %s failed", model_dir)
        raise OcrModelUnavailable(
            "the OCR model failed to load (see the worker log); it is tried again on the "
            "next document that needs OCR",
            detail=repr(exc),
        ) from exc
