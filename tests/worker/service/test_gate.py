"""The GPU-memory gate: unit tests with an injected probe, and through the engine and HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from zopilot_common.catalog import get_model
from zopilot_common.planner import PROMPT_OVERHEAD_TOKENS, plan_memory
from zopilot_common.spec import Quantization
from zopilot_worker.errors import GPUMemoryUnavailable
from zopilot_worker.gate import GPUMemoryGate
from zopilot_worker.pipeline import DocumentEngine
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings

MIB = 1024 * 1024
GIB = 1024 * MIB


@pytest.mark.parametrize(
    ("free", "required", "headroom", "allowed"),
    [
        (10 * GIB, 9 * GIB, 512 * MIB, True),
        (10 * GIB, 10 * GIB - 512 * MIB, 512 * MIB, True),  # exactly enough
        (10 * GIB, 10 * GIB - 512 * MIB + 1, 512 * MIB, False),
        (1 * GIB, 2 * GIB, 0, False),
    ],
)
def test_gate_compares_free_memory_with_need_plus_headroom(
    free: int, required: int, headroom: int, allowed: bool
) -> None:
    gate = GPUMemoryGate(headroom, probe=lambda: (free, 24 * GIB))
    if allowed:
        assert gate.check(required, what="load x").allowed
    else:
        with pytest.raises(GPUMemoryUnavailable) as refused:
            gate.check(required, what="load x")
        assert refused.value.retriable and refused.value.http_status == 503
        assert f"{-(-free // MIB)} MiB free" in refused.value.public_message


def test_gate_without_cuda_is_a_no_op() -> None:
    gate = GPUMemoryGate(512 * MIB, probe=lambda: None)
    decision = gate.check(10**15, what="load a planet-sized model")
    assert decision.allowed and not decision.enabled


def test_gate_rejects_negative_headroom() -> None:
    with pytest.raises(ValueError):
        GPUMemoryGate(-1, probe=lambda: None)


def test_engine_load_goes_through_the_gate_with_the_planner_estimate(
    make_settings: Callable[..., WorkerSettings], model_root: Path
) -> None:
    settings = make_settings(model_root=model_root)
    seen: list[int] = []

    def probe() -> tuple[int, int]:
        return 64 * MIB, 24 * GIB

    class RecordingGate(GPUMemoryGate):
        def check(self, required_bytes: int, *, what: str) -> Any:
            seen.append(required_bytes)
            return super().check(required_bytes, what=what)

    engine = DocumentEngine(settings, gate=RecordingGate(settings.gpu_memory_headroom_bytes, probe))
    with pytest.raises(GPUMemoryUnavailable, match="tiny-mixtral"):
        engine.load_models()
    assert not engine.classifier_loaded
    expected = plan_memory(
        get_model("tiny-mixtral"),
        Quantization.NONE,
        context_tokens=settings.max_input_tokens + PROMPT_OVERHEAD_TOKENS,
    )
    assert seen == [expected.total_bytes]


def test_classify_answers_503_with_retry_after_when_the_gate_refuses(
    make_settings: Callable[..., WorkerSettings], model_root: Path, serve_app: Any
) -> None:
    settings = make_settings(model_root=model_root)
    engine = DocumentEngine(settings, gate=GPUMemoryGate(0, probe=lambda: (1 * MIB, 24 * GIB)))
    with serve_app(create_app(settings, engine=engine, doctor=None)) as client:
        response = client.post("/classify", json={"text": "x", "labels": ["a", "b"]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "gpu_memory_unavailable"
