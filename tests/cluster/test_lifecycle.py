"""`up` is idempotent and `down` leaves no process behind (a throwaway cluster of its own)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.config import ClusterConfig

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _processes_mentioning(path: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(path) in line and "ps -eo" not in line]


def test_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    cfg = ClusterConfig(
        name="zopilot-lifecycle", state_dir=tmp_path / "c", gpu_nodes=1, cpu_nodes=1
    )
    c = LocalCluster(cfg)
    try:
        first = c.up()
        pids = dict(first.pids)
        assert {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok-controller",
            "prometheus",
            "dcgm-exporter",
        } <= set(pids)
        again = LocalCluster(cfg).up()  # a second `up` from a new process view
        assert again.pids == pids, "a second up must reuse the running cluster"
        # Everything binds to loopback.
        assert again.apiserver_url.startswith("https://127.0.0.1:")
        assert again.prometheus_url.startswith("http://127.0.0.1:")
        assert _processes_mentioning(cfg.state_dir)
    finally:
        LocalCluster(cfg).down()
    assert _processes_mentioning(cfg.state_dir) == []
    assert (cfg.state_dir / "last-logs" / "kube-apiserver.log").exists()
