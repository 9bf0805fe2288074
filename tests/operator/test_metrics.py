"""Operator metrics on a fresh registry per test."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from zopilot_operator.admission import Admission, AdmissionRound, QueueItem, Waiting
from zopilot_operator.metrics import OperatorMetrics
from zopilot_operator.reasons import Reason
from zopilot_operator.testing import at


def test_names_and_round_observation() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    item = QueueItem("ns", "a", "u", 0, created_at=at(0), eligible_at=at(30), required_mib=1)
    round_ = AdmissionRound(
        admitted=(Admission(item, "n", "0", "", 1, 100, 1, decided_at=at(90)),),
        waiting=(
            Waiting(item, Reason.METRICS_STALE, "old"),
            Waiting(item, Reason.METRICS_STALE, "old"),
        ),
        deferred=(),
    )
    metrics.observe_round(round_)
    metrics.set_phase_counts({"Queued": 3, "Running": 0})
    metrics.prometheus_query_errors.labels(reason="MetricsUnavailable").inc()
    metrics.reconcile_errors.labels(handler="admit", kind="RetriableError").inc()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("zopilot_operator_admissions_total") == 1
    assert value("zopilot_operator_rejections_total", reason="MetricsStale") == 2
    assert value("zopilot_operator_queue_wait_seconds_sum") == 60
    assert value("zopilot_operator_creation_to_admission_seconds_sum") == 90
    assert value("zopilot_operator_creation_to_admission_seconds_bucket", le="60.0") == 0
    assert value("zopilot_operator_creation_to_admission_seconds_bucket", le="120.0") == 1
    assert value("zopilot_operator_jobs", phase="Queued") == 3
    assert value("zopilot_operator_jobs", phase="Running") == 0
    assert value("zopilot_operator_prometheus_query_errors_total", reason="MetricsUnavailable") == 1
    assert (
        value("zopilot_operator_reconcile_errors_total", handler="admit", kind="RetriableError")
        == 1
    )


def test_two_instances_do_not_collide_on_separate_registries() -> None:
    OperatorMetrics(CollectorRegistry())
    OperatorMetrics(CollectorRegistry())


def test_prometheus_error_reasons_exist_at_zero_before_any_error() -> None:
    """A healthy operator shows 0 errors per reason (dashboards, rate() alerts), not
    an absent series; and every reason the query path raises is one of them."""
    from zopilot_operator.errors import MetricsUnavailable
    from zopilot_operator.metrics import PROMETHEUS_ERROR_REASONS

    registry = CollectorRegistry()
    OperatorMetrics(registry)
    for reason in PROMETHEUS_ERROR_REASONS:
        value = registry.get_sample_value(
            "zopilot_operator_prometheus_query_errors_total", {"reason": reason}
        )
        assert value == 0.0, reason
    assert MetricsUnavailable("x").reason in PROMETHEUS_ERROR_REASONS
    assert Reason.NO_MATCHING_GPU in PROMETHEUS_ERROR_REASONS
