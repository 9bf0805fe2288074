"""The document engine: the one object the HTTP routes and the job runner call.

``Engine`` is the interface (docling-serve's pattern: routes depend on an
engine picked by a factory, so tests can wrap it); ``DocumentEngine`` is the
implementation over the docstrange-based ``Extractor`` and the Mixtral-family
``Classifier``. The classifier is loaded eagerly by :meth:`Engine.load_models`
(the service's lifespan, the job runner's start) or lazily on first use, in
both cases through the GPU-memory gate.

Documents are parsed in a pool of child processes (``extract/isolation.py``):
each one under a wall-clock and an address-space limit, so a parser that
stalls or crashes on hostile input ends only its child and the caller gets a
``WorkerError`` (parsing_timeout, parsing_memory_exceeded, parser_crashed).
The children start with :meth:`load_models` (in the background) or on the
first document, never with the engine itself. OCR and the
classifier stay in this process, next to the GPU.

The extractor and classifier modules (and with them docstrange, torch and
transformers) are imported lazily: that keeps ``/health`` up within a second
of process start and guarantees ``zopilot_worker.settings`` has pinned the
hub offline before transformers is imported.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from zopilot_common.catalog import ModelSpec, get_model
from zopilot_common.planner import PROMPT_OVERHEAD_TOKENS, plan_memory
from zopilot_common.spec import Quantization

from zopilot_worker.errors import ModelNotFound, WorkerError
from zopilot_worker.gate import GPUMemoryGate, MemoryProbe, cuda_memory_probe
from zopilot_worker.metrics import WorkerMetrics
from zopilot_worker.settings import WorkerSettings

if TYPE_CHECKING:
    from zopilot_worker.classify import Classification, Classifier
    from zopilot_worker.extract import ExtractedDocument, Extractor
    from zopilot_worker.extract.isolation import ParsingPool

log = logging.getLogger(__name__)

OcrMode = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class ClassifiedDocument:
    document: ExtractedDocument
    classification: Classification


class Engine(Protocol):
    """What routes and the job runner need. Every method is blocking and thread-safe."""

    @property
    def model_name(self) -> str: ...

    @property
    def classifier_loaded(self) -> bool: ...

    def load_models(self) -> None:
        """Load the classifier now (idempotent). Raises WorkerError subclasses."""

    def extract(
        self, data: bytes, filename: str, content_type: str | None = None, *, ocr: OcrMode = "auto"
    ) -> ExtractedDocument: ...

    def classify_text(
        self, text: str, labels: list[str], *, max_input_tokens: int | None = None
    ) -> Classification: ...

    def classify_document(
        self,
        data: bytes,
        filename: str,
        content_type: str | None,
        labels: list[str],
        *,
        ocr: OcrMode = "auto",
        max_input_tokens: int | None = None,
    ) -> ClassifiedDocument: ...

    def close(self) -> None: ...


class DocumentEngine:
    """Extractor + one classification model, behind the GPU-memory gate."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        metrics: WorkerMetrics | None = None,
        model_name: str | None = None,
        quantization: Quantization | None = None,
        gate: GPUMemoryGate | None = None,
        parsing_pool: ParsingPool | None = None,
    ) -> None:
        """``parsing_pool`` replaces the pool built from ``settings`` (tests inject faults)."""
        from zopilot_worker.extract import Extractor, ExtractSettings
        from zopilot_worker.extract.isolation import ParsingPool, PoolLimits, default_processes

        self._settings = settings
        self._metrics = metrics
        # Raises UnknownModelError (a configuration error) right here, at startup.
        self._model: ModelSpec = get_model(model_name or settings.classify_model)
        self._quantization = Quantization(quantization or settings.quantization)
        self._gate = gate or GPUMemoryGate(
            settings.gpu_memory_headroom_bytes, _process_available_probe()
        )
        extract_settings = ExtractSettings(
            max_bytes=settings.max_upload_bytes,
            max_pages=settings.max_pages,
            ocr_model_dir=settings.ocr_model_dir,
        )
        # In this process the extractor only loads and runs OCR for the parsing children.
        self._extractor: Extractor = Extractor(extract_settings)
        self._pool: ParsingPool = parsing_pool or ParsingPool(
            extract_settings,
            PoolLimits(
                processes=settings.parse_processes or default_processes(),
                timeout_s=settings.parse_timeout_s,
                memory_limit_mib=settings.parse_memory_limit_mib,
            ),
            ocr_loader=self._extractor.load_ocr,
        )
        self._classifier: Classifier | None = None
        self._parsers_warming = False
        # Loading takes a minute for Mixtral: one loader, everyone else waits for it.
        self._load_lock = threading.Lock()
        # The Classifier is not thread-safe (one model, one forward pass at a time);
        # the service's limiter runs 1 classification by default, this makes any setting safe.
        self._run_lock = threading.Lock()

    @property
    def model_name(self) -> str:
        name: str = self._model.name
        return name

    @property
    def model_dir(self) -> Path:
        local_dir: str = self._model.local_dir
        return self._settings.model_root / local_dir

    @property
    def classifier_loaded(self) -> bool:
        return self._classifier is not None

    def load_models(self) -> None:
        self._warm_parsers()
        self._ensure_classifier()

    def _warm_parsers(self) -> None:
        """Start the parsing children in the background (once), so the first document
        does not wait for them; /health and the model load never do."""
        with self._load_lock:
            if self._parsers_warming:
                return
            self._parsers_warming = True

        def warm() -> None:
            try:
                self._pool.warm()
            except Exception:  # the first document will try again
                log.warning("starting the parsing processes failed", exc_info=True)

        threading.Thread(target=warm, name="zopilot-parsers-warm", daemon=True).start()

    def _ensure_classifier(self) -> Classifier:
        classifier = self._classifier
        if classifier is not None:
            return classifier
        with self._load_lock:
            if self._classifier is None:
                self._classifier = self._load_classifier()
            return self._classifier

    def _load_classifier(self) -> Classifier:
        if not (self.model_dir / "config.json").is_file():
            raise ModelNotFound(
                f"model {self._model.name!r} is not on the model volume: expected its files "
                f"in {self._model.local_dir}/ under the model root",
                detail=f"missing {self.model_dir / 'config.json'}",
            )
        plan = plan_memory(
            self._model,
            self._quantization,
            context_tokens=self._settings.max_input_tokens + PROMPT_OVERHEAD_TOKENS,
        )
        # Load only when the whole plan fits: weights that load but cannot run help nobody.
        self._gate.check(plan.total_bytes, what=f"load {plan.explain()}")
        from zopilot_worker.classify import Classifier

        started = time.perf_counter()
        classifier = Classifier.load(
            self.model_dir,
            name=self._model.name,
            quantization=self._quantization,
            device=self._settings.device,
        )
        elapsed = time.perf_counter() - started
        log.info("loaded %s (%s) in %.1f s", self._model.name, self._quantization.value, elapsed)
        if self._metrics is not None:
            self._metrics.model_load_seconds.labels(model=self._model.name).set(elapsed)
            self._metrics.model_loaded.labels(model=self._model.name).set(1)
        return classifier

    def extract(
        self, data: bytes, filename: str, content_type: str | None = None, *, ocr: OcrMode = "auto"
    ) -> ExtractedDocument:
        try:
            document = self._pool.extract(data, filename, content_type, ocr=ocr)
        except WorkerError as exc:
            if self._metrics is not None:
                self._metrics.record_document("unknown", exc.code, {})
            raise
        if self._metrics is not None:
            ocr_done, pending = len(document.ocr_pages), len(document.ocr_pending)
            self._metrics.record_document(
                document.kind,
                "ok",
                {
                    "text_layer": max(0, document.pages - ocr_done - pending),
                    "ocr": ocr_done,
                    "ocr_pending": pending,
                },
            )
        return document

    def classify_text(
        self, text: str, labels: list[str], *, max_input_tokens: int | None = None
    ) -> Classification:
        classifier = self._ensure_classifier()
        tokens = max_input_tokens or self._settings.max_input_tokens
        run_plan = plan_memory(
            self._model, self._quantization, context_tokens=tokens + PROMPT_OVERHEAD_TOKENS
        )
        with self._run_lock:
            # The weights are resident: a forward pass needs its KV cache, activations
            # and the packed label pass. Checked under the lock, so two passes cannot
            # both count the same free memory.
            self._gate.check(
                run_plan.kv_cache_bytes + run_plan.activation_bytes + run_plan.label_scoring_bytes,
                what=f"classify with {self._model.name} ({tokens} input tokens)",
            )
            result = classifier.classify(text, labels, max_input_tokens=tokens)
        if self._metrics is not None:
            self._metrics.classifications.labels(model=result.model, label=result.label).inc()
        return result

    def classify_document(
        self,
        data: bytes,
        filename: str,
        content_type: str | None,
        labels: list[str],
        *,
        ocr: OcrMode = "auto",
        max_input_tokens: int | None = None,
    ) -> ClassifiedDocument:
        document = self.extract(data, filename, content_type, ocr=ocr)
        classification = self.classify_text(
            document.text, labels, max_input_tokens=max_input_tokens
        )
        return ClassifiedDocument(document, classification)

    def close(self) -> None:
        # Stop the parsing children; drop the model so its GPU memory goes back before exit.
        self._pool.close()
        self._classifier = None
        if self._metrics is not None:
            self._metrics.model_loaded.labels(model=self._model.name).set(0)


def create_engine(
    settings: WorkerSettings,
    *,
    metrics: WorkerMetrics | None = None,
    model_name: str | None = None,
    quantization: Quantization | None = None,
) -> Engine:
    """The engine factory used by ``serve`` and ``run-job``."""
    return DocumentEngine(
        settings, metrics=metrics, model_name=model_name, quantization=quantization
    )


def _process_available_probe() -> MemoryProbe:
    """Free device memory plus what this process's caching allocator holds unused.

    After the model is loaded, torch keeps freed blocks reserved; cudaMemGetInfo
    counts them as used, but our own next forward pass can reuse them.
    """
    device_probe = cuda_memory_probe()

    def probe() -> tuple[int, int] | None:
        seen = device_probe()
        if seen is None:
            return None
        import torch

        cached = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        return seen[0] + max(0, int(cached)), seen[1]

    return probe
