"""On a CUDA machine: the gate reads real free memory, GPU gauges appear, /classify runs in NF4."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from zopilot_worker.gate import GPUMemoryGate, cuda_memory_probe
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings

pytestmark = pytest.mark.gpu


def test_gate_sees_the_device() -> None:
    decision = GPUMemoryGate(0, cuda_memory_probe()).decide(0)
    assert decision.enabled
    assert decision.total_bytes and 0 < (decision.free_bytes or 0) <= decision.total_bytes


def test_classify_nf4_on_gpu_with_gpu_metrics(
    make_settings: Callable[..., WorkerSettings], model_root: Path, serve_app: Any
) -> None:
    settings = make_settings(
        model_root=model_root, quantization="nf4", device="cuda", load_model_on_start=True
    )
    with serve_app(create_app(settings, doctor=None)) as client:
        response = client.post(
            "/classify", json={"text": "Invoice INV-1, due 10 EUR", "labels": ["invoice", "other"]}
        )
        metrics = client.get("/metrics").text
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] in ("invoice", "other")
    assert math.isclose(sum(body["scores"].values()), 1.0, abs_tol=1e-5)
    for name in ("allocated", "reserved", "free", "total"):
        assert f'zopilot_worker_gpu_memory_{name}_bytes{{device="0"}}' in metrics
    assert 'zopilot_worker_model_loaded{model="tiny-mixtral"} 1.0' in metrics
