"""Reading DocumentJobs (queue items, specs, phases) and planning through the adapter."""

from __future__ import annotations

from typing import Any

import pytest
from zopilot_common.spec import DocumentJobSpec
from zopilot_operator.errors import PermanentError
from zopilot_operator.jobs import (
    ResyncAction,
    job_key,
    job_phase,
    job_spec,
    phase_counts,
    queue_and_claims,
    queue_item,
    resync_action,
)
from zopilot_operator.planning import Plan, does_not_fit, plan_job
from zopilot_operator.reasons import Phase, Reason
from zopilot_operator.testing import T0, JobBuilder, at


def test_queue_item() -> None:
    job = JobBuilder("j", "ns").priority(7).created(at(5)).queued(10240, since=at(60)).obj()
    item = queue_item(job)
    assert item is not None
    assert (item.key, item.uid, item.priority, item.required_mib) == ("ns/j", "uid-ns-j", 7, 10240)
    assert (item.created_at, item.eligible_at) == (at(5), at(60))


@pytest.mark.parametrize(
    "job",
    [
        pytest.param(JobBuilder("j").obj(), id="no-status"),
        pytest.param(JobBuilder("j").admitted("n", 1).obj(), id="admitted"),
        pytest.param(JobBuilder("j").phase("Queued").obj(), id="queued-without-plan"),
        pytest.param(
            JobBuilder("j").queued(1024).status(plan={"requiredMiB": 0}).obj(), id="zero-plan"
        ),
    ],
)
def test_not_in_queue(job: dict[str, Any]) -> None:
    assert queue_item(job) is None


def test_queue_item_defaults() -> None:
    job = JobBuilder("j").queued(1024).obj()
    del job["status"]["queuedAt"]
    item = queue_item(job)
    assert item is not None and (item.priority, item.eligible_at) == (0, T0)


def test_queue_and_claims() -> None:
    jobs = [
        JobBuilder("q").queued(1).obj(),
        JobBuilder("a").admitted("n", 2).obj(),
        JobBuilder("r").admitted("n", 3).running(T0).obj(),
        JobBuilder("s").admitted("n", 4).phase("Succeeded").obj(),
    ]
    queue, claims = queue_and_claims(iter(jobs))
    assert [q.name for q in queue] == ["q"]
    assert [c.key for c in claims] == ["default/a", "default/r"]


def test_phase_counts_include_zeros() -> None:
    jobs = [JobBuilder("a").queued(1).obj(), JobBuilder("b").obj(), JobBuilder("c").queued(1).obj()]
    assert phase_counts(jobs) == {
        "Pending": 1,
        "Queued": 2,
        "Admitted": 0,
        "Running": 0,
        "Succeeded": 0,
        "Failed": 0,
    }


def test_key_and_phase() -> None:
    job = JobBuilder("j", "ns").phase("Running").obj()
    assert (job_key(job), job_phase(job)) == ("ns/j", Phase.RUNNING)
    assert job_phase(JobBuilder("j").phase("Weird").obj()) is None


def test_job_spec_parses() -> None:
    spec = job_spec(JobBuilder("j").spec(priority=3).obj())
    assert isinstance(spec, DocumentJobSpec) and spec.priority == 3


def test_bad_spec_is_permanent_with_the_field() -> None:
    job = JobBuilder("j").spec(tasks=["classify"]).obj()  # classify without spec.classify
    with pytest.raises(PermanentError) as caught:
        job_spec(job)
    assert caught.value.reason == Reason.INVALID_SPEC
    assert "spec.classify (labels, model) is required" in caught.value.message


def test_bad_field_names_the_field() -> None:
    with pytest.raises(PermanentError, match=r"^spec\.priority: "):
        job_spec(JobBuilder("j").spec(priority=5000).obj())


# --- planning adapter --------------------------------------------------------------------


def spec(**fields: Any) -> DocumentJobSpec:
    return job_spec(JobBuilder("j").spec(**fields).obj())


def test_plan_from_catalog() -> None:
    plan = plan_job(spec(tasks=["classify"], classify={"labels": ["a", "b"]}))
    assert plan.source == "planner"
    assert plan.required_mib > 20 * 1024  # Mixtral at nf4 is ~26 GB
    assert plan.to_status() == {
        "requiredMiB": plan.required_mib,
        "source": "planner",
        "detail": plan.detail,
    }


def test_explicit_gpu_memory() -> None:
    plan = plan_job(spec(gpuMemory="12Gi"))
    assert (plan.required_mib, plan.source) == (12288, "spec.gpuMemory")


def test_unknown_model_is_permanent() -> None:
    with pytest.raises(PermanentError) as caught:
        plan_job(spec(tasks=["classify"], classify={"labels": ["a", "b"], "model": "gpt-9"}))
    assert caught.value.reason == Reason.UNKNOWN_MODEL
    assert "unknown model 'gpt-9'" in caught.value.message


def test_int8_mixtral_never_fits_a_4090_and_says_what_to_do() -> None:
    plan = plan_job(
        spec(tasks=["classify"], classify={"labels": ["a", "b"], "quantization": "int8"})
    )
    message = does_not_fit(plan, 24564, 1024)
    assert message is not None
    assert message.startswith(f"needs {plan.required_mib / 1024:.1f} GiB at int8; ")
    assert message.endswith("(24.0 GiB less the 1.0 GiB safety margin)")


def test_plan_round_trips_through_status() -> None:
    plan = Plan(1234, "planner", "d")
    assert Plan.from_status({"plan": plan.to_status()}) == plan
    assert Plan.from_status({}) is None


@pytest.mark.parametrize(
    ("job", "action"),
    [
        # Planning failed (a 429/5xx while reading nodes or writing the status): the
        # job has no phase, and kopf never retries an event handler, so the resync
        # must plan it again.
        pytest.param(JobBuilder("new").obj(), ResyncAction.PLAN, id="no-status"),
        pytest.param(JobBuilder("new").status(attempt=1).obj(), ResyncAction.PLAN, id="no-phase"),
        pytest.param(JobBuilder("q").queued(1024).obj(), None, id="queued"),
        pytest.param(JobBuilder("a").admitted("n", 1024).obj(), ResyncAction.FOLLOW, id="admitted"),
        pytest.param(
            JobBuilder("r").admitted("n", 1024).running(T0).obj(), ResyncAction.FOLLOW, id="running"
        ),
        pytest.param(JobBuilder("s").phase("Succeeded").obj(), None, id="succeeded"),
        pytest.param(JobBuilder("f").phase("Failed").obj(), None, id="failed"),
    ],
)
def test_resync_action(job: dict[str, Any], action: ResyncAction | None) -> None:
    assert resync_action(job) == action


@pytest.mark.parametrize(
    ("quantity", "problem"),
    [
        (20000, "needs a unit"),  # bytes in Kubernetes terms: almost nothing
        ("20000", "with a unit"),
        ("0Gi", "at least 1Mi"),
        ("0.0Mi", "at least 1Mi"),
        ("512Ki", "at least 1Mi"),
        ("0.0000001Ki", "at least 1Mi"),  # rounds to 0 bytes
        ("-1Gi", "with a unit"),
        ("lots", "with a unit"),
    ],
)
def test_gpu_memory_without_a_unit_or_of_zero_is_invalid(quantity: object, problem: str) -> None:
    job = JobBuilder("j").spec(gpuMemory=quantity).obj()
    with pytest.raises(PermanentError, match=problem) as raised:
        job_spec(job)
    assert raised.value.reason == Reason.INVALID_SPEC
    assert raised.value.message.startswith("spec.gpuMemory: ")


@pytest.mark.parametrize("quantity", ["auto", "20Gi", "20000Mi", "1Mi", "1.5Gi", "24G"])
def test_gpu_memory_with_a_unit_is_valid(quantity: str) -> None:
    assert job_spec(JobBuilder("j").spec(gpuMemory=quantity).obj()).gpu_memory == quantity
