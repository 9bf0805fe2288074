"""Fixtures shared by every test tier.

``cluster`` is the real local control plane (dev/cluster), one per test
session. It is reused when already up (e.g. ``dev/cluster up --state-dir
.cluster/test --name zopilot-test``) and taken down at the end only if this
session started it (set ZOPILOT_KEEP_CLUSTER=1 to keep it). When a test that
uses it fails, the tail of every component's log is attached to the report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.config import REPO_ROOT, ClusterConfig

TEST_CLUSTER = ClusterConfig(
    name="zopilot-test",
    state_dir=REPO_ROOT / ".cluster" / "test",
    gpu_nodes=2,
    gpu_replicas=4,
    cpu_nodes=1,
    scrape_interval_s=1.0,
)

_cluster: LocalCluster | None = None


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    global _cluster
    c = LocalCluster(TEST_CLUSTER)
    started = not c.healthy()
    c.up(podrunner=True)
    _cluster = c
    yield c
    _cluster = None
    if started and not os.environ.get("ZOPILOT_KEEP_CLUSTER"):
        c.down()


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> LocalCluster:
    """The cluster with the DocumentJob CRD (crds/documentjob.yaml) installed and Established."""
    cluster.kubectl("apply", "--server-side", "-f", "crds/documentjob.yaml")
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/documentjobs.zopilot.dev", "--timeout=60s"
    )
    return cluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.failed and _cluster is not None and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("local cluster logs (tails)", _cluster.log_tails(25)))
    return report
