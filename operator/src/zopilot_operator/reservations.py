"""Claims and reservations: how admitted jobs reduce a GPU's free memory (pure).

Definitions (the admission round relies on exactly these):

* A **claim** is a job whose ``status.admission`` is set and whose phase is
  Admitted or Running. It is read from the API server on every round, never
  remembered in the process, so an operator restart loses nothing.
* Every claim is charged against its node for as long as it is active
  (**bookkeeping bound**): each GPU of the node counts ``capacity - sum(claims
  on the node)`` as an upper limit of its free memory. A plan is the job's peak;
  a worker reaches it late (model load, long documents), and time-slicing
  isolates no memory, so the promise must hold for the job's whole life.
* A claim is also a **reservation** against the DCGM figure while that figure
  cannot show it yet: unless the worker has been running (``status.startedAt``)
  for at least ``reservation_settle_s`` before the sample's timestamp, its
  ``requiredMiB`` is subtracted from the sampled free memory (**metrics bound**).
  Not ``decidedAt``: a pod may take minutes to be scheduled and pulled, and it
  holds no memory until its model loads.
* A GPU's effective free memory is the smaller of the two bounds. The metrics
  bound catches memory used by anything else (other pods, a worker exceeding
  its plan); the bookkeeping bound keeps promises the metrics cannot show yet.

On a node with several GPUs the device plugin, not the operator, picks the GPU,
so every claim on the node is charged to every GPU of the node and the node is
as good as its tightest GPU (conservative; see ``admission.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zopilot_operator.clock import parse_time
from zopilot_operator.gpus import Gpu, GpuNode
from zopilot_operator.reasons import ACTIVE_PHASES
from zopilot_operator.settings import OperatorSettings


@dataclass(frozen=True)
class Claim:
    """An active admission (from a job's status)."""

    key: str  # namespace/name
    node: str
    gpu: str
    uuid: str
    required_mib: int
    decided_at: datetime | None
    started_at: datetime | None  # when this attempt's worker was seen running


def claim_from_job(job: Mapping[str, Any]) -> Claim | None:
    """The job's claim, or None when it holds none (not admitted, or finished)."""
    status = job.get("status") or {}
    admission = status.get("admission") or {}
    if status.get("phase") not in ACTIVE_PHASES or not admission.get("node"):
        return None
    required = admission.get("requiredMiB")
    if not isinstance(required, int) or required < 0:
        return None
    metadata = job.get("metadata") or {}
    return Claim(
        key=f"{metadata.get('namespace', '')}/{metadata.get('name', '')}",
        node=str(admission["node"]),
        gpu=str(admission.get("gpu", "")),
        uuid=str(admission.get("uuid", "")),
        required_mib=required,
        decided_at=parse_time(admission.get("decidedAt")),
        started_at=parse_time(status.get("startedAt")),
    )


def claims_from_jobs(jobs: Iterable[Mapping[str, Any]]) -> list[Claim]:
    return [c for c in map(claim_from_job, jobs) if c is not None]


def visible_in(claim: Claim, sample_time: datetime | None, settings: OperatorSettings) -> bool:
    """Whether a sample taken at ``sample_time`` is assumed to include the claim's memory."""
    if claim.started_at is None or sample_time is None:
        return False
    settled_for = (sample_time - claim.started_at).total_seconds()
    return settled_for >= settings.reservation_settle_s


def gpu_free_mib(gpu: Gpu, node_claims: Sequence[Claim], settings: OperatorSettings) -> int:
    """Effective free MiB of one GPU given every claim on its node (may be negative)."""
    bookkept = gpu.capacity_mib - sum(c.required_mib for c in node_claims)
    if gpu.free_mib is None:  # fail-open without metrics: bookkeeping is all we have
        return bookkept
    reserved = sum(
        c.required_mib for c in node_claims if not visible_in(c, gpu.sample_time, settings)
    )
    return min(bookkept, gpu.free_mib - reserved)


def node_free_mib(
    node: GpuNode, node_claims: Sequence[Claim], settings: OperatorSettings
) -> tuple[int, Gpu]:
    """Effective free MiB of a node (its tightest GPU) and that GPU."""
    return min(
        ((gpu_free_mib(g, node_claims, settings), g) for g in node.gpus),
        key=lambda pair: (pair[0], pair[1].index),
    )
