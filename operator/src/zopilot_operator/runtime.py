"""What the handlers share within one operator process: settings, API clients,
metrics, per-job locks and a short-lived node cache. Created at startup."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes import client, config
from prometheus_client import CollectorRegistry

from zopilot_operator.gpus import NodeInfo, largest_gpu_mib, node_info
from zopilot_operator.kube import Kube
from zopilot_operator.loops import LoopWatch
from zopilot_operator.metrics import OperatorMetrics
from zopilot_operator.settings import OperatorSettings

NODE_CACHE_S = 5.0


def api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=os.environ.get("KUBECONFIG")
    )
    return api


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: Kube
    api: client.ApiClient
    http: httpx.AsyncClient
    registry: CollectorRegistry
    metrics: OperatorMetrics
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _nodes: tuple[float, list[dict[str, Any]]] = (0.0, [])
    watches: dict[str, LoopWatch] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: OperatorSettings) -> Runtime:
        api = api_client()
        registry = CollectorRegistry()
        return cls(
            settings, Kube(api), api, httpx.AsyncClient(), registry, OperatorMetrics(registry)
        )

    def lock(self, key: str) -> asyncio.Lock:
        """The lock serialising work on one job ("namespace/name"): job events,
        pod events and the resync loop may reach the same job at once."""
        return self._locks[key]

    def watch(self, name: str, interval_s: float) -> LoopWatch:
        """The liveness watch of background loop ``name`` (created on first use)."""
        if name not in self.watches:
            self.watches[name] = LoopWatch(name, interval_s)
        return self.watches[name]

    def forget(self, key: str) -> None:
        """Drop a deleted job's lock (the map would otherwise grow with every job)."""
        self._locks.pop(key, None)

    async def nodes(self, fresh: bool = False) -> list[dict[str, Any]]:
        at, nodes = self._nodes
        if fresh or time.monotonic() - at > NODE_CACHE_S:
            nodes = await self.kube.list_nodes()
            self._nodes = (time.monotonic(), nodes)
        return nodes

    async def node_infos(self) -> list[NodeInfo]:
        infos = (node_info(n, self.settings.worker_tolerated_taints) for n in await self.nodes())
        return [i for i in infos if i is not None]

    async def largest_gpu_mib(self) -> int | None:
        return largest_gpu_mib(await self.node_infos(), self.settings)
