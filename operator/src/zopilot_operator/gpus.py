"""GPU inventory: DCGM samples joined with the nodes' shared-GPU facts (pure).

Inputs are what the two edges fetched (samples from ``prometheus.py``, node
objects from ``kube.py``); the output is an :class:`Inventory` the admission
round places jobs on, or a :class:`Blocked` verdict (fail closed) saying why
nothing can be admitted now.

Node facts come from NVIDIA GPU feature discovery and the device plugin:
``nvidia.com/gpu.product`` (dashes; ``-SHARED`` suffix under time-slicing with
renamed resources off), ``nvidia.com/gpu.replicas``, ``nvidia.com/gpu.memory``
(MiB per GPU), ``nvidia.com/gpu.count`` and allocatable ``nvidia.com/gpu``
(replicas x GPUs: the pod slots).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from zopilot_operator.errors import MetricsUnavailable
from zopilot_operator.reasons import Reason
from zopilot_operator.settings import OperatorSettings

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
REPLICAS_LABEL = "nvidia.com/gpu.replicas"
MEMORY_LABEL = "nvidia.com/gpu.memory"
COUNT_LABEL = "nvidia.com/gpu.count"
SHARED_SUFFIX = "-SHARED"


@lru_cache(maxsize=256)
def normalize_product(name: str) -> str:
    """One spelling for DCGM's and GFD's product names.

    DCGM: "NVIDIA GeForce RTX 4090"; GFD: "NVIDIA-GeForce-RTX-4090", or
    "NVIDIA-GeForce-RTX-4090-SHARED" on a time-sliced node.
    """
    name = name.strip()
    if name.upper().endswith(SHARED_SUFFIX):
        name = name[: -len(SHARED_SUFFIX)]
    return "-".join(name.replace("_", " ").replace("-", " ").split()).lower()


@dataclass(frozen=True)
class GpuSample:
    """One GPU's framebuffer figures from DCGM (MiB) and when they were sampled."""

    node: str
    gpu: str
    uuid: str
    model_name: str
    free_mib: int
    used_mib: int | None
    reserved_mib: int | None
    sample_time: datetime

    @property
    def total_mib(self) -> int | None:
        """Framebuffer size, when USED was exported too (FREE + USED + RESERVED)."""
        if self.used_mib is None:
            return None
        return self.free_mib + self.used_mib + (self.reserved_mib or 0)


@dataclass(frozen=True)
class NodeInfo:
    """What admission needs to know about a node (from its labels, status and taints)."""

    name: str
    product: str  # as labelled, without the -SHARED suffix
    shared: bool
    replicas: int
    gpu_memory_mib: int | None
    gpu_count: int
    allocatable_gpus: int  # pod slots: GPUs x replicas
    schedulable: bool
    untolerated_taints: tuple[str, ...] = ()

    def offers(self, product: str) -> bool:
        return normalize_product(self.product) == normalize_product(product)


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def node_info(node: Mapping[str, Any], tolerated_taints: Iterable[str] = ()) -> NodeInfo | None:
    """Parse a Node object (as a dict); None for a node without a GPU product label."""
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    raw_product = labels.get(PRODUCT_LABEL)
    if not raw_product:
        return None
    shared = raw_product.upper().endswith(SHARED_SUFFIX)
    product = raw_product[: -len(SHARED_SUFFIX)] if shared else raw_product
    replicas = max(_int(labels.get(REPLICAS_LABEL)) or 1, 1)
    status = node.get("status") or {}
    allocatable = _int((status.get("allocatable") or {}).get(GPU_RESOURCE)) or 0
    count = _int(labels.get(COUNT_LABEL)) or max(allocatable // replicas, 1)
    spec = node.get("spec") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    # Taints the worker pod does not tolerate keep the scheduler away; admitting
    # there would leave the pod Pending while it holds a reservation.
    tolerated = {GPU_RESOURCE, *tolerated_taints}
    untolerated = tuple(
        sorted(
            str(t.get("key"))
            for t in spec.get("taints") or []
            if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") not in tolerated
        )
    )
    return NodeInfo(
        name=str(metadata.get("name", "")),
        product=product,
        shared=shared or replicas > 1,
        replicas=replicas,
        gpu_memory_mib=_int(labels.get(MEMORY_LABEL)),
        gpu_count=count,
        allocatable_gpus=allocatable,
        schedulable=ready and not spec.get("unschedulable") and not untolerated,
        untolerated_taints=untolerated,
    )


def usable_mib(sample: GpuSample) -> int | None:
    """What a job could ever use on this GPU (FREE + USED, without the driver's
    reserved memory), None if USED is not exported."""
    if sample.used_mib is None:
        return None
    return sample.free_mib + sample.used_mib


def largest_gpu_mib(nodes: Iterable[NodeInfo], settings: OperatorSettings) -> int | None:
    """MiB of the largest ``settings.gpu_product`` GPU on any node; None if no node has one.

    Nodes count whether Ready or not: a node that is down for maintenance still
    decides what can ever run, so jobs are not failed because of it.
    """
    sizes = [
        n.gpu_memory_mib or settings.gpu_memory_mib_fallback
        for n in nodes
        if n.offers(settings.gpu_product)
    ]
    return max(sizes, default=None)


@dataclass(frozen=True)
class Gpu:
    """One physical GPU as admission sees it. ``free_mib`` None: no metrics (fail-open)."""

    index: str
    uuid: str
    capacity_mib: int
    free_mib: int | None
    sample_time: datetime | None


@dataclass(frozen=True)
class GpuNode:
    """A node admission may place on: its GPUs and its pod slots (allocatable nvidia.com/gpu)."""

    name: str
    gpus: tuple[Gpu, ...]
    slots: int


@dataclass(frozen=True)
class Blocked:
    """Why no job can be admitted now (a reason code and a message for every waiting job)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Inventory:
    """Where jobs may go now; ``notes`` explain nodes left out (stale or missing metrics)."""

    nodes: tuple[GpuNode, ...]
    blocked: Blocked | None = None
    notes: tuple[str, ...] = ()


def _age_s(sample: GpuSample, now: datetime) -> float:
    # A sample from "the future" (clock skew) counts as fresh, not as negative age.
    return max((now - sample.sample_time).total_seconds(), 0.0)


def _blind_node(node: NodeInfo, settings: OperatorSettings) -> GpuNode:
    """A node without usable metrics, admitted onto by bookkeeping alone (fail-open)."""
    capacity = node.gpu_memory_mib or settings.gpu_memory_mib_fallback
    gpus = tuple(Gpu(str(i), "", capacity, None, None) for i in range(node.gpu_count))
    return GpuNode(node.name, gpus, node.allocatable_gpus)


def build_inventory(
    metrics: Sequence[GpuSample] | MetricsUnavailable,
    nodes: Sequence[NodeInfo],
    now: datetime,
    settings: OperatorSettings,
) -> Inventory:
    """Join DCGM samples (or the reason there are none) with the GPU nodes.

    A node is usable when it offers ``settings.gpu_product``, is Ready, not
    cordoned, has no taint the worker does not tolerate, and every one of its GPUs
    has a sample no older than ``metrics_max_age_s``. A node with one stale or
    missing GPU is left out entirely: the device plugin may put the pod on
    exactly that GPU. With ``fail_open`` such nodes are kept, blind (bookkeeping
    only) instead.
    """
    product = settings.gpu_product
    eligible = [n for n in nodes if n.offers(product) and n.schedulable and n.allocatable_gpus > 0]
    if not eligible:
        return Inventory(
            (),
            Blocked(
                Reason.NO_MATCHING_GPU,
                f"no schedulable node offers {product} GPUs "
                f"(label {PRODUCT_LABEL}, allocatable {GPU_RESOURCE})",
            ),
        )
    if isinstance(metrics, MetricsUnavailable):
        if not settings.fail_open:
            return Inventory((), Blocked(metrics.reason, metrics.message))
        blind = tuple(_blind_node(n, settings) for n in eligible)
        return Inventory(blind, None, (f"fail-open, admitting without metrics: {metrics.message}",))

    by_node: dict[str, list[GpuSample]] = defaultdict(list)
    for sample in metrics:
        by_node[sample.node].append(sample)
    usable: list[GpuNode] = []
    notes: list[str] = []
    stale_ages: list[float] = []
    # Compare times, not ages: one subtraction per stale node, not per sample.
    oldest_fresh = now - timedelta(seconds=settings.metrics_max_age_s)
    for node in eligible:
        samples = by_node.get(node.name, [])
        if len(samples) > 1:
            samples.sort(key=lambda s: s.gpu)
        problem = None
        if not samples:
            problem = "no DCGM metrics"
        elif min(s.sample_time for s in samples) < oldest_fresh:
            age = max(_age_s(s, now) for s in samples)
            stale_ages.append(age)
            limit = settings.metrics_max_age_s
            problem = f"DCGM sample {age:.0f} s old (limit {limit:.0f} s)"
        elif len(samples) < node.gpu_count:
            problem = f"only {len(samples)} of {node.gpu_count} GPUs report DCGM metrics"
        if problem is None:
            gpus = tuple(
                Gpu(
                    s.gpu,
                    s.uuid,
                    # What a job could ever use: not the driver's reserved part.
                    usable_mib(s) or node.gpu_memory_mib or settings.gpu_memory_mib_fallback,
                    s.free_mib,
                    s.sample_time,
                )
                for s in samples
            )
            usable.append(GpuNode(node.name, gpus, node.allocatable_gpus))
        elif settings.fail_open:
            usable.append(_blind_node(node, settings))
            notes.append(f"{node.name}: {problem}; fail-open, admitting without metrics")
        else:
            notes.append(f"{node.name}: {problem}")
    if usable:
        return Inventory(tuple(usable), None, tuple(notes))
    if stale_ages:
        # No age in the message: it goes on every queued job, and a figure
        # that grows every round would rewrite each of them every round.
        blocked = Blocked(
            Reason.METRICS_STALE,
            f"every DCGM sample is older than the {settings.metrics_max_age_s:.0f} s limit",
        )
    else:
        blocked = Blocked(
            Reason.NO_MATCHING_GPU,
            f"no schedulable {product} node reports DCGM metrics (" + "; ".join(notes) + ")",
        )
    return Inventory((), blocked, tuple(notes))
