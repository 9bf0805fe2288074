"""Fixtures for the worker service tests: settings, a real uvicorn server, the tiny model.

``serve_app`` runs the real app under uvicorn on 127.0.0.1 (a free port bound
before start) in a thread and waits until it answers /health; ``wait_until``
polls a condition instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from zopilot_worker.service import BackgroundServer
from zopilot_worker.settings import WorkerSettings

WaitUntil = Callable[..., Any]


def _wait_until(
    condition: Callable[[], Any],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.02,
    what: str = "",
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what or condition}")
        time.sleep(interval_s)


@pytest.fixture
def wait_until() -> WaitUntil:
    return _wait_until


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., WorkerSettings]:
    """Settings for tests: tiny model on CPU, no doctor, lazy model, small limits."""

    def make(**overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = {
            "model_root": tmp_path / "no-models",
            "classify_model": "tiny-mixtral",
            "quantization": "none",
            "device": "cpu",
            "load_model_on_start": False,
            "run_doctor_on_start": False,
            "retry_after_s": 7,
        }
        values.update(overrides)
        return WorkerSettings(**values)

    return make


@contextmanager
def _serve(app: FastAPI) -> Iterator[httpx.Client]:
    server = BackgroundServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            _wait_until(lambda: client.get("/health").status_code == 200, what="/health")
            yield client
    finally:
        server.stop()


@pytest.fixture
def serve_app() -> Callable[[FastAPI], Any]:
    """``with serve_app(app) as client:`` runs ``app`` under uvicorn for the block."""
    return _serve
