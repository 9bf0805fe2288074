"""Pod state -> outcome, termination-message parsing, and the retry decision."""

from __future__ import annotations

import json
from typing import Any

import pytest
from zopilot_operator.outcome import (
    EXIT_GPU_OOM,
    EXIT_PERMANENT,
    EXIT_RETRIABLE,
    Failure,
    Kind,
    PodOutcome,
    Summary,
    cost_usd,
    parse_summary,
    pod_outcome,
)
from zopilot_operator.planning import SOURCE_OOM_REPLAN, Plan
from zopilot_operator.reasons import Reason
from zopilot_operator.retry import MAX_DISRUPTIONS, backoff_s, next_step
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import RTX_4090_MIB, PodBuilder, at

SETTINGS = OperatorSettings(pod_pending_timeout_s=900)
NOW = at(2000)
SUMMARY = {
    "exitCode": 0,
    "documents": 10,
    "done": 9,
    "failed": 1,
    "pages": 42,
    "byLabel": {"invoice": 6, "receipt": 3},
    "outputPath": "/var/run/zopilot/volumes/results/march",
    "failures": [{"source": "url:https://x/b.pdf", "error": "corrupt_document"}],
}


def finished(code: int, **kwargs: Any) -> dict[str, Any]:
    return PodBuilder().terminated(code, started=at(100), finished=at(400), **kwargs).obj()


def disruption_target(pod: dict[str, Any]) -> dict[str, Any]:
    """The condition the eviction API, the scheduler's preemption and the taint
    manager put on a pod they are about to take away."""
    pod["status"]["conditions"] = [
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    ]
    return pod


@pytest.mark.parametrize(
    ("pod", "kind", "reason", "failure"),
    [
        pytest.param(None, Kind.FAILED, Reason.POD_DELETED, Failure.RETRIABLE, id="gone"),
        pytest.param(
            PodBuilder().created(at(1900)).obj(), Kind.PENDING, Reason.POD_PENDING, None, id="new"
        ),
        pytest.param(
            PodBuilder().running(at(100)).obj(), Kind.RUNNING, Reason.RUNNING, None, id="running"
        ),
        pytest.param(finished(0), Kind.SUCCEEDED, Reason.SUCCEEDED, None, id="exit-0"),
        pytest.param(
            finished(EXIT_PERMANENT),
            Kind.FAILED,
            Reason.WORKER_PERMANENT,
            Failure.PERMANENT,
            id="exit-2",
        ),
        pytest.param(
            finished(EXIT_RETRIABLE),
            Kind.FAILED,
            Reason.WORKER_RETRIABLE,
            Failure.RETRIABLE,
            id="exit-75",
        ),
        pytest.param(finished(1), Kind.FAILED, Reason.WORKER_FAILED, Failure.RETRIABLE, id="crash"),
        pytest.param(
            finished(137, reason="OOMKilled"),
            Kind.FAILED,
            Reason.OOM_KILLED,
            Failure.HOST_OUT_OF_MEMORY,  # the kernel's OOM killer: host RAM, not the GPU
            id="oom-killed",
        ),
        pytest.param(
            finished(137), Kind.FAILED, Reason.WORKER_FAILED, Failure.RETRIABLE, id="sigkill"
        ),
        pytest.param(
            finished(EXIT_GPU_OOM),
            Kind.FAILED,
            Reason.GPU_OUT_OF_MEMORY,
            Failure.OUT_OF_MEMORY,
            id="cuda-oom-exit-76",
        ),
        pytest.param(
            PodBuilder().running(at(100)).pod_reason("DeadlineExceeded").obj(),
            Kind.FAILED,
            Reason.DEADLINE_EXCEEDED,
            Failure.PERMANENT,
            id="deadline",
        ),
        pytest.param(
            PodBuilder().pod_reason("Evicted", "node low on memory").obj(),
            Kind.FAILED,
            Reason.EVICTED,
            Failure.DISRUPTED,
            id="evicted",
        ),
        pytest.param(
            PodBuilder().pod_reason("Terminated", "imminent node shutdown").obj(),
            Kind.FAILED,
            Reason.DISRUPTED,
            Failure.DISRUPTED,
            id="node-shutdown",
        ),
        pytest.param(
            disruption_target(PodBuilder().running(at(100)).deleting().obj()),
            Kind.FAILED,
            Reason.DISRUPTED,
            Failure.DISRUPTED,
            id="drained",
        ),
        pytest.param(
            disruption_target(finished(137)),
            Kind.FAILED,
            Reason.DISRUPTED,
            Failure.DISRUPTED,
            id="preempted",
        ),
        pytest.param(
            PodBuilder().running(at(100)).deleting().obj(),
            Kind.FAILED,
            Reason.POD_DELETED,
            Failure.RETRIABLE,
            id="being-deleted",
        ),
        pytest.param(
            PodBuilder().created(at(1900)).waiting("InvalidImageName", "bad ref").obj(),
            Kind.FAILED,
            Reason.INVALID_POD_CONFIG,
            Failure.PERMANENT,
            id="invalid-image",
        ),
        pytest.param(
            PodBuilder().created(at(1900)).waiting("ImagePullBackOff", "pulling").obj(),
            Kind.PENDING,
            Reason.POD_PENDING,
            None,
            id="pulling",
        ),
        pytest.param(
            PodBuilder().created(at(0)).unschedulable("0/3 nodes are available").obj(),
            Kind.FAILED,
            Reason.UNSCHEDULABLE,
            Failure.UNSCHEDULABLE,  # admission's mistake: re-admitted, no retry used
            id="unschedulable",
        ),
        pytest.param(
            PodBuilder().created(at(0)).waiting("ContainerCreating").obj(),
            Kind.FAILED,
            Reason.POD_STUCK_PENDING,
            Failure.RETRIABLE,
            id="stuck-pending",
        ),
    ],
)
def test_pod_outcome(
    pod: dict[str, Any] | None, kind: Kind, reason: str, failure: Failure | None
) -> None:
    outcome = pod_outcome(pod, NOW, SETTINGS)
    assert (outcome.kind, outcome.reason, outcome.failure) == (kind, reason, failure)


def test_success_carries_summary_and_gpu_time() -> None:
    outcome = pod_outcome(finished(0, message=json.dumps(SUMMARY)), NOW, SETTINGS)
    assert outcome.summary is not None
    assert (outcome.summary.documents, outcome.summary.done, outcome.summary.failed) == (10, 9, 1)
    assert outcome.summary.results() == {
        "byLabel": {"invoice": 6, "receipt": 3},
        "outputPath": "/var/run/zopilot/volumes/results/march",
        "pages": 42,
        "failures": [{"source": "url:https://x/b.pdf", "error": "corrupt_document"}],
    }
    assert outcome.gpu_seconds == 300.0
    assert cost_usd(outcome.gpu_seconds, SETTINGS) == 0.093  # 300 s x $0.00031


def test_failure_message_carries_the_workers_explanation() -> None:
    message = json.dumps({"exitCode": 2, "message": "unknown model 'x'\n  see catalog"})
    outcome = pod_outcome(finished(EXIT_PERMANENT, message=message), NOW, SETTINGS)
    assert outcome.message == "worker exited with code 2: unknown model 'x' see catalog"


def test_failure_message_keeps_log_tail_that_is_not_json() -> None:
    # terminationMessagePolicy FallbackToLogsOnError: the last log lines.
    outcome = pod_outcome(finished(1, message="Traceback ...\nKeyError: 'x'"), NOW, SETTINGS)
    assert outcome.message == "worker exited with code 1: Traceback ... KeyError: 'x'"


def test_oom_message_names_the_reason() -> None:
    outcome = pod_outcome(finished(137, reason="OOMKilled"), NOW, SETTINGS)
    assert outcome.message == "worker exited with code 137 (OOMKilled)"


def test_stuck_pod_is_to_be_deleted_and_says_why() -> None:
    pod = PodBuilder().created(at(0)).waiting("ContainerCreating", "mounting").obj()
    outcome = pod_outcome(pod, NOW, SETTINGS)
    assert outcome.delete_pod
    assert outcome.message == (
        "the worker pod did not start within 900 s (ContainerCreating: mounting)"
    )


def test_an_unschedulable_pod_is_to_be_deleted_and_says_why() -> None:
    pod = PodBuilder().created(at(0)).unschedulable("0/3 nodes are available").obj()
    outcome = pod_outcome(pod, at(61), SETTINGS)
    assert outcome.delete_pod and outcome.failure is Failure.UNSCHEDULABLE
    assert outcome.message == (
        "the scheduler cannot place the worker pod where it was admitted "
        "(Unschedulable: 0/3 nodes are available)"
    )
    assert pod_outcome(pod, at(59), SETTINGS).kind is Kind.PENDING


def test_deadline_message_tells_what_to_change() -> None:
    pod = PodBuilder().running(at(100)).pod_reason("DeadlineExceeded").obj()
    outcome = pod_outcome(pod, NOW, SETTINGS)
    assert outcome.message == (
        "the attempt ran longer than spec.deadlineSeconds (3600 s); raise it or split the batch"
    )
    assert outcome.gpu_seconds == 1900.0  # from container start to now: no finish time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("   ", None),
        ("not json", Summary(raw="not json")),
        ("[1, 2]", Summary(raw="[1, 2]")),
        ('{"documents": 3, "done": 3}', Summary(documents=3, done=3)),
        (
            '{"documents": 3, "by_label": {"a": 3}, "output_path": "/o"}',
            Summary(documents=3, by_label={"a": 3}, output_path="/o"),
        ),
        (
            '{"documents": -1, "done": true, "failed": "2", "byLabel": {"a": "x", "b": 2}}',
            Summary(by_label={"b": 2}),
        ),
        ('{"byLabel": [1], "outputPath": 7, "failures": "x"}', Summary()),
        (
            '{"error": {"code": "gpu_memory_unavailable"}}',
            Summary(message="gpu_memory_unavailable"),
        ),
    ],
)
def test_parse_summary(text: str | None, expected: Summary | None) -> None:
    assert parse_summary(text) == expected


def test_parse_summary_caps_what_it_keeps() -> None:
    parsed = parse_summary("x" * 10_000)
    assert parsed is not None and parsed.raw is not None and len(parsed.raw) == 4096
    failures = [{"source": "s" * 290, "error": "e"}] * 12  # < 4 KiB, like the worker's
    parsed = parse_summary(json.dumps({"failures": failures}))
    assert parsed is not None
    assert len(parsed.failures) == 10
    assert len(parsed.failures[0]["source"]) == 256


def test_parse_summary_keeps_truncated_json_raw() -> None:
    assert parse_summary('{"documents": 3') == Summary(raw='{"documents": 3')


# --- retry decisions ------------------------------------------------------------------

PLAN = Plan(20480, "planner", "mixtral at nf4")
FAILED = PodOutcome(Kind.FAILED, Reason.WORKER_FAILED, "exit 1", Failure.RETRIABLE)
PERMANENT = PodOutcome(Kind.FAILED, Reason.WORKER_PERMANENT, "bad spec", Failure.PERMANENT)
OOM = PodOutcome(Kind.FAILED, Reason.OOM_KILLED, "oom", Failure.OUT_OF_MEMORY)


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(1, 30.0), (2, 60.0), (3, 120.0), (5, 480.0), (6, 600.0), (60, 600.0)],
)
def test_backoff(attempt: int, delay: float) -> None:
    assert backoff_s(attempt, SETTINGS) == delay


def step(outcome: PodOutcome, attempt: int, retries: int = 2, plan: Plan = PLAN) -> Any:
    return next_step(
        outcome,
        attempt=attempt,
        retries=retries,
        plan=plan,
        largest_gpu_mib=RTX_4090_MIB,
        now=NOW,
        settings=SETTINGS,
    )


@pytest.mark.parametrize(
    ("outcome", "attempt", "retries", "retry", "reason", "next_attempt"),
    [
        pytest.param(FAILED, 1, 2, True, Reason.RETRY_BACKOFF, 2, id="first-failure"),
        pytest.param(FAILED, 2, 2, True, Reason.RETRY_BACKOFF, 3, id="second-failure"),
        pytest.param(FAILED, 3, 2, False, Reason.WORKER_FAILED, 3, id="exhausted"),
        pytest.param(FAILED, 1, 0, False, Reason.WORKER_FAILED, 1, id="no-retries"),
        pytest.param(PERMANENT, 1, 2, False, Reason.WORKER_PERMANENT, 1, id="permanent"),
        pytest.param(OOM, 1, 2, True, Reason.RETRY_BACKOFF, 2, id="oom"),
        pytest.param(OOM, 3, 2, False, Reason.OOM_KILLED, 3, id="oom-exhausted"),
    ],
)
def test_next_step(
    outcome: PodOutcome, attempt: int, retries: int, retry: bool, reason: str, next_attempt: int
) -> None:
    decision = step(outcome, attempt, retries)
    assert (decision.retry, decision.reason, decision.attempt) == (retry, reason, next_attempt)


def test_retry_is_scheduled_after_the_backoff() -> None:
    decision = step(FAILED, 2)
    assert decision.delay_s == 60.0
    assert decision.eligible_at == at(2060)
    assert decision.plan == PLAN
    assert decision.message == ("attempt 2 failed: WorkerFailed: exit 1; attempt 3 of 3 in 60 s")


def test_exhausted_message_says_so() -> None:
    assert step(FAILED, 3).message == (
        "attempt 3 failed: WorkerFailed: exit 1; no retries left (3 of 3 attempts)"
    )


def test_oom_replans_with_more_memory() -> None:
    decision = step(OOM, 1, plan=Plan(16384, "planner", ""))
    assert decision.plan.required_mib == 20480  # 16384 x 1.25
    assert decision.plan.source == SOURCE_OOM_REPLAN
    assert decision.plan.detail == (
        "attempt 1 ran out of memory (OOMKilled) at 16.0 GiB; re-planned x1.25 = 20.0 GiB"
    )


def test_oom_growth_is_capped_at_the_largest_gpu() -> None:
    decision = step(OOM, 1, plan=Plan(20480, "planner", ""))
    # 20480 x 1.25 = 25600 > 24564 - 1024 = 23540
    assert decision.retry
    assert decision.plan.required_mib == 23540
    assert decision.plan.detail.endswith("re-planned x1.25 = 25.0 GiB, capped at 23.0 GiB")


def test_oom_at_the_cap_fails_with_numbers() -> None:
    decision = step(OOM, 1, plan=Plan(23540, "oom-replan", ""))
    assert not decision.retry
    assert decision.reason == Reason.OOM_KILLED
    assert decision.message == (
        "attempt 1 failed: OOMKilled: oom; needs more than 23.0 GiB but the largest GPU "
        "offers 24.0 GiB less the 1.0 GiB safety margin"
    )


def test_disruptions_past_the_cap_use_up_retries_so_every_job_ends() -> None:
    disrupted = PodOutcome(Kind.FAILED, Reason.EVICTED, "evicted", Failure.DISRUPTED)
    kwargs: dict[str, Any] = {
        "retries": 0, "plan": PLAN, "largest_gpu_mib": None, "now": NOW, "settings": SETTINGS
    }  # fmt: skip
    assert next_step(disrupted, attempt=1, **kwargs).disruptions == 1
    last = next_step(disrupted, attempt=MAX_DISRUPTIONS, disruptions=MAX_DISRUPTIONS - 1, **kwargs)
    assert last.retry and last.disruptions == MAX_DISRUPTIONS
    over = next_step(disrupted, attempt=MAX_DISRUPTIONS + 1, disruptions=MAX_DISRUPTIONS, **kwargs)
    assert not over.retry and over.reason == Reason.EVICTED
