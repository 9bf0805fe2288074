"""Local cluster configuration and its on-disk state.

Everything about one cluster lives under one directory (``state_dir``):
the kubeconfig, kwokctl's work dir, ``state.json`` (ports, pids) and ``logs/``
with the log of every component, so a failing test can print their tails.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]

# The NVIDIA GPU operator's labels for an RTX 4090 (gpu-feature-discovery).
RTX_4090_PRODUCT = "NVIDIA-GeForce-RTX-4090"
# DCGM's modelName label carries the marketing name with spaces.
RTX_4090_MODEL_NAME = "NVIDIA GeForce RTX 4090"
# Total framebuffer of an RTX 4090 as nvidia-smi / DCGM report it (MiB).
RTX_4090_MEMORY_MIB = 24564


def default_state_dir() -> Path:
    return Path(os.environ.get("ZOPILOT_CLUSTER_DIR", REPO_ROOT / ".cluster"))


def default_real_nodes() -> int:
    """Real nodes of each kind (GPU-labelled, CPU) unless ZOPILOT_REAL_NODES says otherwise."""
    raw = os.environ.get("ZOPILOT_REAL_NODES", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(
            f"ZOPILOT_REAL_NODES={raw!r}: give a number of real nodes per kind, e.g. 0 or 1"
        ) from None
    if n < 0:
        raise ValueError(f"ZOPILOT_REAL_NODES={raw!r}: must be 0 or more")
    return n


# The UID the project's images run as (operator podbuilder.WORKER_UID, the Dockerfiles).
POD_UID = 10001
# Worker pod requests on the real nodes, which have this machine's cores and memory
# (2 and 24 GiB here): the operator's defaults (2 CPUs, 16 GiB, sized for Mixtral)
# would fit one tiny worker per node; these let two run side by side.
REAL_NODE_WORKER_CPU = "250m"
REAL_NODE_WORKER_MEMORY = "2Gi"


def default_cache_dir() -> Path:
    """The project's cache (built binaries, images, node image stores): ``$ZOPILOT_CACHE``."""
    return Path(os.environ.get("ZOPILOT_CACHE", Path.home() / ".cache" / "zopilot"))


def default_images_dir() -> Path:
    """Where dev/images.sh keeps its OCI archives (``oci/*.oci.tar``)."""
    return Path(os.environ.get("ZOPILOT_IMAGES_DIR", default_cache_dir() / "images"))


@dataclass(frozen=True)
class ClusterConfig:
    """What to bring up. Every field can be set from the CLI or a test."""

    name: str = "zopilot"
    state_dir: Path = field(default_factory=default_state_dir)
    # Simulated RTX 4090 nodes, one physical GPU each, time-sliced into
    # `gpu_replicas` schedulable `nvidia.com/gpu` (NVIDIA device plugin sharing).
    gpu_nodes: int = 2
    gpu_replicas: int = 4
    cpu_nodes: int = 1
    # Real nodes (kubelet + containerd + runc + bridge CNI, see realnodes.py):
    # GPU-labelled ones (a simulated RTX 4090 each, like the kwok GPU nodes) and CPU ones.
    real_gpu_nodes: int = field(default_factory=default_real_nodes)
    real_cpu_nodes: int = field(default_factory=default_real_nodes)
    # Prometheus scrape interval (s). Real DCGM samples every 30 s; tests use 1 s
    # so they need not wait, and the operator's staleness limit scales with it.
    scrape_interval_s: float = 1.0
    # 0 = pick a free port on 127.0.0.1.
    apiserver_port: int = 0
    prometheus_port: int = 0
    dcgm_port: int = 0
    # Seconds after a worker pod starts running before the simulated DCGM
    # numbers include its memory (real GPUs fill while the model loads).
    dcgm_follow_delay_s: float = 2.0

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def kwok_workdir(self) -> Path:
        return self.state_dir / "kwok"

    @property
    def kwok_pki(self) -> Path:
        return self.kwok_workdir / "clusters" / self.name / "pki"


@dataclass
class ClusterState:
    """Written by `up`, read by everyone else (tests, `status`, `down`)."""

    name: str
    kubeconfig: str
    apiserver_url: str
    prometheus_url: str
    dcgm_url: str
    logs_dir: str
    bin_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    gpus: list[dict[str, object]] = field(default_factory=list)
    config: dict[str, object] = field(default_factory=dict)
    # Real nodes: {"slot": veth subnet octet, "nodes": {name: {"gpu": bool, "index": int}}}.
    real_nodes: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None
