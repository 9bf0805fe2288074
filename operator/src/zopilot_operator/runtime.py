"""What the handlers share within one operator process: settings, API clients,
metrics, per-job locks and a short-lived node cache. Created at startup."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes import client, config
from prometheus_client import CollectorRegistry

from zopilot_operator.errors import OperatorError
from zopilot_operator.gpus import GpuSample, NodeInfo, largest_gpu_mib, node_info
from zopilot_operator.kube import Kube
from zopilot_operator.metrics import OperatorMetrics
from zopilot_operator.prometheus import join_nodes
from zopilot_operator.services import SERVICE_SELECTOR, service_claims
from zopilot_operator.settings import OperatorSettings

NODE_CACHE_S = 5.0
log = logging.getLogger("zopilot.operator")


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
    _exporter_pods: tuple[float, dict[str, str]] = (0.0, {})

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

    async def join_nodes(
        self, samples: list[GpuSample], nodes: list[dict[str, Any]]
    ) -> list[GpuSample]:
        """Samples named after a dcgm-exporter pod, moved to that pod's node.

        The exporter pods are listed only when some sample names no node, and
        the answer is cached like the nodes; a failed list leaves samples as they are.
        """
        names = {str((n.get("metadata") or {}).get("name")) for n in nodes}
        selector = self.settings.dcgm_exporter_pod_selector
        if not selector or all(s.node in names for s in samples):
            return samples
        at, pod_nodes = self._exporter_pods
        if time.monotonic() - at > NODE_CACHE_S:
            try:
                pods = await self.kube.list_pods(selector, self.settings.dcgm_exporter_namespace)
            except OperatorError as e:
                log.warning("listing dcgm-exporter pods (%s) failed: %s", selector, e)
                return samples
            pod_nodes = {
                str(p["metadata"]["name"]): str((p.get("spec") or {}).get("nodeName") or "")
                for p in pods
            }
            self._exporter_pods = (time.monotonic(), pod_nodes)
        return join_nodes(samples, names, pod_nodes)

    async def service_claims(self) -> list[dict[str, Any]]:
        """Claims of the worker HTTP service's pods in the operator's namespace (the
        chart runs the service there). A failed list counts nothing and is logged."""
        try:
            pods = await self.kube.list_pods(
                SERVICE_SELECTOR, self.settings.leader_election_namespace
            )
        except OperatorError as e:
            log.warning("listing worker service pods failed: %s", e)
            return []
        return service_claims(pods)
