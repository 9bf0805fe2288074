"""The real Prometheus scrapes the DCGM stand-in: a series per simulated GPU, values a test sets."""

from __future__ import annotations

import pytest
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.config import RTX_4090_MEMORY_MIB
from zopilot_dev.procs import wait_for

pytestmark = pytest.mark.cluster


def _free_by_host(cluster: LocalCluster) -> dict[str, float]:
    return {
        s["metric"]["Hostname"]: float(s["value"][1]) for s in cluster.query("DCGM_FI_DEV_FB_FREE")
    }


def test_one_free_memory_series_per_simulated_gpu(cluster: LocalCluster) -> None:
    series = cluster.query('DCGM_FI_DEV_FB_FREE{modelName="NVIDIA GeForce RTX 4090"}')
    gpus = cluster.state.gpus
    assert len(series) == len(gpus)
    assert {s["metric"]["UUID"] for s in series} == {g["uuid"] for g in gpus}
    for s in series:
        assert {"gpu", "UUID", "device", "modelName", "Hostname"} <= set(s["metric"])


def test_prometheus_returns_the_value_a_test_set(cluster: LocalCluster) -> None:
    node = cluster.state.gpus[0]["node"]
    try:
        cluster.set_gpu(node, free_mib=9318)
        assert wait_for(lambda: _free_by_host(cluster).get(node) == 9318, timeout_s=20)
        used = cluster.query(f'DCGM_FI_DEV_FB_USED{{Hostname="{node}"}}')[0]["value"][1]
        reserved = cluster.query(f'DCGM_FI_DEV_FB_RESERVED{{Hostname="{node}"}}')[0]["value"][1]
        assert 9318 + float(used) + float(reserved) == RTX_4090_MEMORY_MIB
        # The other GPU is untouched.
        other = cluster.state.gpus[1]["node"]
        assert _free_by_host(cluster)[other] > 20000
    finally:
        cluster.reset_gpus()


def test_a_frozen_exporter_serves_an_aging_timestamp(cluster: LocalCluster) -> None:
    node = cluster.state.gpus[1]["node"]
    try:
        cluster.set_gpu(node, frozen=True)

        def age() -> float:
            r = cluster.query(f'time() - timestamp(DCGM_FI_DEV_FB_FREE{{Hostname="{node}"}})')
            return float(r[0]["value"][1])

        assert wait_for(lambda: age() >= 3, timeout_s=30)
    finally:
        cluster.reset_gpus()
