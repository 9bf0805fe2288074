"""Liveness stays cheap; readiness is 503 until the doctor passed and the model is loaded."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from zopilot_worker.pipeline import Engine, create_engine
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings


class GatedLoadEngine:
    """The real engine whose ``load_models`` first waits for ``allow_load``.

    Loading the tiny model takes well under a second; the gate makes the
    "before load" window deterministic instead of a race.
    """

    def __init__(self, inner: Engine, allow_load: threading.Event) -> None:
        self.inner = inner
        self.allow_load = allow_load

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def classifier_loaded(self) -> bool:
        return self.inner.classifier_loaded

    def load_models(self) -> None:
        assert self.allow_load.wait(60)
        self.inner.load_models()


def test_ready_is_503_before_the_model_loads_and_200_after(
    make_settings: Callable[..., WorkerSettings],
    model_root: Path,
    serve_app: Any,
    wait_until: Callable[..., Any],
) -> None:
    settings = make_settings(
        model_root=model_root, load_model_on_start=True, run_doctor_on_start=True
    )
    allow_load = threading.Event()
    engine = GatedLoadEngine(create_engine(settings), allow_load)
    app = create_app(settings, engine=engine, doctor=lambda: None)
    with serve_app(app) as client:
        try:
            wait_until(
                lambda: client.get("/ready").json()["checks"]["doctor"]["state"] == "ok",
                what="doctor check done",
            )
            before = client.get("/ready")
            assert before.status_code == 503
            assert before.json()["ready"] is False
            assert before.json()["model_loaded"] is False
            assert before.json()["checks"]["model"]["state"] == "pending"
            assert client.get("/health").status_code == 200  # liveness is not readiness
        finally:
            allow_load.set()
        wait_until(lambda: client.get("/ready").status_code == 200, what="ready")
        after = client.get("/ready").json()
        assert after["ready"] is True
        assert after["model_loaded"] is True
        assert after["checks"]["model"]["state"] == "ok"
        assert "zopilot_worker_ready 1.0" in client.get("/metrics").text


def test_missing_model_keeps_ready_503_with_the_reason(
    make_settings: Callable[..., WorkerSettings],
    serve_app: Any,
    wait_until: Callable[..., Any],
) -> None:
    settings = make_settings(load_model_on_start=True)  # model_root without the model
    with serve_app(create_app(settings, doctor=None)) as client:
        wait_until(
            lambda: client.get("/ready").json()["checks"]["model"]["state"] == "failed",
            what="model check failed",
        )
        response = client.get("/ready")
        assert response.status_code == 503
        assert "tiny-mixtral" in response.json()["checks"]["model"]["message"]
        assert client.get("/health").status_code == 200


def test_doctor_failure_keeps_ready_503(
    make_settings: Callable[..., WorkerSettings],
    serve_app: Any,
    wait_until: Callable[..., Any],
) -> None:
    settings = make_settings(run_doctor_on_start=True)

    def doctor() -> str:
        return "numpy: 1.26.4 found, the worker needs NumPy 2"

    with serve_app(create_app(settings, doctor=doctor)) as client:
        wait_until(
            lambda: client.get("/ready").json()["checks"]["doctor"]["state"] == "failed",
            what="doctor failed",
        )
        body = client.get("/ready").json()
        assert body["ready"] is False
        assert "NumPy 2" in body["checks"]["doctor"]["message"]


def test_lazy_model_is_ready_without_loading(
    make_settings: Callable[..., WorkerSettings],
    serve_app: Any,
    wait_until: Callable[..., Any],
) -> None:
    settings = make_settings(load_model_on_start=False)
    with serve_app(create_app(settings, doctor=None)) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, what="ready")
        body = client.get("/ready").json()
        assert body["model_loaded"] is False
        assert body["checks"]["model"]["state"] == "skipped"


@pytest.mark.slow
def test_real_doctor_runs_isolated_at_startup(
    make_settings: Callable[..., WorkerSettings],
    serve_app: Any,
    wait_until: Callable[..., Any],
) -> None:
    """The default doctor (a child interpreter) passes in this environment: NumPy 2 stack."""
    settings = make_settings(run_doctor_on_start=True)
    with serve_app(create_app(settings)) as client:
        assert client.get("/health").status_code == 200  # served while the doctor runs
        wait_until(
            lambda: client.get("/ready").json()["checks"]["doctor"]["state"] != "pending",
            timeout_s=240,
            interval_s=0.5,
            what="doctor finished",
        )
        body = client.get("/ready").json()
        assert body["checks"]["doctor"] == {"state": "ok", "message": ""}
        assert body["ready"] is True
