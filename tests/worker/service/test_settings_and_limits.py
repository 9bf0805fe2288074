"""Settings from the environment, the hub pinned offline, and the limiter's bookkeeping."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from zopilot_common.spec import Quantization
from zopilot_worker.errors import Overloaded
from zopilot_worker.metrics import WorkerMetrics
from zopilot_worker.service.limits import EndpointLimiter
from zopilot_worker.settings import WorkerSettings


def test_defaults_match_the_documented_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ZOPILOT_WORKER_"):
            monkeypatch.delenv(name)
    settings = WorkerSettings()
    assert settings.extract_concurrency == 4
    assert settings.classify_concurrency == 1
    assert settings.max_upload_bytes == 50 * 1024 * 1024
    assert settings.classify_model == "mixtral-8x7b-instruct"
    assert settings.model_root == Path("/models")
    assert settings.termination_log == Path("/dev/termination-log")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOPILOT_WORKER_EXTRACT_CONCURRENCY", "2")
    monkeypatch.setenv("ZOPILOT_WORKER_QUANTIZATION", "int8")
    monkeypatch.setenv("ZOPILOT_WORKER_MODEL_ROOT", "/mnt/models")
    monkeypatch.setenv("ZOPILOT_WORKER_LOAD_MODEL_ON_START", "false")
    settings = WorkerSettings()
    assert settings.extract_concurrency == 2
    assert settings.quantization is Quantization.INT8
    assert settings.model_root == Path("/mnt/models")
    assert settings.load_model_on_start is False


def test_invalid_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOPILOT_WORKER_EXTRACT_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="extract_concurrency"):
        WorkerSettings()


def test_hub_is_offline() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


async def test_limiter_admits_concurrency_plus_queue_then_refuses() -> None:
    metrics = WorkerMetrics()
    limiter = EndpointLimiter("/x", concurrency=2, queue_size=1, retry_after_s=3, metrics=metrics)
    release = asyncio.Event()
    admitted: asyncio.Queue[None] = asyncio.Queue()
    started: asyncio.Queue[None] = asyncio.Queue()
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with limiter.admit():
            admitted.put_nowait(None)
            async with limiter.slot():
                started.put_nowait(None)
                peak = max(peak, limiter.running)
                await release.wait()

    tasks = [asyncio.create_task(request()) for _ in range(3)]
    for _ in range(3):
        await admitted.get()
    for _ in range(2):
        await started.get()
    assert (limiter.running, limiter.waiting) == (2, 1)
    with pytest.raises(Overloaded) as refused:
        async with limiter.admit():
            pass
    assert refused.value.retry_after_s == 3
    assert (
        metrics.registry.get_sample_value(
            "zopilot_worker_rejected_requests_total", {"endpoint": "/x", "reason": "overloaded"}
        )
        == 1
    )
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2
    assert (limiter.running, limiter.waiting) == (0, 0)
    assert metrics.registry.get_sample_value("zopilot_worker_queue_depth", {"endpoint": "/x"}) == 0


async def test_limiter_runs_blocking_work_in_threads() -> None:
    import threading

    limiter = EndpointLimiter(
        "/y", concurrency=1, queue_size=0, retry_after_s=1, metrics=WorkerMetrics()
    )
    main = threading.get_ident()
    async with limiter.admit():
        worker = await limiter.run(threading.get_ident)
    assert worker != main
