"""Operator settings: defaults, environment, validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from zopilot_operator.settings import OperatorSettings


def test_defaults() -> None:
    s = OperatorSettings()
    assert (s.prometheus_url, s.metrics_max_age_s, s.safety_margin_mib, s.fail_open) == (
        "http://prometheus:9090",
        90.0,
        1024,
        False,
    )
    assert (s.gpu_product, s.price_per_gpu_second_usd, s.model_mount_path) == (
        "NVIDIA GeForce RTX 4090",
        0.00031,
        "/models",
    )


def test_every_field_is_documented() -> None:
    undocumented = [n for n, f in OperatorSettings.model_fields.items() if not f.description]
    assert undocumented == []


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOPILOT_OPERATOR_FAIL_OPEN", "true")
    monkeypatch.setenv("ZOPILOT_OPERATOR_SAFETY_MARGIN_MIB", "2048")
    monkeypatch.setenv("ZOPILOT_OPERATOR_WORKER_TOLERATED_TAINTS", '["kwok.x-k8s.io/node"]')
    s = OperatorSettings()
    assert (s.fail_open, s.safety_margin_mib, s.worker_tolerated_taints) == (
        True,
        2048,
        ["kwok.x-k8s.io/node"],
    )


@pytest.mark.parametrize(
    "field",
    [
        {"oom_memory_growth_factor": 1.0},
        {"metrics_max_age_s": 0},
        {"safety_margin_mib": -1},
        {"worker_namespace_policy": "operator"},
    ],
)
def test_invalid_values_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OperatorSettings(**field)  # type: ignore[arg-type]
