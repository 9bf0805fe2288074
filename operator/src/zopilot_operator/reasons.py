"""Vocabulary of job status: phases, condition types, reasons, event types.

Defined once here: conditions, events, metrics labels and tests all use these
names. Reasons are CamelCase as Kubernetes requires for condition reasons.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """``status.phase``, for humans and printer columns."""

    PENDING = "Pending"
    QUEUED = "Queued"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})
# Phases whose status.admission is a live claim on a GPU (see reservations.py).
ACTIVE_PHASES = frozenset({Phase.ADMITTED, Phase.RUNNING})


class ConditionType(StrEnum):
    """``status.conditions[].type``, for machines (``kubectl wait --for=condition=...``)."""

    PLANNED = "Planned"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class Reason(StrEnum):
    """Condition, status and event reasons."""

    # planning
    PLANNED = "Planned"
    INVALID_SPEC = "InvalidSpec"
    UNKNOWN_MODEL = "UnknownModel"
    NEVER_FITS = "NeverFits"
    # queue / admission
    QUEUED = "Queued"
    WAITING_FOR_GPU_MEMORY = "WaitingForGPUMemory"
    WAITING_FOR_GPU_SLOT = "WaitingForGPUSlot"
    HELD_FOR_OLDER_JOB = "HeldForOlderJob"
    NO_GPU_LARGE_ENOUGH = "NoGPULargeEnough"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    METRICS_STALE = "MetricsStale"
    NO_MATCHING_GPU = "NoMatchingGPU"
    ADMITTED = "Admitted"
    # running
    POD_CREATED = "PodCreated"
    POD_CREATE_REFUSED = "PodCreateRefused"  # retriable refusal: retried with backoff
    POD_REJECTED = "PodRejected"  # permanent refusal (invalid, forbidden by policy)
    POD_PENDING = "PodPending"
    RUNNING = "Running"
    PROGRESS = "Progress"
    # outcomes
    SUCCEEDED = "Succeeded"
    OOM_KILLED = "OOMKilled"
    GPU_OUT_OF_MEMORY = "GPUOutOfMemory"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    WORKER_FAILED = "WorkerFailed"
    WORKER_RETRIABLE = "WorkerRetriableError"
    WORKER_PERMANENT = "WorkerPermanentError"
    INVALID_POD_CONFIG = "InvalidPodConfig"
    POD_STUCK_PENDING = "PodStuckPending"
    UNSCHEDULABLE = "Unschedulable"  # the scheduler cannot place the pod where it was admitted
    POD_DELETED = "PodDeleted"
    SPEC_TOO_LARGE = "SpecTooLarge"  # even gzipped, more than a ConfigMap holds
    POD_NAME_TAKEN = "PodNameTaken"  # a pod this job does not own has its pod's name
    EVICTED = "Evicted"
    DISRUPTED = "Disrupted"  # drained, preempted, node shut down or gone
    RETRY_BACKOFF = "RetryBackoff"
    RETRIES_EXHAUSTED = "RetriesExhausted"
