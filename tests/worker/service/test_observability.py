"""/metrics names and isolation, X-Request-ID, and errors that must not leak internals."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from zopilot_worker.metrics import GPUMemoryCollector, WorkerMetrics
from zopilot_worker.pipeline import create_engine
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings
from zopilot_worker.testing.documents import make_text_pdf

EXPECTED_METRICS = {
    "zopilot_worker_request_duration_seconds",
    "zopilot_worker_requests_in_flight",
    "zopilot_worker_queue_depth",
    "zopilot_worker_rejected_requests",
    "zopilot_worker_documents",
    "zopilot_worker_pages",
    "zopilot_worker_classifications",
    "zopilot_worker_model_load_seconds",
    "zopilot_worker_model_loaded",
    "zopilot_worker_ready",
}


def test_metrics_exposes_the_documented_names(
    make_settings: Callable[..., WorkerSettings], serve_app: Any
) -> None:
    app = create_app(make_settings(), doctor=None)
    with serve_app(app) as client:
        pdf = make_text_pdf(["Invoice 1: amount due 10 EUR", "Page two of the invoice."])
        ok = client.post("/extract", files={"file": ("i.pdf", pdf, "application/pdf")})
        assert ok.status_code == 200
        client.post("/extract", files={"file": ("x.pdf", b"%PDF-1.4 junk", "application/pdf")})
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert set(families) >= EXPECTED_METRICS
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("zopilot_worker_documents_total", (("kind", "pdf"), ("outcome", "ok")))] == 1
    assert (
        samples[
            (
                "zopilot_worker_documents_total",
                (("kind", "unknown"), ("outcome", "corrupt_document")),
            )
        ]
        == 1
    )
    assert samples[("zopilot_worker_pages_total", (("method", "text_layer"),))] == 2
    latency = (
        "zopilot_worker_request_duration_seconds_count",
        (("endpoint", "/extract"), ("method", "POST"), ("status", "200")),
    )
    assert samples[latency] == 1
    # No CUDA here: no GPU gauges rather than misleading zeros.
    assert not any(name.startswith("zopilot_worker_gpu_memory") for name in families)


def test_each_app_has_its_own_registry(make_settings: Callable[..., WorkerSettings]) -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.documents.labels(kind="pdf", outcome="ok").inc()
    assert (
        second.registry.get_sample_value(
            "zopilot_worker_documents_total", {"kind": "pdf", "outcome": "ok"}
        )
        is None
    )
    settings = make_settings()
    # Two apps in one process must not collide on metric names.
    create_app(settings, doctor=None)
    create_app(settings, doctor=None)


def test_gpu_gauges_appear_when_a_device_exists() -> None:
    registry = CollectorRegistry()
    registry.register(GPUMemoryCollector(lambda: {0: (1 << 30, 2 << 30, 20 << 30, 24 << 30)}))
    assert (
        registry.get_sample_value("zopilot_worker_gpu_memory_free_bytes", {"device": "0"})
        == 20 << 30
    )
    assert (
        registry.get_sample_value("zopilot_worker_gpu_memory_reserved_bytes", {"device": "0"})
        == 2 << 30
    )


def test_a_scrape_while_torch_is_still_importing_shows_no_gpu_and_does_not_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen in a real container: /metrics scraped while the model loader's thread was
    importing torch (in sys.modules, no torch.cuda yet) answered 500."""
    import types

    from prometheus_client import generate_latest

    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    registry = CollectorRegistry()
    registry.register(GPUMemoryCollector())
    assert b"gpu_memory" not in generate_latest(registry)

    def broken() -> dict[int, tuple[int, int, int, int]]:
        raise RuntimeError("CUDA driver initialization failed")

    registry = CollectorRegistry()
    registry.register(GPUMemoryCollector(broken))
    assert b"gpu_memory" not in generate_latest(registry)


def test_request_id_is_echoed_or_made(
    make_settings: Callable[..., WorkerSettings], serve_app: Any
) -> None:
    with serve_app(create_app(make_settings(), doctor=None)) as client:
        given = client.get("/health", headers={"x-request-id": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        made = client.get("/health")
        assert len(made.headers["x-request-id"]) == 32
        hostile = client.get("/health", headers={"x-request-id": "a b\tc"})
        assert hostile.headers["x-request-id"] != "a b\tc"
        error = client.post("/extract", json={}, headers={"x-request-id": "req-9"})
        assert error.json()["request_id"] == "req-9"


class ExplodingEngine:
    """A broken engine: raises an unexpected exception carrying internals."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.inner = create_engine(settings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def extract(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret: /var/lib/models/token=hunter2")


def test_unexpected_error_is_a_generic_500_logged_with_the_request_id(
    make_settings: Callable[..., WorkerSettings],
    serve_app: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    app = create_app(settings, engine=ExplodingEngine(settings), doctor=None)
    with serve_app(app) as client:
        response = client.post(
            "/extract",
            files={"file": ("a.txt", b"hello", "text/plain")},
            headers={"x-request-id": "boom-1"},
        )
        assert client.get("/health").status_code == 200
    assert response.status_code == 500
    body = response.json()
    assert body == {
        "error": {"code": "internal_error", "message": body["error"]["message"]},
        "request_id": "boom-1",
    }
    assert "hunter2" not in response.text and "secret" not in response.text
    assert any("boom-1" in r.getMessage() and r.exc_info for r in caplog.records)
