"""Read DocumentJob objects (dicts as the API returns them) into the core's terms (pure)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from zopilot_common.spec import DocumentJobSpec, parse_quantity_bytes

from zopilot_operator.admission import QueueItem
from zopilot_operator.clock import parse_time
from zopilot_operator.errors import PermanentError
from zopilot_operator.planning import Plan
from zopilot_operator.reasons import ACTIVE_PHASES, Phase, Reason
from zopilot_operator.reservations import Claim, claims_from_jobs

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def job_key(job: Mapping[str, Any]) -> str:
    """``namespace/name``, the object reference in logs and messages."""
    metadata = job.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


def job_generation(job: Mapping[str, Any]) -> int | None:
    """``metadata.generation`` (for observedGeneration), None if absent."""
    generation = (job.get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else None


def job_phase(job: Mapping[str, Any]) -> Phase | None:
    phase = (job.get("status") or {}).get("phase")
    try:
        return Phase(phase) if phase else None
    except ValueError:
        return None


def job_spec(job: Mapping[str, Any]) -> DocumentJobSpec:
    """The parsed spec; PermanentError(InvalidSpec) with pydantic's first complaint if it is bad.

    The CRD schema already refuses most bad specs at ``kubectl apply``; this
    catches what it cannot express (and objects stored before a schema change).
    """
    raw = dict(job.get("spec") or {})
    problem = gpu_memory_problem(raw.get("gpuMemory", "auto"))
    if problem is not None:
        raise PermanentError(f"spec.gpuMemory: {problem}", reason=Reason.INVALID_SPEC)
    try:
        spec = DocumentJobSpec.from_k8s(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"spec.{where}: {first.get('msg')}" if where else str(first.get("msg"))
        raise PermanentError(message, reason=Reason.INVALID_SPEC) from exc
    return spec


_UNIT = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)$")
MIN_GPU_MEMORY_BYTES = 1024 * 1024


def gpu_memory_problem(value: Any) -> str | None:
    """Why ``spec.gpuMemory`` is not a usable request, or None (the CRD refuses the
    same, for objects stored before that rule): a bare number means bytes in
    Kubernetes quantities, so a unit is required; zero, or less than 1Mi, reserves
    nothing."""
    if value == "auto":
        return None
    if not isinstance(value, str):
        return (
            f'{value!r} needs a unit, such as "20Gi" or "20000Mi" (a bare number would mean bytes)'
        )
    if not _UNIT.match(value.strip()):
        return f'"{value}" must be "auto" or a quantity with a unit, such as 20Gi or 512Mi'
    try:
        size = parse_quantity_bytes(value)
    except ValueError:
        size = 0
    if size < MIN_GPU_MEMORY_BYTES:
        return f'"{value}" must be at least 1Mi'
    return None


def queue_item(job: Mapping[str, Any]) -> QueueItem | None:
    """The job's place in the queue, or None unless it is Queued with a plan."""
    if job_phase(job) is not Phase.QUEUED:
        return None
    status = job.get("status") or {}
    plan = Plan.from_status(status)
    if plan is None:
        return None
    metadata = job.get("metadata") or {}
    created = parse_time(metadata.get("creationTimestamp")) or _EPOCH
    priority = (job.get("spec") or {}).get("priority", 0)
    return QueueItem(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        priority=priority if isinstance(priority, int) else 0,
        created_at=created,
        eligible_at=parse_time(status.get("queuedAt")) or created,
        required_mib=plan.required_mib,
        avoid_node=str(status.get("avoidNode") or ""),
    )


def queue_and_claims(jobs: Iterable[Mapping[str, Any]]) -> tuple[list[QueueItem], list[Claim]]:
    """From all DocumentJobs: the queue and the active claims (one list of jobs, one pass each)."""
    jobs = list(jobs)
    queue = [q for q in map(queue_item, jobs) if q is not None]
    return queue, claims_from_jobs(jobs)


def phase_counts(jobs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Jobs per phase, every phase present (zeros too) so gauges drop to 0."""
    counts = Counter(job_phase(j) or Phase.PENDING for j in jobs)
    return {phase.value: counts.get(phase, 0) for phase in Phase}


class ResyncAction(StrEnum):
    """What the resync loop does with a job it lists."""

    PLAN = "plan"  # no phase yet: plan it (again)
    FOLLOW = "follow"  # Admitted/Running: follow its attempt's pod


def resync_action(job: Mapping[str, Any]) -> ResyncAction | None:
    """The resync loop's safety net for one job, or None to leave it alone.

    A job without a phase was never planned, or its planning failed (a 429/5xx
    on the way): kopf does not retry event handlers, so the resync plans it.
    """
    if not (job.get("status") or {}).get("phase"):
        return ResyncAction.PLAN
    if job_phase(job) in ACTIVE_PHASES:
        return ResyncAction.FOLLOW
    return None
