"""Status patches for each transition of a DocumentJob (pure).

Phases: Pending -> Queued -> Admitted -> Running -> Succeeded | Failed, and
back to Queued when a failed attempt is retried. Each function takes the job's
current ``status`` and returns the JSON merge patch *of the status* (apply it
as ``{"status": patch}``; a ``None`` value deletes the field). Only fields that
change are in the patch, and an empty dict means "nothing to write", so a
handler can call these every round without churning the object.

Conditions (``conditions.py``): Planned, Admitted, Running, Succeeded, Failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from zopilot_operator.admission import Admission, gib
from zopilot_operator.clock import format_time
from zopilot_operator.conditions import set_condition
from zopilot_operator.outcome import PodOutcome, Summary, cost_usd
from zopilot_operator.planning import Plan
from zopilot_operator.reasons import ConditionType, Phase, Reason
from zopilot_operator.retry import NextStep
from zopilot_operator.settings import OperatorSettings


class _Patch:
    """Collects field and condition changes against the current status."""

    def __init__(self, status: Mapping[str, Any], now: datetime, generation: int | None) -> None:
        self._status = status
        self._now = now
        self._generation = generation
        self._conditions = [dict(c) for c in status.get("conditions") or ()]
        self._fields: dict[str, Any] = {}

    def set(self, **fields: Any) -> _Patch:
        self._fields.update(fields)
        return self

    def condition(self, type_: str, status: bool, reason: str, message: str) -> _Patch:
        self._conditions = set_condition(
            self._conditions, type_, status, reason, message, self._now, self._generation
        )
        return self

    def phase(self, phase: Phase, reason: str, message: str) -> _Patch:
        return self.set(phase=phase.value, reason=reason, message=message)

    def build(self) -> dict[str, Any]:
        patch = {k: v for k, v in self._fields.items() if _differs(self._status, k, v)}
        if self._conditions != list(self._status.get("conditions") or ()):
            patch["conditions"] = self._conditions
        if patch and self._generation is not None:
            patch["observedGeneration"] = self._generation
        return patch


def _differs(status: Mapping[str, Any], key: str, value: Any) -> bool:
    if value is None:
        return status.get(key) is not None
    return bool(status.get(key) != value)


def _accrued(
    status: Mapping[str, Any], seconds: float, settings: OperatorSettings
) -> dict[str, Any]:
    """gpuSeconds and costUSD over all attempts so far, plus this one's ``seconds``."""
    total = round(float(status.get("gpuSeconds") or 0.0) + seconds, 3)
    return {"gpuSeconds": total, "costUSD": cost_usd(total, settings)}


def queued(
    status: Mapping[str, Any],
    plan: Plan,
    *,
    now: datetime,
    generation: int | None,
    attempt: int = 1,
) -> dict[str, Any]:
    """Planned and waiting for admission (first attempt)."""
    message = f"needs {gib(plan.required_mib)}; waiting for admission"
    return (
        _Patch(status, now, generation)
        .phase(Phase.QUEUED, Reason.QUEUED, message)
        .set(attempt=attempt, plan=plan.to_status(), queuedAt=format_time(now))
        .condition(ConditionType.PLANNED, True, Reason.PLANNED, plan.detail)
        .condition(ConditionType.ADMITTED, False, Reason.QUEUED, message)
        .build()
    )


def waiting(
    status: Mapping[str, Any], reason: str, message: str, *, now: datetime, generation: int | None
) -> dict[str, Any]:
    """Still queued, and why (Admitted=False's reason/message; no new lastTransitionTime)."""
    return (
        _Patch(status, now, generation)
        .set(reason=reason, message=message)
        .condition(ConditionType.ADMITTED, False, reason, message)
        .build()
    )


def admitted(
    status: Mapping[str, Any], admission: Admission, *, now: datetime, generation: int | None
) -> dict[str, Any]:
    """Admitted onto a GPU: the decision, which is also the reservation (see reservations.py)."""
    record = {
        "node": admission.node,
        "gpu": admission.gpu,
        "uuid": admission.uuid,
        "requiredMiB": admission.required_mib,
        "freeMiB": admission.free_mib,
        "decidedAt": format_time(admission.decided_at),
    }
    return (
        _Patch(status, now, generation)
        .phase(Phase.ADMITTED, Reason.ADMITTED, admission.message)
        .set(admission=record)
        .condition(ConditionType.ADMITTED, True, Reason.ADMITTED, admission.message)
        .build()
    )


def pod_created(
    status: Mapping[str, Any], pod_name: str, *, now: datetime, generation: int | None
) -> dict[str, Any]:
    return (
        _Patch(status, now, generation)
        .set(workerPod=pod_name, podCreateFailures=None, podCreateRetryAt=None)
        .condition(ConditionType.RUNNING, False, Reason.POD_CREATED, f"pod {pod_name} created")
        .build()
    )


def pod_create_refused(
    status: Mapping[str, Any],
    message: str,
    *,
    failures: int,
    retry_at: datetime,
    now: datetime,
    generation: int | None,
) -> dict[str, Any]:
    """Creating the pod was refused for a reason that may pass (quota, 429/5xx, a
    ServiceAccount not there yet): still Admitted, the reason on the job, next try at
    ``retry_at``."""
    return (
        _Patch(status, now, generation)
        .set(
            reason=Reason.POD_CREATE_REFUSED,
            message=message,
            podCreateFailures=failures,
            podCreateRetryAt=format_time(retry_at),
        )
        .condition(ConditionType.RUNNING, False, Reason.POD_CREATE_REFUSED, message)
        .build()
    )


def pod_pending(
    status: Mapping[str, Any], outcome: PodOutcome, *, now: datetime, generation: int | None
) -> dict[str, Any]:
    """The pod exists but does not run yet (unschedulable, pulling, ...): say why."""
    return (
        _Patch(status, now, generation)
        .condition(ConditionType.RUNNING, False, Reason.POD_PENDING, outcome.message)
        .build()
    )


def running(
    status: Mapping[str, Any],
    pod_name: str,
    started_at: datetime | None,
    *,
    now: datetime,
    generation: int | None,
) -> dict[str, Any]:
    """The worker container runs. ``startedAt`` is this attempt's start (reservations use it)."""
    message = f"worker pod {pod_name} running"
    return (
        _Patch(status, now, generation)
        .phase(Phase.RUNNING, Reason.RUNNING, message)
        .set(workerPod=pod_name, startedAt=format_time(started_at or now))
        .condition(ConditionType.RUNNING, True, Reason.RUNNING, message)
        .build()
    )


def _progress(documents: int | None, done: int | None, failed: int | None) -> dict[str, Any]:
    summary = f"{done or 0}/{documents if documents is not None else '?'}"
    if failed:
        summary += f" ({failed} failed)"
    record: dict[str, Any] = {"done": done or 0, "failed": failed or 0, "summary": summary}
    if documents is not None:
        record["documents"] = documents
    return record


def progress(
    status: Mapping[str, Any],
    documents: int | None,
    done: int | None,
    failed: int | None,
    *,
    now: datetime,
    generation: int | None,
) -> dict[str, Any]:
    """Documents done so far ("7/10 (1 failed)" in ``kubectl get``); empty if unchanged."""
    return _Patch(status, now, generation).set(progress=_progress(documents, done, failed)).build()


def succeeded(
    status: Mapping[str, Any],
    outcome: PodOutcome,
    *,
    now: datetime,
    generation: int | None,
    settings: OperatorSettings,
) -> dict[str, Any]:
    summary = outcome.summary or Summary()
    message = "done"
    if summary.documents is not None:
        message = f"{summary.done or 0} of {summary.documents} documents done"
        if summary.failed:
            message += f", {summary.failed} failed"
    patch = (
        _Patch(status, now, generation)
        .phase(Phase.SUCCEEDED, Reason.SUCCEEDED, message)
        .set(
            finishedAt=format_time(outcome.finished_at or now),
            results=summary.results(),
            **_accrued(status, outcome.gpu_seconds, settings),
        )
        .condition(ConditionType.RUNNING, False, Reason.SUCCEEDED, "worker finished")
        .condition(ConditionType.SUCCEEDED, True, Reason.SUCCEEDED, message)
    )
    if summary.documents is not None:
        patch.set(progress=_progress(summary.documents, summary.done, summary.failed))
    return patch.build()


def failed(
    status: Mapping[str, Any],
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
    settings: OperatorSettings,
    gpu_seconds: float = 0.0,
) -> dict[str, Any]:
    """Terminal failure (bad spec, never fits, permanent error, retries exhausted)."""
    patch = (
        _Patch(status, now, generation)
        .phase(Phase.FAILED, reason, message)
        .set(
            finishedAt=format_time(now),
            podCreateRetryAt=None,
            **_accrued(status, gpu_seconds, settings),
        )
        .condition(ConditionType.FAILED, True, reason, message)
    )
    if status.get("startedAt") or status.get("workerPod") or status.get("podCreateFailures"):
        patch.condition(ConditionType.RUNNING, False, reason, message)
    return patch.build()


def rejected(
    status: Mapping[str, Any],
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """Failed before queueing: the spec is invalid, the model unknown, or it can never fit."""
    patch = failed(status, reason, message, now=now, generation=generation, settings=settings)
    conditions = set_condition(
        patch.get("conditions", status.get("conditions")),
        ConditionType.PLANNED,
        False,
        reason,
        message,
        now,
        generation,
    )
    return {**patch, "conditions": conditions}


def retrying(
    status: Mapping[str, Any],
    step: NextStep,
    *,
    failure: PodOutcome,
    now: datetime,
    generation: int | None,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """Back to Queued for ``step.attempt`` at ``step.eligible_at``; the claim is released.

    ``hostMemoryMiB`` (the worker pod's memory request after a host OOM) and
    ``disruptions`` (attempts not counted against spec.retries) carry over.

    ``queuedAt`` is set to when the attempt may be admitted (in the future during
    the backoff); arrival order still comes from creationTimestamp.
    """
    eligible = step.eligible_at or now
    return (
        _Patch(status, now, generation)
        .phase(Phase.QUEUED, Reason.RETRY_BACKOFF, step.message)
        .set(
            attempt=step.attempt,
            plan=step.plan.to_status(),
            queuedAt=format_time(eligible),
            admission=None,
            workerPod=None,
            startedAt=None,
            podCreateFailures=None,
            podCreateRetryAt=None,
            hostMemoryMiB=step.host_memory_mib,
            disruptions=step.disruptions or None,
            **_accrued(status, failure.gpu_seconds, settings),
        )
        .condition(ConditionType.RUNNING, False, failure.reason, failure.message)
        .condition(ConditionType.ADMITTED, False, Reason.RETRY_BACKOFF, step.message)
        .build()
    )
