"""The operator's own Prometheus metrics (``zopilot_operator_*``), on an injected registry.

Names are defined once here. Tests pass a fresh ``CollectorRegistry``; the
process passes ``prometheus_client.REGISTRY`` (or its own) once at start.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from zopilot_operator.admission import AdmissionRound, QueueItem
from zopilot_operator.gpus import GpuSample
from zopilot_operator.reasons import Reason
from zopilot_operator.reservations import Claim, visible_in
from zopilot_operator.settings import OperatorSettings

PREFIX = "zopilot_operator"
JOBS = f"{PREFIX}_jobs"
ADMISSIONS = f"{PREFIX}_admissions"  # prometheus_client appends _total to counters
REJECTIONS = f"{PREFIX}_rejections"
QUEUE_WAIT = f"{PREFIX}_queue_wait_seconds"
CREATION_TO_ADMISSION = f"{PREFIX}_creation_to_admission_seconds"
PROMETHEUS_QUERY_ERRORS = f"{PREFIX}_prometheus_query_errors"
RECONCILE_ERRORS = f"{PREFIX}_reconcile_errors"
ADMISSION_ROUND = f"{PREFIX}_admission_round_seconds"
ADMISSION_LEADER = f"{PREFIX}_admission_leader"
JOBS_FINISHED = f"{PREFIX}_jobs_finished"
GPU_MEMORY_RESERVED = f"{PREFIX}_gpu_memory_reserved_bytes"
RESERVATION_UNMATCHED = f"{PREFIX}_reservation_unmatched_bytes"
GPU_SECONDS = f"{PREFIX}_gpu_seconds"
COST = f"{PREFIX}_cost_usd"
QUEUED_SMALLEST = f"{PREFIX}_queued_smallest_required_bytes"
MIB = 1024 * 1024
# What MetricsUnavailable.reason can be (prometheus.query_gpu_memory).
PROMETHEUS_ERROR_REASONS = (Reason.METRICS_UNAVAILABLE, Reason.NO_MATCHING_GPU)

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
        # Every reason exists from the start at 0, so "no errors" reads as a flat 0 on
        # the Overview dashboard and in rate() alerts, not as "no data".
        for reason in PROMETHEUS_ERROR_REASONS:
            self.prometheus_query_errors.labels(reason=reason)
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

        self.admission_leader = Gauge(
            ADMISSION_LEADER,
            "1 while this instance holds the admission Lease (runs the admission loop).",
            registry=registry,
        )
        self.jobs_finished = Counter(
            JOBS_FINISHED,
            "Jobs that reached a final phase (Succeeded, Failed), by phase and reason.",
            ["phase", "reason"],
            registry=registry,
        )
        self.gpu_memory_reserved = Gauge(
            GPU_MEMORY_RESERVED,
            "GPU memory promised to admitted and running jobs (their requiredMiB), by node "
            "and GPU as admitted. Set by the admission leader each round.",
            ["node", "gpu"],
            registry=registry,
        )
        self.reservation_unmatched = Gauge(
            RESERVATION_UNMATCHED,
            "Per node: memory of settled reservations (worker running longer than "
            "reservation_settle_s) that DCGM's used memory does not show. Lasting values "
            "mean a reservation that no longer holds memory (a leak) or a plan far above use.",
            ["node"],
            registry=registry,
        )
        self.queued_smallest = Gauge(
            QUEUED_SMALLEST,
            "GPU memory the smallest queued job needs (0 when none is queued).",
            registry=registry,
        )

        self.gpu_seconds = Counter(
            GPU_SECONDS,
            "GPU-seconds of finished attempts (status.gpuSeconds), by namespace.",
            ["namespace"],
            registry=registry,
        )
        self.cost = Counter(
            COST,
            "USD of finished attempts (status.costUSD), by namespace.",
            ["namespace"],
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

    def clear_leader_gauges(self) -> None:
        """Drop what only the admission leader knows, so a former leader's last values
        never add to the new leader's in a sum over instances."""
        self.jobs.clear()
        self.gpu_memory_reserved.clear()
        self.reservation_unmatched.clear()
        self.queued_smallest.set(0)

    def observe_finished(self, phase: str, reason: str) -> None:
        """Count a job that just reached Succeeded or Failed (once, when the patch landed)."""
        self.jobs_finished.labels(phase=phase, reason=reason or "Unknown").inc()

    def observe_usage(
        self, namespace: str, old_status: Mapping[str, Any], patch: Mapping[str, Any]
    ) -> None:
        """Count what a landed status patch adds to the job's gpuSeconds and costUSD."""
        for counter, key in ((self.gpu_seconds, "gpuSeconds"), (self.cost, "costUSD")):
            new, old = patch.get(key), old_status.get(key) or 0.0
            if not isinstance(new, int | float) or not isinstance(old, int | float):
                continue
            # The namespace's series exists from its first finished attempt, even one
            # that took under the runtime's one-second resolution (0 GPU-seconds).
            series = counter.labels(namespace=namespace)
            if new > old:
                series.inc(new - old)

    def set_reservations(self, claims: Sequence[Claim], queue: Iterable[QueueItem]) -> None:
        """Reserved memory per (node, gpu) and the smallest queued need, from this round's jobs."""
        reserved: dict[tuple[str, str], int] = defaultdict(int)
        for claim in claims:
            reserved[(claim.node, claim.gpu)] += claim.required_mib
        self.gpu_memory_reserved.clear()  # GPUs whose jobs ended drop out
        for (node, gpu), mib in reserved.items():
            self.gpu_memory_reserved.labels(node=node, gpu=gpu).set(mib * MIB)
        smallest = min((q.required_mib for q in queue), default=0)
        self.queued_smallest.set(smallest * MIB)

    def set_unmatched(
        self,
        claims: Sequence[Claim],
        samples: Sequence[GpuSample],
        settings: OperatorSettings,
    ) -> None:
        """Per node: settled reservations minus the memory DCGM shows used (never negative)."""
        self.reservation_unmatched.clear()
        for node, value in unmatched_mib(claims, samples, settings).items():
            self.reservation_unmatched.labels(node=node).set(value * MIB)


def unmatched_mib(
    claims: Sequence[Claim], samples: Sequence[GpuSample], settings: OperatorSettings
) -> dict[str, int]:
    """Pure: per node with samples, MiB of settled claims that DCGM's used memory lacks.

    A claim is settled when the node's newest sample is assumed to show it
    (``reservations.visible_in``). Nodes whose GPUs do not report USED are skipped.
    """
    by_node: dict[str, list[GpuSample]] = defaultdict(list)
    for sample in samples:
        by_node[sample.node].append(sample)
    result: dict[str, int] = {}
    for node, node_samples in by_node.items():
        if any(s.used_mib is None for s in node_samples):
            continue
        newest = max(s.sample_time for s in node_samples)
        settled = sum(
            c.required_mib for c in claims if c.node == node and visible_in(c, newest, settings)
        )
        used = sum(s.used_mib or 0 for s in node_samples)
        result[node] = max(settled - used, 0)
    return result
