"""Run the real operator (``zopilot-operator``) as a process against the local cluster.

Used by the integration tests (which kill and restart it) and by the demo,
until the Helm chart runs it in-cluster.

Which nodes its workers go to follows from the taints it tolerates. By default
the simulated GPU pool (kwok nodes, tainted ``zopilot.dev/simulated``), where
the development pod runner plays the kubelet. With ``real_pods=True`` the real
GPU nodes (tainted ``zopilot.dev/real-node``), where a real kubelet runs the
worker image (``localhost/zopilot/worker:dev``, which :meth:`LocalCluster.load_images`
puts on the nodes) as a real container.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from . import images, nodes, procs, realnodes
from .cluster import LocalCluster
from .config import REAL_NODE_WORKER_CPU, REAL_NODE_WORKER_MEMORY


class OperatorProcess:
    def __init__(
        self,
        cluster: LocalCluster,
        log_name: str = "operator",
        *,
        real_pods: bool = False,
        **settings: object,
    ) -> None:
        self.cluster = cluster
        self.real_pods = real_pods
        pool: dict[str, object] = (
            {
                "worker_image": images.WORKER,
                "worker_image_pull_policy": "Never",
                "worker_tolerated_taints": [realnodes.REAL_NODE_LABEL],
                "worker_cpu_request": REAL_NODE_WORKER_CPU,
                "worker_memory_request": REAL_NODE_WORKER_MEMORY,
            }
            if real_pods
            else {
                "worker_image": "zopilot/worker:dev",
                "worker_tolerated_taints": [nodes.SIMULATED_LABEL],
            }
        )
        self.log_name = log_name
        self.metrics_port = procs.free_port()
        self.settings = {
            "prometheus_url": cluster.state.prometheus_url,
            "metrics_port": self.metrics_port,
            "admission_interval_s": 0.5,
            "job_resync_s": 1,
            # Scrapes every second here, so a sample older than this is stale.
            "metrics_max_age_s": 5,
            "reservation_settle_s": 5,
            "leader_election_lease_s": 3,
            "retry_backoff_base_s": 1,
            "retry_backoff_max_s": 4,
            "model_pvc_name": "",
            **pool,
            **settings,
        }
        self.pid: int | None = None

    @property
    def log_path(self) -> Path:
        return self.cluster.logs_dir / f"{self.log_name}.log"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(self.cluster.env())
        for k, v in self.settings.items():
            env[f"ZOPILOT_OPERATOR_{k.upper()}"] = v if isinstance(v, str) else json.dumps(v)
        return {**env, **(extra or {})}

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        argv = [str(Path(sys.executable).parent / "zopilot-operator"), "--liveness", ""]
        self.pid = procs.start(self.log_name, argv, self.cluster.logs_dir, env=self.env(extra_env))
        # Recorded with the cluster's processes, so `dev/cluster down` stops it
        # even if whoever started it died first.
        self.cluster.state.pids[self.log_name] = self.pid
        self.cluster.state.save(self.cluster.config.state_file)
        self.cluster.add_scrape_target("zopilot-operator", f"127.0.0.1:{self.metrics_port}")

    def alive(self) -> bool:
        return self.pid is not None and procs.alive(self.pid)

    def wait_exit(self, timeout_s: float = 60) -> bool:
        return procs.wait_for(lambda: not self.alive(), timeout_s=timeout_s, interval_s=0.1)

    def _forget(self) -> None:
        self.cluster.state.pids.pop(self.log_name, None)
        self.cluster.state.save(self.cluster.config.state_file)
        self.pid = None

    def stop(self) -> None:
        if self.pid is not None:
            procs.stop(self.pid)
            self._forget()

    def kill(self) -> None:
        if self.pid is not None:
            os.killpg(self.pid, signal.SIGKILL)
            self.wait_exit(10)
            self._forget()
