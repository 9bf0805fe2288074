"""The operator metrics the chart's alerts and dashboards read (fresh registry per test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from zopilot_operator.jobs import queue_and_claims
from zopilot_operator.metrics import MIB, OperatorMetrics, unmatched_mib
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import JobBuilder, at, sample

SETTINGS = OperatorSettings(reservation_settle_s=300)
GIB = 1024


def _jobs() -> list[dict[str, object]]:
    return [
        JobBuilder("settled").admitted("n1", 10 * GIB).running(at(0)).obj(),
        JobBuilder("young").admitted("n1", 4 * GIB, gpu="1").running(at(590)).obj(),
        JobBuilder("other").admitted("n2", 8 * GIB).obj(),
        JobBuilder("big").queued(required_mib=20 * GIB).obj(),
        JobBuilder("small").queued(required_mib=6 * GIB).obj(),
        JobBuilder("done").phase("Succeeded").obj(),
    ]


def test_reserved_memory_per_gpu_and_smallest_queued_need() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    queue, claims = queue_and_claims(_jobs())
    metrics.set_reservations(claims, queue)
    value = registry.get_sample_value
    assert value("zopilot_operator_gpu_memory_reserved_bytes", {"node": "n1", "gpu": "0"}) == (
        10 * GIB * MIB
    )
    assert value("zopilot_operator_gpu_memory_reserved_bytes", {"node": "n1", "gpu": "1"}) == (
        4 * GIB * MIB
    )
    assert value("zopilot_operator_queued_smallest_required_bytes") == 6 * GIB * MIB
    # The next round has no active job on n2: its series goes, none is left at a stale value.
    metrics.set_reservations([c for c in claims if c.node == "n1"], [])
    assert value("zopilot_operator_gpu_memory_reserved_bytes", {"node": "n2", "gpu": "0"}) is None
    assert value("zopilot_operator_queued_smallest_required_bytes") == 0


def test_unmatched_counts_only_settled_claims_against_used_memory() -> None:
    _, claims = queue_and_claims(_jobs())
    samples = [
        sample("n1", 20000, used_mib=3 * GIB, sampled_at=at(600)),
        sample("n1", 20000, gpu="1", used_mib=0, sampled_at=at(600)),
        sample("n2", 24000, used_mib=0, sampled_at=at(600)),
    ]
    # n1: "settled" (10 GiB, running 600 s >= 300 s) shows only 3 GiB used; "young" is
    # not settled yet. n2: admitted, never started, so nothing is settled there.
    assert unmatched_mib(claims, samples, SETTINGS) == {"n1": 7 * GIB, "n2": 0}
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.set_unmatched(claims, samples, SETTINGS)
    assert registry.get_sample_value(
        "zopilot_operator_reservation_unmatched_bytes", {"node": "n1"}
    ) == (7 * GIB * MIB)
    # All memory shows up: nothing unmatched.
    full = [sample("n1", 10000, used_mib=12 * GIB, sampled_at=at(600))]
    assert unmatched_mib(claims, full, SETTINGS) == {"n1": 0}


def test_finished_jobs_and_leader_gauge() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.observe_finished("Failed", "NeverFits")
    metrics.observe_finished("Succeeded", "")
    metrics.admission_leader.set(1)
    value = registry.get_sample_value
    assert value("zopilot_operator_jobs_finished_total", {"phase": "Failed", "reason": "NeverFits"})
    assert value(
        "zopilot_operator_jobs_finished_total", {"phase": "Succeeded", "reason": "Unknown"}
    )
    assert value("zopilot_operator_admission_leader") == 1


def test_a_former_leader_exports_no_job_or_reservation_figures() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    queue, claims = queue_and_claims(_jobs())
    metrics.set_phase_counts({"Queued": 2})
    metrics.set_reservations(claims, queue)
    metrics.clear_leader_gauges()
    value = registry.get_sample_value
    assert value("zopilot_operator_jobs", {"phase": "Queued"}) is None
    assert value("zopilot_operator_gpu_memory_reserved_bytes", {"node": "n1", "gpu": "0"}) is None
    assert value("zopilot_operator_queued_smallest_required_bytes") == 0


def test_usage_counts_what_a_patch_adds() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.observe_usage("docs", {}, {"gpuSeconds": 100.0, "costUSD": 0.031})
    metrics.observe_usage("docs", {"gpuSeconds": 100.0, "costUSD": 0.031}, {"phase": "Running"})
    metrics.observe_usage(
        "docs", {"gpuSeconds": 100.0, "costUSD": 0.031}, {"gpuSeconds": 150.0, "costUSD": 0.0465}
    )
    value = registry.get_sample_value
    assert value("zopilot_operator_gpu_seconds_total", {"namespace": "docs"}) == 150.0
    assert (
        abs((value("zopilot_operator_cost_usd_total", {"namespace": "docs"}) or 0) - 0.0465) < 1e-9
    )


def test_an_attempt_of_zero_gpu_seconds_still_creates_its_namespace_series() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.observe_usage("quick", {}, {"gpuSeconds": 0.0, "costUSD": 0.0})
    labels = {"namespace": "quick"}
    assert registry.get_sample_value("zopilot_operator_gpu_seconds_total", labels) == 0.0
    assert registry.get_sample_value("zopilot_operator_cost_usd_total", labels) == 0.0
