"""Worker pod state -> the attempt's outcome (pure); ``retry.py`` decides what follows.

The worker's contract (``zopilot_worker.jobrunner.exitcodes``, mirrored here
because the operator must not import the worker):

* exit 0: done; the termination message is a JSON summary (<= 4 KiB) with
  ``documents``, ``done``, ``failed``, ``byLabel``, ``pages``, ``outputPath``
  and, on failure, ``message`` (snake_case spellings are accepted too);
* exit 2 (:data:`EXIT_PERMANENT`): the job cannot succeed as specified;
* exit 75 (:data:`EXIT_RETRIABLE`, sysexits' EX_TEMPFAIL): try again later;
* exit 76 (:data:`EXIT_GPU_OOM`): CUDA ran out of memory: re-planned with more
  GPU memory;
* anything else (a crash, a signal): retriable, up to ``spec.retries``.

Kubernetes adds: container reason ``OOMKilled`` (the kernel's OOM killer: host
RAM, not GPU memory; retried with a larger memory request, see ``retry.py``),
pod reason ``DeadlineExceeded`` (permanent, like a Job's activeDeadlineSeconds:
the same batch would run out of time again; raise spec.deadlineSeconds or split
it), disruptions (pod reason ``Evicted``, a ``DisruptionTarget`` condition from
a drain, preemption or the taint manager, a node shutdown, a node that is gone:
retried without using up ``spec.retries``), a pod the scheduler keeps
Unschedulable for ``pod_unschedulable_s`` (deleted and re-admitted, preferring
another node, without using up ``spec.retries``), an externally deleted pod
(retriable), and a pod that never starts within ``pod_pending_timeout_s``
(retriable, after deleting it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from zopilot_operator.clock import parse_time
from zopilot_operator.podbuilder import WORKER_CONTAINER
from zopilot_operator.reasons import Reason
from zopilot_operator.settings import OperatorSettings

EXIT_OK = 0
EXIT_PERMANENT = 2
EXIT_RETRIABLE = 75
# CUDA ran out of memory in the worker: the GPU plan was too small (re-plan with more).
EXIT_GPU_OOM = 76
SUMMARY_MAX_CHARS = 4096
MAX_FAILURES = 10  # failed documents copied into status.results
# Waiting reasons no retry can cure (the operator's own configuration is wrong).
_BROKEN_POD = frozenset({"InvalidImageName"})


class Kind(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Failure(StrEnum):
    RETRIABLE = "Retriable"
    PERMANENT = "Permanent"
    OUT_OF_MEMORY = "OutOfMemory"  # CUDA OOM: retriable after a re-plan with more GPU memory
    HOST_OUT_OF_MEMORY = "HostOutOfMemory"  # OOMKilled: retriable with a larger memory request
    DISRUPTED = "Disrupted"  # evicted, drained, node gone: retried without using spec.retries
    UNSCHEDULABLE = "Unschedulable"  # admitted where the scheduler cannot place it: re-admitted


@dataclass(frozen=True)
class Summary:
    """The worker's termination message; ``raw`` keeps text that was not a JSON object."""

    documents: int | None = None
    done: int | None = None
    failed: int | None = None
    by_label: dict[str, int] = field(default_factory=dict)
    pages: int | None = None
    output_path: str | None = None
    message: str | None = None  # the worker's explanation (why it stopped)
    failures: tuple[dict[str, str], ...] = ()  # the first few failed documents
    raw: str | None = None

    def results(self) -> dict[str, Any]:
        """``status.results``."""
        out: dict[str, Any] = {}
        if self.by_label:
            out["byLabel"] = dict(self.by_label)
        if self.output_path:
            out["outputPath"] = self.output_path
        if self.pages is not None:
            out["pages"] = self.pages
        if self.failures:
            out["failures"] = [dict(f) for f in self.failures]
        if self.raw:
            out["message"] = self.raw
        return out


def _count(value: Any) -> int | None:
    # bool is an int in Python; a summary saying "done": true is not a count.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _field(data: Mapping[str, Any], camel: str, snake: str) -> Any:
    return data[camel] if camel in data else data.get(snake)


def _failures(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        {str(k)[:63]: str(v)[:256] for k, v in item.items()}
        for item in value[:MAX_FAILURES]
        if isinstance(item, dict)
    )


def parse_summary(text: str | None) -> Summary | None:
    """Parse a termination message defensively: never raises, caps what it keeps."""
    if not text or not text.strip():
        return None
    text = text.strip()[:SUMMARY_MAX_CHARS]
    try:
        data = json.loads(text)
    except ValueError:
        return Summary(raw=text)
    if not isinstance(data, dict):
        return Summary(raw=text)
    labels = _field(data, "byLabel", "by_label")
    by_label = {
        str(k)[:63]: v
        for k, v in (labels.items() if isinstance(labels, dict) else ())
        if _count(v) is not None
    }
    message = data.get("message") or data.get("error")
    if isinstance(message, dict):
        message = message.get("message") or message.get("code")
    output_path = _field(data, "outputPath", "output_path")
    return Summary(
        documents=_count(data.get("documents")),
        done=_count(data.get("done")),
        failed=_count(data.get("failed")),
        by_label=by_label,
        pages=_count(data.get("pages")),
        output_path=output_path if isinstance(output_path, str) else None,
        message=str(message)[:512] if message else None,
        failures=_failures(data.get("failures")),
    )


@dataclass(frozen=True)
class PodOutcome:
    """What one attempt's pod says now."""

    kind: Kind
    reason: str
    message: str
    failure: Failure | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: Summary | None = None
    delete_pod: bool = False  # the pod is stuck: delete it before retrying

    @property
    def gpu_seconds(self) -> float:
        return gpu_seconds(self.started_at, self.finished_at)


def gpu_seconds(started: datetime | None, finished: datetime | None) -> float:
    """Seconds the worker container held its GPU (0 if it never started)."""
    if started is None or finished is None:
        return 0.0
    return max((finished - started).total_seconds(), 0.0)


def cost_usd(seconds: float, settings: OperatorSettings) -> float:
    return round(seconds * settings.price_per_gpu_second_usd, 6)


def _worker_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == WORKER_CONTAINER:
            return dict(status)
    return dict(statuses[0]) if statuses else {}


def _terminated_failure(term: Mapping[str, Any]) -> tuple[Failure, str]:
    code = term.get("exitCode")
    if term.get("reason") == "OOMKilled":
        return Failure.HOST_OUT_OF_MEMORY, Reason.OOM_KILLED
    if code == EXIT_GPU_OOM:
        return Failure.OUT_OF_MEMORY, Reason.GPU_OUT_OF_MEMORY
    if code == EXIT_PERMANENT:
        return Failure.PERMANENT, Reason.WORKER_PERMANENT
    if code == EXIT_RETRIABLE:
        return Failure.RETRIABLE, Reason.WORKER_RETRIABLE
    return Failure.RETRIABLE, Reason.WORKER_FAILED


# Pod-level reasons of a pod the node took away (kubelet eviction, graceful node
# shutdown, a lost node): not the job's fault.
_DISRUPTED_POD_REASONS = frozenset(
    {"Evicted", "Terminated", "Shutdown", "NodeShutdown", "NodeLost"}
)


def _disruption(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) if the cluster took the pod away (eviction, drain, preemption,
    node shutdown or loss: a ``DisruptionTarget`` condition or such a pod reason)."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            why = f"{cond.get('reason', 'DisruptionTarget')}: {cond.get('message', '')}"
            return Reason.DISRUPTED, f"disrupted by the cluster ({why.strip(': ')})"
    if status.get("reason") in _DISRUPTED_POD_REASONS:
        why = f"{status['reason']}: {status.get('message', '')}".strip(": ")
        reason = Reason.EVICTED if status["reason"] == "Evicted" else Reason.DISRUPTED
        return reason, f"disrupted by the cluster ({why})"
    return None


def pod_outcome(
    pod: Mapping[str, Any] | None, now: datetime, settings: OperatorSettings
) -> PodOutcome:
    """Classify a worker pod (None: it is gone) into an outcome."""
    if pod is None:
        return PodOutcome(
            Kind.FAILED, Reason.POD_DELETED, "the worker pod was deleted", Failure.RETRIABLE
        )
    status = pod.get("status") or {}
    phase = status.get("phase")
    container = _worker_status(pod)
    state = container.get("state") or {}
    term = state.get("terminated") or {}
    running = state.get("running") or {}
    started = parse_time(term.get("startedAt") or running.get("startedAt"))
    summary = parse_summary(term.get("message"))

    def failed(reason: str, message: str, failure: Failure) -> PodOutcome:
        return PodOutcome(
            Kind.FAILED,
            reason,
            message,
            failure,
            exit_code=term.get("exitCode"),
            started_at=started,
            finished_at=parse_time(term.get("finishedAt")) or now,
            summary=summary,
        )

    if phase == "Succeeded":
        return replace(
            failed(Reason.SUCCEEDED, "worker finished", Failure.RETRIABLE),
            kind=Kind.SUCCEEDED,
            failure=None,
        )
    if phase == "Failed":
        if status.get("reason") == "DeadlineExceeded":
            deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
            message = (
                f"the attempt ran longer than spec.deadlineSeconds ({deadline} s); "
                "raise it or split the batch"
            )
            return failed(Reason.DEADLINE_EXCEEDED, message, Failure.PERMANENT)
        disruption = _disruption(pod)
        if disruption is not None:
            return failed(*disruption, Failure.DISRUPTED)
        if not term:
            message = status.get("message") or "the worker pod failed without a container status"
            return failed(Reason.WORKER_FAILED, message, Failure.RETRIABLE)
        failure, reason = _terminated_failure(term)
        message = f"worker exited with code {term.get('exitCode')}"
        if term.get("reason") and term.get("reason") != "Error":
            message += f" ({term['reason']})"
        detail = (summary.message or summary.raw) if summary else None
        if detail:
            message += f": {' '.join(detail.split())[:512]}"
        return failed(reason, message, failure)
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        disruption = _disruption(pod)
        if disruption is not None:
            return failed(*disruption, Failure.DISRUPTED)
        return failed(Reason.POD_DELETED, "the worker pod is being deleted", Failure.RETRIABLE)
    if phase == "Running" and running:
        return PodOutcome(Kind.RUNNING, Reason.RUNNING, "worker running", started_at=started)
    if phase == "Unknown":
        # Node lost contact; the node lifecycle controller will fail or evict the pod.
        message = "pod state unknown (node unreachable?)"
        return PodOutcome(Kind.RUNNING, Reason.RUNNING, message, started_at=started)
    return _pending(pod, container, now, settings)


def _pending(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    now: datetime,
    settings: OperatorSettings,
) -> PodOutcome:
    waiting = (container.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in _BROKEN_POD:
        message = f"{waiting['reason']}: {waiting.get('message', '')}".strip()
        return PodOutcome(
            Kind.FAILED, Reason.INVALID_POD_CONFIG, message, Failure.PERMANENT, finished_at=now
        )
    message = "waiting to start"
    if waiting.get("reason"):
        message = f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            message = f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".strip()
            since = parse_time(cond.get("lastTransitionTime")) or created
            if (
                cond.get("reason") == "Unschedulable"
                and since is not None
                and (now - since).total_seconds() > settings.pod_unschedulable_s
            ):
                return PodOutcome(
                    Kind.FAILED,
                    Reason.UNSCHEDULABLE,
                    f"the scheduler cannot place the worker pod where it was admitted ({message})",
                    Failure.UNSCHEDULABLE,
                    finished_at=now,
                    delete_pod=True,
                )
    limit = settings.pod_pending_timeout_s
    if created and (now - created).total_seconds() > limit:
        return PodOutcome(
            Kind.FAILED,
            Reason.POD_STUCK_PENDING,
            f"the worker pod did not start within {limit:.0f} s ({message})",
            Failure.RETRIABLE,
            finished_at=now,
            delete_pod=True,
        )
    return PodOutcome(Kind.PENDING, Reason.POD_PENDING, message)
