"""The Helm chart (``charts/zopilot``) installed into the local cluster, for real.

The operator then runs in-cluster as the chart's Deployment: a real container
of ``localhost/zopilot/operator:dev`` on the real CPU node, under the chart's
ServiceAccount, reaching the API server through the ``kubernetes`` Service and
Prometheus through the host (:meth:`LocalCluster.expose_control_plane`). Its
worker pods are real containers of the worker image on the real GPU node.
Used by ``make demo`` and the chart's in-cluster tests.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import images
from .cluster import ClusterError, LocalCluster
from .config import REAL_NODE_WORKER_CPU, REAL_NODE_WORKER_MEMORY, REPO_ROOT
from .realnodes import REAL_NODE_LABEL, REAL_NODE_TOLERATION

CHART = REPO_ROOT / "charts" / "zopilot"
# Operator settings for a local cluster: Prometheus scrapes every second or so,
# so a sample older than 5 s is stale, and rounds and backoffs are short.
QUICK: dict[str, Any] = {
    "admissionIntervalS": 1.0,
    "jobResyncS": 1.0,
    "metricsMaxAgeS": 5.0,
    "reservationSettleS": 5.0,
    "leaderElectionLeaseS": 6.0,
    "retryBackoffBaseS": 1.0,
    "retryBackoffMaxS": 4.0,
}


def helm(c: LocalCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """helm (the one dev/tools.sh built) against the local cluster; ClusterError with
    its output when it fails and ``check``."""
    r = subprocess.run(
        [str(Path(c.state.bin_dir) / "helm"), "--kubeconfig", c.state.kubeconfig, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if check and r.returncode != 0:
        raise ClusterError(f"helm {' '.join(args)}:\n{r.stdout}\n{r.stderr}")
    return r


def cluster_leftovers(c: LocalCluster, release: str) -> str:
    """Cluster-scoped objects of ``release`` still in the API (none after an uninstall)."""
    return c.kubectl(
        "get", "clusterrole,clusterrolebinding", "-o", "name", "-l",
        f"app.kubernetes.io/instance={release}",
    ).stdout.strip()  # fmt: skip


def _image(name: str) -> dict[str, str]:
    repository, tag = name.rsplit(":", 1)
    return {"repository": repository, "tag": tag, "pullPolicy": "Never"}


def local_values(c: LocalCluster, **config: Any) -> dict[str, Any]:
    """The chart's values for the local cluster: the images built here, the real
    nodes' taint, the operator on the CPU node, Prometheus as pods reach it, worker
    requests that fit this machine, and ``config`` (operator settings) on top."""
    return {
        "operator": {
            "image": _image(images.OPERATOR),
            "tolerations": [REAL_NODE_TOLERATION],
            # On the CPU node, as on a real cluster: the GPU node's cores go to workers.
            "nodeSelector": {"kubernetes.io/hostname": "real-cpu-0"},
            "config": {
                "prometheusUrl": c.in_cluster_prometheus_url,
                "workerToleratedTaints": [REAL_NODE_LABEL],
                "workerCpuRequest": REAL_NODE_WORKER_CPU,
                "workerMemoryRequest": REAL_NODE_WORKER_MEMORY,
                **config,
            },
        },
        "worker": {
            "image": _image(images.WORKER),
            "modelVolume": {"claimName": "zopilot-models"},
        },
    }


@dataclass
class Release:
    """One release of the chart in the local cluster (helm with its kubeconfig)."""

    c: LocalCluster
    name: str
    namespace: str
    values: dict[str, Any]

    @property
    def fullname(self) -> str:
        """The chart's ``zopilot.fullname`` (_helpers.tpl): the release name when it
        already contains the chart's name, else ``<release>-zopilot``."""
        full = self.name if "zopilot" in self.name else f"{self.name}-zopilot"
        return full[:63].rstrip("-")

    @property
    def deployment(self) -> str:
        return f"{self.fullname}-operator"[:63].rstrip("-")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(self.c, *args, check=check)

    def upgrade(self, *extra: str) -> None:
        """``helm upgrade --install`` with :attr:`values` (and ``extra`` arguments),
        then wait until the operator's rollout is complete."""
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(self.values, f)
            f.flush()
            self.run(
                "upgrade", "--install", self.name, str(CHART), "-n", self.namespace,
                "-f", f.name, *extra,
            )  # fmt: skip
        self.wait_operator_ready()

    def wait_operator_ready(self, timeout_s: int = 300) -> None:
        self.c.kubectl(
            "rollout", "status", f"deployment/{self.deployment}", "-n", self.namespace,
            f"--timeout={timeout_s}s", timeout_s=timeout_s + 30,
        )  # fmt: skip

    def uninstall(self) -> None:
        self.run("uninstall", self.name, "-n", self.namespace, "--wait", check=False)
        # A failed `helm test` pod stays for inspection (its hook-delete-policy).
        self.c.kubectl(
            "delete", "pod", "-n", self.namespace, "-l", "app.kubernetes.io/component=test"
        )


def install(
    c: LocalCluster, name: str, namespace: str, values: dict[str, Any] | None = None
) -> Release:
    """Put the operator and worker images on the real nodes, then install (or
    upgrade) the chart with :func:`local_values` unless ``values`` are given."""
    c.load_images([images.OPERATOR, images.WORKER])
    release = Release(c, name, namespace, values or local_values(c, **QUICK))
    release.upgrade()
    return release
