"""Prometheus metrics of the worker: every metric name is defined here, once.

``WorkerMetrics`` registers its metrics in the ``CollectorRegistry`` it is
given (the prometheus/client_python pattern), so every app instance and every
test gets a fresh registry and no global state is shared. Names follow
Prometheus conventions: base units, ``_seconds``, ``_bytes``, counters ``_total``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PREFIX = "zopilot_worker"

# Request latencies span 1 ms (/health) to minutes (a cold classification):
# the RunPod baseline was 10-30 s warm, 60-180 s cold.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)

# Every label value below comes from a closed set, so the number of series is
# bounded whatever clients send. HTTP methods: the ones the API and browsers
# use; anything else (a client may send any token as a method) is OTHER.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
# Classification labels are user text. The first this many distinct labels a
# process sees keep their name (a deployment classifies into a fixed label set,
# typically a dozen); every later one is counted as OTHER_LABEL, and no label
# value is longer than MAX_LABEL_VALUE_CHARS.
MAX_CLASSIFICATION_LABELS = 100
MAX_LABEL_VALUE_CHARS = 64
OTHER_LABEL = "_other"


def method_label(method: str) -> str:
    """The request method as a bounded label value."""
    return method if method in HTTP_METHODS else OTHER_METHOD


class CappedLabels:
    """Maps user-supplied values to at most ``limit`` distinct label values (+ ``other``)."""

    def __init__(self, limit: int, *, other: str = OTHER_LABEL) -> None:
        self.limit = limit
        self.other = other
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value[:MAX_LABEL_VALUE_CHARS]
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return self.other


class ClassificationCounter:
    """``zopilot_worker_classifications_total{model, label}`` with the label value capped.

    Same ``labels(...)`` call as a prometheus Counter, so callers count as usual;
    the chosen label goes through :class:`CappedLabels` first.
    """

    def __init__(self, registry: CollectorRegistry, *, limit: int) -> None:
        self.counter = Counter(
            f"{PREFIX}_classifications_total",
            "Classifications, by model and chosen label (the first "
            f"{limit} distinct labels by name, later ones as {OTHER_LABEL}).",
            ["model", "label"],
            registry=registry,
        )
        self.cap = CappedLabels(limit)

    def labels(self, *, model: str, label: str) -> Any:
        return self.counter.labels(model=model, label=self.cap(label))


class GPUMemoryCollector(Collector):
    """GPU memory gauges per CUDA device, collected at scrape time.

    Yields nothing when CUDA is absent, so a CPU-only worker exposes no
    misleading zeros. ``probe`` is injectable for tests: it returns, per device
    index, ``(allocated, reserved, free, total)`` in bytes.
    """

    def __init__(self, probe: Callable[[], dict[int, tuple[int, int, int, int]]] | None = None):
        self._probe = probe or _torch_gpu_memory

    def collect(self) -> Iterable[Metric]:
        try:
            devices = self._probe()
        except Exception:  # a scrape must never fail because of the GPU probe
            log.debug("GPU memory probe failed", exc_info=True)
            return []
        if not devices:
            return []
        names = {
            "allocated": "Bytes held by live tensors of this process (torch allocator).",
            "reserved": "Bytes reserved by this process's torch caching allocator.",
            "free": "Free bytes on the device, all processes considered (cudaMemGetInfo).",
            "total": "Total bytes of the device.",
        }
        families = {
            key: GaugeMetricFamily(f"{PREFIX}_gpu_memory_{key}_bytes", doc, labels=["device"])
            for key, doc in names.items()
        }
        for index, (allocated, reserved, free, total) in sorted(devices.items()):
            label = [str(index)]
            families["allocated"].add_metric(label, allocated)
            families["reserved"].add_metric(label, reserved)
            families["free"].add_metric(label, free)
            families["total"].add_metric(label, total)
        return list(families.values())


def _torch_gpu_memory() -> dict[int, tuple[int, int, int, int]]:
    # Never import torch just to scrape: if nothing imported it, no model runs here.
    torch: Any = sys.modules.get("torch")
    # While another thread is still importing torch (the model loading), the module
    # is already in sys.modules, only partly initialised: no torch.cuda yet.
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not hasattr(cuda, "is_available") or not cuda.is_available():
        return {}
    result = {}
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        result[index] = (
            int(torch.cuda.memory_allocated(index)),
            int(torch.cuda.memory_reserved(index)),
            int(free),
            int(total),
        )
    return result


class WorkerMetrics:
    """All metrics of one worker process (service or job runner), in one registry."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        gpu_probe: Callable[[], dict[int, tuple[int, int, int, int]]] | None = None,
        max_classification_labels: int = MAX_CLASSIFICATION_LABELS,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "HTTP request latency by endpoint (route template, or `unmatched`), method "
            "(one of HTTP_METHODS, else OTHER) and status code.",
            ["endpoint", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight",
            "Requests of the endpoint running in a worker slot now.",
            ["endpoint"],
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth",
            "Requests of the endpoint admitted and waiting for a slot now.",
            ["endpoint"],
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected_requests_total",
            "Requests refused before any work: overloaded (queue full) or GPU memory busy.",
            ["endpoint", "reason"],
            registry=r,
        )
        self.documents = Counter(
            f"{PREFIX}_documents_total",
            "Documents processed, by detected kind and outcome (ok or the error code).",
            ["kind", "outcome"],
            registry=r,
        )
        self.pages = Counter(
            f"{PREFIX}_pages_total",
            "Pages extracted, by how: text layer, OCR, or left pending OCR.",
            ["method"],
            registry=r,
        )
        self.classifications = ClassificationCounter(r, limit=max_classification_labels)
        self.model_load_seconds = Gauge(
            f"{PREFIX}_model_load_seconds",
            "Seconds the last load of the model took (cold start).",
            ["model"],
            registry=r,
        )
        self.model_loaded = Gauge(
            f"{PREFIX}_model_loaded",
            "1 while the model is loaded in this process.",
            ["model"],
            registry=r,
        )
        self.ready = Gauge(f"{PREFIX}_ready", "1 when /ready answers 200.", registry=r)
        self.job_documents = Gauge(
            f"{PREFIX}_job_documents",
            "run-job: documents of the job, by state (total, done, failed).",
            ["state"],
            registry=r,
        )
        r.register(GPUMemoryCollector(gpu_probe))

    def record_document(self, kind: str, outcome: str, pages_by_method: dict[str, int]) -> None:
        self.documents.labels(kind=kind, outcome=outcome).inc()
        for method, count in pages_by_method.items():
            if count:
                self.pages.labels(method=method).inc(count)
