"""A job's life outside admission: observed state -> what to write and do (pure).

The kopf handlers call these with what they read and apply the returned
:class:`Update`: create the pod (``create_pod``, via ``kube.create_pod``, then
``status.pod_created``), delete a stuck pod (``delete_pod``), patch the status
(``patch``, a merge patch of ``status``; empty: nothing to write) and emit the
``events``.

* :func:`on_created`: a new (or not yet planned) job: plan it, fail it at once
  if it can never fit, else queue it.
* :func:`on_attempt`: an admitted or running job and its current attempt's pod:
  create the pod if it does not exist yet, follow it, and on failure retry
  (with backoff, re-planned after an OOM) or fail.
* :func:`on_pod_create_refused`: the API server refused the attempt's pod:
  retry the create with backoff (reason on the job) or fail the attempt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from zopilot_operator import status as st
from zopilot_operator.admission import gib, never_fits
from zopilot_operator.clock import parse_time
from zopilot_operator.errors import OperatorError, PermanentError, RetriableError
from zopilot_operator.gpus import NodeInfo
from zopilot_operator.jobs import job_generation, job_phase, job_spec
from zopilot_operator.outcome import Failure, Kind, PodOutcome, pod_outcome
from zopilot_operator.planning import Plan, plan_job
from zopilot_operator.podbuilder import (
    attempt_pod_name,
    build_spec_configmap,
    build_worker_pod,
    pod_belongs_to,
)
from zopilot_operator.reasons import ACTIVE_PHASES, EventType, Phase, Reason
from zopilot_operator.retry import next_step
from zopilot_operator.settings import OperatorSettings


@dataclass(frozen=True)
class Event:
    """An event to emit on the job (``kube.build_event`` or ``kopf.event``)."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Update:
    """What a handler should do for one job; every part may be empty."""

    patch: dict[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    create_pod: dict[str, Any] | None = None
    delete_pod: str | None = None  # name of a pod to delete (same namespace)
    # The job's spec ConfigMap, created (if absent) before ``create_pod``.
    create_configmap: dict[str, Any] | None = None


def on_created(
    job: Mapping[str, Any], nodes: Sequence[NodeInfo], now: datetime, settings: OperatorSettings
) -> Update:
    """Plan a job that has no phase yet; reject what is invalid or can never fit, queue the rest."""
    status = job.get("status") or {}
    if status.get("phase"):
        return Update()
    generation = job_generation(job)
    try:
        plan = plan_job(job_spec(job))
    except PermanentError as exc:
        patch = st.rejected(
            status, exc.reason, exc.message, now=now, generation=generation, settings=settings
        )
        return Update(patch, (Event(EventType.WARNING, exc.reason, exc.message),))
    reason = never_fits(plan, nodes, settings)
    if reason is not None:
        patch = st.rejected(
            status, Reason.NEVER_FITS, reason, now=now, generation=generation, settings=settings
        )
        return Update(patch, (Event(EventType.WARNING, Reason.NEVER_FITS, reason),))
    patch = st.queued(status, plan, now=now, generation=generation)
    message = f"needs {gib(plan.required_mib)} ({plan.source}): {plan.detail}"
    return Update(patch, (Event(EventType.NORMAL, Reason.QUEUED, message),))


def on_attempt(
    job: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    now: datetime,
    settings: OperatorSettings,
    largest_gpu_mib: int | None,
    *,
    largest_host_mib: int | None = None,
    node_gone: bool = False,
) -> Update:
    """Follow the current attempt of an Admitted/Running job; ``pod`` is its pod or None.

    ``largest_host_mib``: the largest GPU node's allocatable memory (caps a host OOM
    re-plan); ``node_gone``: the admission's node no longer exists (a missing pod
    is then a disruption, not a failure of the job).

    ``pod`` must be a fresh read (not a cache) of the pod named
    :func:`podbuilder.attempt_pod_name`: None then means it is gone. Pods of
    earlier attempts are history, not input. A pod that is not this attempt's
    (:func:`podbuilder.pod_belongs_to`: labels and the job's UID as controller
    owner) is never adopted: the attempt fails (:func:`foreign_pod`).
    """
    phase = job_phase(job)
    if phase not in ACTIVE_PHASES:
        return Update()
    status = job.get("status") or {}
    generation = job_generation(job)
    attempt = int(status.get("attempt") or 1)
    pod_name = attempt_pod_name(job)
    if not status.get("admission"):
        return Update()  # only a hand-edited status gets here; nothing safe to do
    if pod is not None and not pod_belongs_to(pod, job["metadata"]["uid"], attempt):
        return _attempt_failed(job, foreign_pod(pod_name, now), now, settings, largest_gpu_mib)
    if pod is None and not status.get("workerPod"):
        # Admitted, pod not created yet (or the create's status patch was lost):
        # the deterministic name makes a repeated create a harmless 409. After a
        # refused create, not before its backoff has passed.
        retry_at = parse_time(status.get("podCreateRetryAt"))
        if retry_at is not None and now < retry_at:
            return Update()
        spec = job_spec(job)
        try:
            configmap = build_spec_configmap(job, spec)
        except PermanentError as exc:
            too_large = PodOutcome(
                Kind.FAILED, exc.reason, exc.message, Failure.PERMANENT, finished_at=now
            )
            return _attempt_failed(job, too_large, now, settings, largest_gpu_mib)
        manifest = build_worker_pod(job, spec, attempt, status["admission"], settings)
        return Update(create_pod=manifest, create_configmap=configmap)
    if pod is not None and not status.get("workerPod"):
        # The pod exists but the status patch after creating it was lost.
        return Update(st.pod_created(status, pod_name, now=now, generation=generation))
    outcome = pod_outcome(pod, now, settings)
    if pod is None and node_gone:
        node = status["admission"].get("node", "?")
        outcome = replace(
            outcome,
            reason=Reason.DISRUPTED,
            message=f"node {node} is gone, and the worker pod with it",
            failure=Failure.DISRUPTED,
        )
    if outcome.kind is Kind.PENDING:
        return Update(st.pod_pending(status, outcome, now=now, generation=generation))
    if outcome.kind is Kind.RUNNING:
        if phase is Phase.RUNNING:
            return Update()
        patch = st.running(status, pod_name, outcome.started_at, now=now, generation=generation)
        return Update(patch, (Event(EventType.NORMAL, Reason.RUNNING, outcome.message),))
    if outcome.kind is Kind.SUCCEEDED:
        patch = st.succeeded(status, outcome, now=now, generation=generation, settings=settings)
        message = str(patch.get("message", outcome.message))
        return Update(patch, (Event(EventType.NORMAL, Reason.SUCCEEDED, message),))

    return _attempt_failed(job, outcome, now, settings, largest_gpu_mib, largest_host_mib)


def node_is_gone(job: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the node the job was admitted onto is missing from ``nodes`` (a full,
    fresh-enough list; an empty list proves nothing)."""
    node = ((job.get("status") or {}).get("admission") or {}).get("node")
    names = {(n.get("metadata") or {}).get("name") for n in nodes}
    return bool(node and names and node not in names)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def foreign_pod(pod_name: str, now: datetime) -> PodOutcome:
    """Our pod's name is taken by a pod this job does not own. With the job's UID in
    the name that takes a deliberate act; the job fails rather than report that
    pod's results as its own, and says what to do."""
    message = (
        f"pod {pod_name} is not owned by this job (no controller ownerReference with "
        "its UID); delete that pod and re-create the job"
    )
    return PodOutcome(
        Kind.FAILED, Reason.POD_NAME_TAKEN, message, Failure.PERMANENT, finished_at=now
    )


def _attempt_failed(
    job: Mapping[str, Any],
    outcome: PodOutcome,
    now: datetime,
    settings: OperatorSettings,
    largest_gpu_mib: int | None,
    largest_host_mib: int | None = None,
) -> Update:
    """The current attempt failed as ``outcome`` says: retry it (with backoff) or fail the job.

    Either way the job's claim on its GPU ends (phase Queued or Failed)."""
    status = job.get("status") or {}
    generation = job_generation(job)
    attempt = int(status.get("attempt") or 1)
    pod_name = attempt_pod_name(job)
    plan = Plan.from_status(status) or Plan(
        int((status.get("admission") or {}).get("requiredMiB") or 0), "admission", ""
    )
    retries = int((job.get("spec") or {}).get("retries", 2))
    step = next_step(
        outcome,
        attempt=attempt,
        retries=retries,
        plan=plan,
        largest_gpu_mib=largest_gpu_mib,
        now=now,
        settings=settings,
        disruptions=_int(status.get("disruptions")),
        host_memory_mib=_int(status.get("hostMemoryMiB")) or None,
        largest_host_mib=largest_host_mib,
    )
    delete = pod_name if outcome.delete_pod else None
    if step.retry:
        patch = st.retrying(
            status, step, failure=outcome, now=now, generation=generation, settings=settings
        )
        if outcome.failure is Failure.UNSCHEDULABLE:
            # Admission prefers another node next time (see admission.decide).
            patch["avoidNode"] = (status.get("admission") or {}).get("node")
        event = Event(EventType.WARNING, outcome.reason, step.message)
        return Update(patch, (event,), delete_pod=delete)
    patch = st.failed(
        status,
        step.reason,
        step.message,
        now=now,
        generation=generation,
        settings=settings,
        gpu_seconds=outcome.gpu_seconds,
    )
    return Update(patch, (Event(EventType.WARNING, step.reason, step.message),), delete_pod=delete)


def pod_create_delay_s(failures: int, error: RetriableError, settings: OperatorSettings) -> float:
    """Backoff before creating the pod again after ``failures`` refusals in a row (1-based):
    the API's own hint (Retry-After, quota) doubled per refusal, capped at retry_backoff_max_s."""
    exponent = min(max(failures - 1, 0), 16)
    return float(min(max(error.delay_s, 1.0) * 2**exponent, settings.retry_backoff_max_s))


def on_pod_create_refused(
    job: Mapping[str, Any], error: OperatorError, now: datetime, settings: OperatorSettings
) -> Update:
    """The API server refused to create the attempt's pod (``error`` from ``kube.create_pod``).

    * Permanent (422 invalid, 403 forbidden by a policy or a LimitRange, a name taken
      by a foreign pod): the attempt fails with the API's message; the same manifest
      would be refused again, so the job fails (and its claim ends).
    * Retriable (429, 5xx, quota exceeded, ServiceAccount not there yet, a conflict):
      the job stays Admitted with the reason on its status (``reason``, the Running
      condition) and the create is tried again after a backoff
      (``status.podCreateRetryAt``). A refusal that outlasts ``pod_pending_timeout_s``
      since admission fails the attempt like a pod that never starts: the GPU is
      released and the attempt is retried (or the job fails) as usual.
    """
    status = job.get("status") or {}
    generation = job_generation(job)
    message = f"the API server refused the worker pod: {error.message}"
    if not isinstance(error, RetriableError):
        refused = PodOutcome(
            Kind.FAILED, Reason.POD_REJECTED, message, Failure.PERMANENT, finished_at=now
        )
        return _attempt_failed(job, refused, now, settings, None)
    decided = parse_time((status.get("admission") or {}).get("decidedAt"))
    limit = settings.pod_pending_timeout_s
    if decided is not None and (now - decided).total_seconds() > limit:
        gave_up = PodOutcome(
            Kind.FAILED,
            Reason.POD_CREATE_REFUSED,
            f"{message} (still refused {limit:.0f} s after admission)",
            Failure.RETRIABLE,
            finished_at=now,
        )
        return _attempt_failed(job, gave_up, now, settings, None)
    failures = int(status.get("podCreateFailures") or 0) + 1
    delay = pod_create_delay_s(failures, error, settings)
    text = f"{message}; try {failures + 1} in {delay:.0f} s"
    patch = st.pod_create_refused(
        status,
        text,
        failures=failures,
        retry_at=now + timedelta(seconds=delay),
        now=now,
        generation=generation,
    )
    events: tuple[Event, ...] = ()
    if failures == 1 or status.get("reason") != Reason.POD_CREATE_REFUSED:
        events = (Event(EventType.WARNING, Reason.POD_CREATE_REFUSED, text),)
    return Update(patch, events)
