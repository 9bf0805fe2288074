"""The DCGM stand-in's node label styles (what real dcgm-exporter setups emit)."""

from __future__ import annotations

import pytest
from zopilot_dev.dcgm import Exporter, exporter_pod_name
from zopilot_dev.nodes import SimulatedGPU

GPUS = [SimulatedGPU("gpu-4090-0", 0, "GPU-a"), SimulatedGPU("gpu-4090-1", 0, "GPU-b")]


def free_lines(exporter: Exporter) -> list[str]:
    return [
        line
        for line in exporter.exposition().splitlines()
        if line.startswith("DCGM_FI_DEV_FB_FREE{")
    ]


def test_node_style_is_the_default_and_names_the_node() -> None:
    lines = free_lines(Exporter(GPUS))
    assert len(lines) == 2 and 'Hostname="gpu-4090-0"' in lines[0]


def test_pod_style_names_the_exporter_pod_and_reset_restores_the_start_style() -> None:
    exporter = Exporter(GPUS)
    assert exporter.set_label_style("pod")["pods"] == {
        "gpu-4090-0": exporter_pod_name("gpu-4090-0"),
        "gpu-4090-1": exporter_pod_name("gpu-4090-1"),
    }
    lines = free_lines(exporter)
    assert f'Hostname="{exporter_pod_name("gpu-4090-0")}"' in lines[0]
    assert "gpu-4090" not in "".join(lines)
    assert exporter_pod_name("gpu-4090-0") != exporter_pod_name("gpu-4090-1")
    exporter.clear()
    assert 'Hostname="gpu-4090-0"' in free_lines(exporter)[0]


def test_hostname_style_uses_the_lowercase_label() -> None:
    lines = free_lines(Exporter(GPUS, "hostname"))
    assert 'hostname="gpu-4090-1"' in lines[1] and "Hostname" not in lines[1]


def test_unknown_style_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="node, hostname, pod"):
        Exporter(GPUS, "nodename")
    with pytest.raises(ValueError, match="node, hostname, pod"):
        Exporter(GPUS).set_label_style("")
