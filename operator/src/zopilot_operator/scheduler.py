"""One admission round end to end, minus the I/O: objects in, status updates out (pure).

The admission loop (a kopf timer or daemon, every ``admission_interval_s``)
reads all DocumentJobs and Nodes and queries Prometheus, then calls
:func:`admission_round` and applies :func:`round_updates` (status patches first;
the pod is created on the next reconcile of the Admitted job, see
``lifecycle.on_attempt``). Everything it needs lives in the API server, so a
restarted operator continues where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from zopilot_operator import status as st
from zopilot_operator.admission import AdmissionRound, QueueItem, Waiting, decide, gib
from zopilot_operator.ceiling import largest_offer_mib, never_offered
from zopilot_operator.errors import MetricsUnavailable
from zopilot_operator.gpus import GpuSample, build_inventory, node_info
from zopilot_operator.jobs import job_generation, job_key, queue_and_claims
from zopilot_operator.lifecycle import Event, Update
from zopilot_operator.reasons import EventType, Reason
from zopilot_operator.settings import OperatorSettings

# Waiting reasons that describe the cluster, not the job: worth an event once.
_WARNING_REASONS = frozenset(
    {Reason.METRICS_UNAVAILABLE, Reason.METRICS_STALE, Reason.NO_MATCHING_GPU}
)


def admission_round(
    jobs: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    metrics: Sequence[GpuSample] | MetricsUnavailable,
    now: datetime,
    settings: OperatorSettings,
) -> AdmissionRound:
    """Decide one round from all DocumentJobs, all Nodes and the DCGM samples (or their error)."""
    queue, claims = queue_and_claims(jobs)
    infos = [
        info
        for info in (node_info(n, settings.worker_tolerated_taints) for n in nodes)
        if info is not None
    ]
    inventory = build_inventory(metrics, infos, now, settings)
    queue, never_fit = split_never_offered(
        queue, largest_offer_mib(infos, metrics, settings), settings
    )
    return replace(decide(queue, inventory, claims, now, settings), never_fit=never_fit)


def split_never_offered(
    queue: Sequence[QueueItem], ceiling_mib: int | None, settings: OperatorSettings
) -> tuple[list[QueueItem], tuple[Waiting, ...]]:
    """(the queue to decide on, the jobs no GPU can ever offer their plan: ``ceiling.py``)."""
    keep: list[QueueItem] = []
    never: list[Waiting] = []
    for item in queue:
        if never_offered(item.required_mib, ceiling_mib, settings):
            message = (
                f"needs {gib(item.required_mib)} + {gib(settings.safety_margin_mib)} margin, "
                f"but no GPU can ever offer more than {gib(ceiling_mib or 0)} (its memory "
                "less what the driver reserves)"
            )
            never.append(Waiting(item, Reason.NEVER_FITS, message))
        else:
            keep.append(item)
    return keep, tuple(never)


def round_updates(
    round_: AdmissionRound,
    jobs: Iterable[Mapping[str, Any]],
    now: datetime,
    settings: OperatorSettings | None = None,
) -> dict[str, Update]:
    """Per job key ("ns/name"): the status patch and events the round calls for.

    Jobs whose status would not change are left out, so a quiet round writes
    nothing. An event is emitted on admission and when a job's waiting reason
    changes (not every round).
    """
    by_key = {job_key(j): j for j in jobs}
    updates: dict[str, Update] = {}
    for never in round_.never_fit:
        job = by_key.get(never.item.key)
        if job is not None:
            updates[never.item.key] = never_fit_update(job, never, now, settings)
    for admission in round_.admitted:
        job = by_key.get(admission.item.key)
        if job is None:
            continue
        status, generation = job.get("status") or {}, job_generation(job)
        patch = st.admitted(status, admission, now=now, generation=generation)
        event = Event(EventType.NORMAL, Reason.ADMITTED, admission.message)
        updates[admission.item.key] = Update(patch, (event,))
    for waiting in round_.waiting:
        job = by_key.get(waiting.item.key)
        if job is None:
            continue
        status, generation = job.get("status") or {}, job_generation(job)
        patch = st.waiting(status, waiting.reason, waiting.message, now=now, generation=generation)
        if not patch:
            continue
        events: tuple[Event, ...] = ()
        if status.get("reason") != waiting.reason:
            kind = EventType.WARNING if waiting.reason in _WARNING_REASONS else EventType.NORMAL
            events = (Event(kind, waiting.reason, waiting.message),)
        updates[waiting.item.key] = Update(patch, events)
    return updates


def never_fit_update(
    job: Mapping[str, Any], never: Waiting, now: datetime, settings: OperatorSettings | None
) -> Update:
    """Fail a queued job whose plan no GPU can ever offer (NeverFits), with the numbers."""
    status, generation = job.get("status") or {}, job_generation(job)
    patch = st.failed(
        status,
        Reason.NEVER_FITS,
        never.message,
        now=now,
        generation=generation,
        settings=settings or OperatorSettings(),
    )
    return Update(patch, (Event(EventType.WARNING, Reason.NEVER_FITS, never.message),))
