"""The operator's own Prometheus metrics (``zopilot_operator_*``), on an injected registry.

Names are defined once here. Tests pass a fresh ``CollectorRegistry``; the
process passes ``prometheus_client.REGISTRY`` (or its own) once at start.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from zopilot_operator.admission import AdmissionRound

PREFIX = "zopilot_operator"
JOBS = f"{PREFIX}_jobs"
ADMISSIONS = f"{PREFIX}_admissions"  # prometheus_client appends _total to counters
REJECTIONS = f"{PREFIX}_rejections"
QUEUE_WAIT = f"{PREFIX}_queue_wait_seconds"
CREATION_TO_ADMISSION = f"{PREFIX}_creation_to_admission_seconds"
PROMETHEUS_QUERY_ERRORS = f"{PREFIX}_prometheus_query_errors"
RECONCILE_ERRORS = f"{PREFIX}_reconcile_errors"
ADMISSION_ROUND = f"{PREFIX}_admission_round_seconds"

# Queue waits range from a second (empty cluster) to hours (a full one).
WAIT_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
ROUND_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)


class OperatorMetrics:
    """All operator metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Gauge(JOBS, "DocumentJobs by phase.", ["phase"], registry=registry)
        self.admissions = Counter(ADMISSIONS, "Jobs admitted onto a GPU.", registry=registry)
        self.rejections = Counter(
            REJECTIONS,
            "Jobs left waiting by an admission round, by reason (one per job and round).",
            ["reason"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            QUEUE_WAIT,
            "Seconds from entering the queue (status.queuedAt) to admission.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.creation_to_admission = Histogram(
            CREATION_TO_ADMISSION,
            "Seconds from creationTimestamp to admission (all attempts).",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.prometheus_query_errors = Counter(
            PROMETHEUS_QUERY_ERRORS,
            "Failed GPU memory queries to Prometheus, by reason.",
            ["reason"],
            registry=registry,
        )
        self.reconcile_errors = Counter(
            RECONCILE_ERRORS,
            "Handler runs that ended in an error, by handler and error kind.",
            ["handler", "kind"],
            registry=registry,
        )
        self.admission_round = Histogram(
            ADMISSION_ROUND,
            "Seconds one admission decision took (pure computation, no I/O).",
            buckets=ROUND_BUCKETS,
            registry=registry,
        )

    def set_phase_counts(self, counts: Mapping[str, int]) -> None:
        """Set the jobs gauge from ``jobs.phase_counts`` (every phase, zeros included)."""
        for phase, count in counts.items():
            self.jobs.labels(phase=phase).set(count)

    def observe_round(self, round_: AdmissionRound) -> None:
        """Count one round's admissions and waits and the admitted jobs' queue times."""
        for admission in round_.admitted:
            self.admissions.inc()
            item = admission.item
            self.queue_wait.observe(
                max((admission.decided_at - item.eligible_at).total_seconds(), 0.0)
            )
            self.creation_to_admission.observe(
                max((admission.decided_at - item.created_at).total_seconds(), 0.0)
            )
        for waiting in round_.waiting:
            self.rejections.labels(reason=waiting.reason).inc()
