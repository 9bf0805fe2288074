"""What the handlers share within one operator process: settings, API clients,
metrics, per-job locks, the watch caches of jobs and worker pods, the node
cache and the admission trigger. Created at startup."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes import client, config
from prometheus_client import CollectorRegistry

from zopilot_operator.errors import OperatorError
from zopilot_operator.gpus import GpuSample, NodeInfo, largest_gpu_mib, node_info
from zopilot_operator.jobs import job_key
from zopilot_operator.kube import Kube
from zopilot_operator.leader import LeaseElector
from zopilot_operator.loops import LoopWatch
from zopilot_operator.metrics import OperatorMetrics
from zopilot_operator.prometheus import join_nodes
from zopilot_operator.services import SERVICE_SELECTOR, service_claims
from zopilot_operator.settings import OperatorSettings

log = logging.getLogger("zopilot.operator")
NODE_CACHE_S = 5.0


def api_client(pool_size: int = 32) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config.

    ``pool_size`` connections are kept per host, so concurrent writes reuse
    connections instead of opening (and discarding) new ones.
    """
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def _version(obj: Mapping[str, Any]) -> int | None:
    try:
        return int(str((obj.get("metadata") or {}).get("resourceVersion")))
    except (TypeError, ValueError):
        return None


def is_older(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether ``new`` is an older copy of the same object than ``old``.

    resourceVersions are opaque strings; every API server in practice uses
    etcd's integer revisions, and when either does not parse the newer copy is
    assumed to be ``new`` (it arrived last).
    """
    if old is None:
        return False
    if (new.get("metadata") or {}).get("uid") != (old.get("metadata") or {}).get("uid"):
        return False
    a, b = _version(new), _version(old)
    return a is not None and b is not None and a < b


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: Kube
    api: client.ApiClient
    http: httpx.AsyncClient
    registry: CollectorRegistry
    metrics: OperatorMetrics
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Watch caches: DocumentJobs (our watch and our own writes' responses) and
    # worker pods (our label-selected watch), by "namespace/name".
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # While relist_jobs' LIST is under way: the jobs the watch saw deleted meanwhile,
    # with the deletion's resourceVersion (a LIST older than that must not bring
    # them back). None when no LIST is under way.
    deleted: dict[str, int] | None = None
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Set by events that may let a job in (a job queued, a GPU released).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    is_leader: bool = False
    elector: LeaseElector | None = None  # the admission Lease (handlers.admission_loop)
    leader_known: asyncio.Event = field(default_factory=asyncio.Event)  # after the first try
    # The job watches (one per watched namespace, or one for all): set once every
    # one has its first LIST in ``jobs``; when ``jobs`` was last filled by a LIST.
    jobs_synced: asyncio.Event = field(default_factory=asyncio.Event)
    job_watches: int = 1
    job_watches_synced: int = 0
    jobs_listed_at: float = float("-inf")
    relisting: asyncio.Task[None] | None = None  # handlers.start_relist's LIST, while under way
    # Jobs with a follow_attempt task waiting to start (handlers.follow_soon).
    follow_pending: set[str] = field(default_factory=set)
    writes_idle: asyncio.Event = field(default_factory=_set_event)  # no round is writing
    # core/v1 Events waiting to be posted (handlers.event_poster).
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _nodes: tuple[float, list[dict[str, Any]]] = (float("-inf"), [])
    _nodes_listing: asyncio.Future[list[dict[str, Any]]] | None = None
    # Liveness of the background loops (handlers.loops_probe), by loop name.
    loops: dict[str, LoopWatch] = field(default_factory=dict)
    _exporter_pods: tuple[float, dict[str, str]] = (0.0, {})

    @classmethod
    def create(cls, settings: OperatorSettings) -> Runtime:
        api = api_client(pool_size=max(8, 2 * settings.admission_write_concurrency))
        registry = CollectorRegistry()
        return cls(
            settings,
            Kube(api, namespaces=settings.watch_namespaces),
            api,
            httpx.AsyncClient(),
            registry,
            OperatorMetrics(registry),
        )

    def lock(self, key: str) -> asyncio.Lock:
        """The lock serialising work on one job ("namespace/name"): job events,
        pod events and the resync loop may reach the same job at once."""
        return self._locks[key]

    def loop_watch(self, name: str, interval_s: float) -> LoopWatch:
        """The liveness watch of background loop ``name`` (created on first use)."""
        if name not in self.loops:
            self.loops[name] = LoopWatch(name, interval_s)
        return self.loops[name]

    def forget(self, key: str, deleted: Mapping[str, Any] | None = None) -> None:
        """Drop a deleted job's lock and cache entry (the maps would otherwise grow).
        ``deleted``: the job as its DELETED event gave it (its version is kept for
        :meth:`remember_jobs`)."""
        self._locks.pop(key, None)
        self.jobs.pop(key, None)
        version = _version(deleted) if deleted is not None else None
        if version is not None and self.deleted is not None:
            self.deleted[key] = version

    async def relist_jobs(self) -> bool:
        """LIST the jobs and merge them into the cache (:meth:`remember_jobs`); True
        if the LIST told the cache something the watch had not."""
        self.deleted = {}
        try:
            return self.remember_jobs(*await self.kube.list_jobs())
        finally:
            self.deleted = None

    def watches(self, namespace: str) -> bool:
        """Whether jobs in ``namespace`` are this operator's (``watch_namespaces``)."""
        return not self.settings.watch_namespaces or namespace in self.settings.watch_namespaces

    def remember_job(self, job: Mapping[str, Any]) -> dict[str, Any] | None:
        """Cache ``job`` unless the cache holds a newer copy; returns the previous copy."""
        key = job_key(job)
        old = self.jobs.get(key)
        if not is_older(job, old):
            self.jobs[key] = dict(job)
        return old

    def remember_jobs(
        self, jobs: Iterable[Mapping[str, Any]], versions: Mapping[str | None, str]
    ) -> bool:
        """Replace the job cache with a fresh LIST, merged with what the watch and our
        own writes delivered after the LIST's snapshot: ``versions`` gives each LIST's
        resourceVersion by namespace (None: one LIST of all namespaces).

        The watch runs on while the LIST is under way, so the cache may hold jobs
        created after the snapshot (kept: without that, jobs created during a LIST
        waited a whole admission interval), copies newer than the LIST's (kept), and
        lack jobs deleted after it (not brought back). True if the cache changed:
        the watch had missed something."""

        def snapshot(key: str) -> int | None:
            raw = versions[None] if None in versions else versions.get(key.split("/", 1)[0])
            try:
                return int(raw) if raw is not None else None
            except ValueError:
                return None

        fresh: dict[str, dict[str, Any]] = {}
        for job in jobs:
            key = job_key(job)
            gone, at = (self.deleted or {}).get(key), snapshot(key)
            if gone is not None and (at is None or gone > at):
                continue  # deleted after the snapshot
            old = self.jobs.get(key)
            mine, listed = (_version(old) if old is not None else None), _version(job)
            # The newer copy (also across a delete and re-create: versions are
            # etcd's, global); on a tie the cached one, so an unchanged job is
            # no change.
            keep = old is not None and mine is not None and listed is not None and mine >= listed
            fresh[key] = old if keep and old is not None else dict(job)
        for key, old in self.jobs.items():
            at, version = snapshot(key), _version(old)
            if key not in fresh and at is not None and version is not None and version > at:
                fresh[key] = old  # created (or changed) after the snapshot
        changed = fresh.keys() != self.jobs.keys() or any(
            fresh[k] is not self.jobs[k] for k in fresh
        )
        self.jobs = fresh
        return changed

    def remember_pod(self, kind: str, pod: Mapping[str, Any]) -> None:
        key = job_key(pod)
        if kind == "DELETED":
            self.pods.pop(key, None)
        elif not is_older(pod, self.pods.get(key)):
            self.pods[key] = dict(pod)

    async def nodes(self, fresh: bool = False) -> list[dict[str, Any]]:
        """The nodes, from a cache at most ``NODE_CACHE_S`` old (``fresh``: listed now).

        One LIST at a time: callers that find the cache old while a LIST is under
        way wait for that one. Without this, every job followed at once (hundreds
        after a round of admissions) listed all nodes itself, and the node LISTs
        took most of the operator's CPU."""
        at, nodes = self._nodes
        if not fresh and time.monotonic() - at <= NODE_CACHE_S:
            return nodes
        if self._nodes_listing is None or self._nodes_listing.done():
            self._nodes_listing = asyncio.ensure_future(self._list_nodes())
        # Shielded: a caller cancelled while waiting does not cancel the others' LIST.
        return await asyncio.shield(self._nodes_listing)

    async def _list_nodes(self) -> list[dict[str, Any]]:
        started = time.monotonic()
        nodes = await self.kube.list_nodes()
        self._nodes = (started, nodes)
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
        the answer is cached like the nodes; a failed list joins nothing. Either way
        only the newest sample of each GPU is kept (``prometheus.join_nodes``).
        """
        names = {str((n.get("metadata") or {}).get("name")) for n in nodes}
        selector = self.settings.dcgm_exporter_pod_selector
        if not selector or all(s.node in names for s in samples):
            return join_nodes(samples, names, {})  # still one (the newest) sample per GPU
        at, pod_nodes = self._exporter_pods
        if time.monotonic() - at > NODE_CACHE_S:
            try:
                pods, _ = await self.kube.list_worker_pods(
                    selector, self.settings.dcgm_exporter_namespace or None
                )
            except OperatorError as e:
                log.warning("listing dcgm-exporter pods (%s) failed: %s", selector, e)
                return join_nodes(samples, names, {})
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
            pods, _ = await self.kube.list_worker_pods(
                SERVICE_SELECTOR, self.settings.leader_election_namespace
            )
        except OperatorError as e:
            log.warning("listing worker service pods failed: %s", e)
            return []
        return service_claims(pods)
