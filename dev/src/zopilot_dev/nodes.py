"""Manifests of the simulated nodes (pure).

GPU nodes carry the labels NVIDIA's GPU operator (gpu-feature-discovery)
sets, with time-slicing: one physical RTX 4090 advertised as
``gpu_replicas`` schedulable ``nvidia.com/gpu``. kwok manages every node
annotated ``kwok.x-k8s.io/node: fake``.

Simulated GPU nodes are tainted ``zopilot.dev/simulated=true:NoSchedule``,
as the real nodes are tainted ``zopilot.dev/real-node``: pods no container
runtime will run (the pod runner's processes, the scale benchmark's) go to
one pool, real containers to the other, and the operator, which admits only
onto nodes whose taints its worker pods tolerate (``worker_tolerated_taints``),
picks the pool the way a user picks a GPU pool in a real cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import RTX_4090_MEMORY_MIB, RTX_4090_MODEL_NAME, RTX_4090_PRODUCT

SIMULATED_LABEL = "zopilot.dev/simulated"
SIMULATED_TAINT = {"key": SIMULATED_LABEL, "value": "true", "effect": "NoSchedule"}
_UUID_NS = uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")


@dataclass(frozen=True)
class SimulatedGPU:
    node: str
    index: int
    uuid: str
    total_mib: int = RTX_4090_MEMORY_MIB
    model_name: str = RTX_4090_MODEL_NAME

    @property
    def device(self) -> str:
        return f"nvidia{self.index}"


def gpu_node_name(i: int) -> str:
    return f"gpu-4090-{i}"


def cpu_node_name(i: int) -> str:
    return f"cpu-{i}"


def simulated_gpus(
    cluster: str, gpu_nodes: int, real_gpu_nodes: Sequence[str] = ()
) -> list[SimulatedGPU]:
    """One simulated RTX 4090 per kwok GPU node and per real GPU-labelled node."""
    names = [gpu_node_name(i) for i in range(gpu_nodes)] + list(real_gpu_nodes)
    # Stable UUIDs (like real GPU-xxxxxxxx UUIDs) so series survive restarts.
    return [
        SimulatedGPU(
            node=name, index=0, uuid="GPU-" + str(uuid.uuid5(_UUID_NS, f"{cluster}/{name}/0"))
        )
        for name in names
    ]


def _node(
    name: str,
    labels: dict[str, str],
    allocatable: dict[str, str],
    taints: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                SIMULATED_LABEL: "true",
                **labels,
            },
        },
        "spec": {"taints": list(taints)} if taints else {},
        "status": {
            "allocatable": allocatable,
            "capacity": allocatable,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
        },
    }


def gpu_labels(replicas: int, memory_mib: int = RTX_4090_MEMORY_MIB) -> dict[str, str]:
    """The GPU operator's labels for one time-sliced RTX 4090 (also on real GPU nodes)."""
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": RTX_4090_PRODUCT,
        "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.count": "1",
        "nvidia.com/gpu.replicas": str(replicas),
        "nvidia.com/gpu.sharing-strategy": "time-slicing",
        "nvidia.com/gpu.family": "ada-lovelace",
    }


def gpu_node(name: str, replicas: int, memory_mib: int = RTX_4090_MEMORY_MIB) -> dict[str, Any]:
    return _node(
        name,
        gpu_labels(replicas, memory_mib),
        {
            "cpu": "16",
            "memory": "64Gi",
            "pods": "110",
            "ephemeral-storage": "200Gi",
            "nvidia.com/gpu": str(replicas),
        },
        taints=[SIMULATED_TAINT],
    )


def cpu_node(name: str) -> dict[str, Any]:
    return _node(
        name, {}, {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    )


def all_nodes(gpu_nodes: int, gpu_replicas: int, cpu_nodes: int) -> list[dict[str, Any]]:
    return [gpu_node(gpu_node_name(i), gpu_replicas) for i in range(gpu_nodes)] + [
        cpu_node(cpu_node_name(i)) for i in range(cpu_nodes)
    ]
