"""Fixtures for the operator tests against the real local control plane."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from zopilot_dev import fakeworker
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.procs import wait_for


@pytest.fixture
def namespace(crd: LocalCluster) -> Iterator[str]:
    """A fresh namespace; at the end its jobs and pods are gone, so GPUs are free again."""
    ns = f"op-{uuid.uuid4().hex[:6]}"
    crd.kubectl("create", "namespace", ns)
    yield ns
    crd.kubectl(
        "delete", "documentjobs", "--all", "-n", ns, "--wait=true", "--timeout=60s", check=False
    )
    wait_for(
        lambda: crd.kubectl("get", "pods", "-n", ns, "-o", "name").stdout.strip() == "",
        timeout_s=60,
    )
    crd.kubectl("delete", "namespace", ns, "--wait=false")
    # ... and Prometheus no longer shows their memory, so the next test starts
    # from idle GPUs rather than from a sample taken before the pods went.
    wait_for(
        lambda: all(float(s["value"][1]) == 0 for s in crd.query("DCGM_FI_DEV_FB_USED")),
        timeout_s=30,
    )


@pytest.fixture(scope="session")
def control_dir(cluster: LocalCluster) -> Path:
    # Not under /tmp: the pod runner maps a pod's /tmp (an emptyDir) elsewhere.
    d = cluster.config.state_dir / "fakeworker"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def script(control_dir: Path) -> Callable[..., Path]:
    """script(ns, job, attempts={...}, hold=...) writes the fake worker's control file."""
    import json

    def write(ns: str, job: str, **control: object) -> Path:
        files = fakeworker.paths(control_dir, ns, job)
        files["control"].write_text(json.dumps(control))
        return files["release"]

    return write
