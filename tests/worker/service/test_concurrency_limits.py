"""Per-endpoint limits against a real uvicorn server: N running, a bounded queue, then 503."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from zopilot_worker.pipeline import Engine, create_engine
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings


class SlowEngine:
    """The real engine, except that each extract/classify call waits for ``release`` first.

    It only slows the work down (results still come from the real engine), so
    the test can hold calls "running" and look at the limits while they are.
    """

    def __init__(self, inner: Engine, release: threading.Event) -> None:
        self.inner = inner
        self.release = release
        self._lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def classifier_loaded(self) -> bool:
        return self.inner.classifier_loaded

    def load_models(self) -> None:
        self.inner.load_models()

    def close(self) -> None:
        self.inner.close()

    def _held(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            assert self.release.wait(60), "test never released the held calls"
            return func(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1

    def extract(self, *args: Any, **kwargs: Any) -> Any:
        return self._held(self.inner.extract, *args, **kwargs)

    def classify_text(self, *args: Any, **kwargs: Any) -> Any:
        return self._held(self.inner.classify_text, *args, **kwargs)

    def classify_document(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.classify_document(*args, **kwargs)


def _gauges(client: httpx.Client, endpoint: str) -> tuple[float, float]:
    """(in flight, queue depth) of ``endpoint`` as /metrics reports them."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.labels.get("endpoint") == endpoint:
                values[sample.name] = sample.value
    return (
        values.get("zopilot_worker_requests_in_flight", -1),
        values.get("zopilot_worker_queue_depth", -1),
    )


def _extract(client: httpx.Client, i: int) -> httpx.Response:
    text = f"Document {i}: invoice number {1000 + i}, amount due 12.50 EUR.".encode()
    return client.post("/extract", files={"file": (f"doc-{i}.txt", text, "text/plain")})


def _classify(client: httpx.Client, i: int) -> httpx.Response:
    body = {"text": f"Invoice {i}: total due 99 EUR", "labels": ["invoice", "receipt", "contract"]}
    return client.post("/classify", json=body)


def test_extract_runs_four_queues_the_next_and_refuses_beyond(
    make_settings: Callable[..., WorkerSettings], serve_app: Any, wait_until: Any
) -> None:
    settings = make_settings(extract_concurrency=4, extract_queue_size=3)
    release = threading.Event()
    engine = SlowEngine(create_engine(settings), release)
    app = create_app(settings, engine=engine, doctor=None)
    with serve_app(app) as client, ThreadPoolExecutor(max_workers=8) as pool:
        try:
            admitted = [pool.submit(_extract, client, i) for i in range(7)]
            wait_until(lambda: engine.running == 4, what="4 extractions running")
            wait_until(
                lambda: _gauges(client, "/extract") == (4, 3), what="gauges 4 running/3 queued"
            )
            # The 8th, 9th and 10th find 4 running and 3 waiting: refused at once.
            for i in range(7, 10):
                refused = _extract(client, i)
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "7"
                assert refused.json()["error"]["code"] == "overloaded"
            assert engine.running == 4  # the refusals did not start any work
        finally:
            release.set()
        responses = [future.result(timeout=60) for future in admitted]
    assert [r.status_code for r in responses] == [200] * 7
    assert all("invoice number" in r.json()["markdown"] for r in responses)
    assert engine.max_running == 4


def test_classify_runs_one_at_a_time(
    make_settings: Callable[..., WorkerSettings],
    model_root: Path,
    serve_app: Any,
    wait_until: Any,
) -> None:
    settings = make_settings(model_root=model_root, classify_queue_size=2)
    assert settings.classify_concurrency == 1  # the default under test
    release = threading.Event()
    engine = SlowEngine(create_engine(settings), release)
    app = create_app(settings, engine=engine, doctor=None)
    with serve_app(app) as client, ThreadPoolExecutor(max_workers=4) as pool:
        try:
            admitted = [pool.submit(_classify, client, i) for i in range(3)]
            wait_until(lambda: engine.running == 1, what="1 classification running")
            wait_until(lambda: _gauges(client, "/classify") == (1, 2), what="1 running/2 queued")
            refused = _classify(client, 3)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "7"
            assert refused.json()["error"]["code"] == "overloaded"
            assert engine.running == 1
        finally:
            release.set()
        responses = [future.result(timeout=120) for future in admitted]
    assert [r.status_code for r in responses] == [200] * 3
    assert engine.max_running == 1
    for response in responses:
        assert response.json()["label"] in ("invoice", "receipt", "contract")
