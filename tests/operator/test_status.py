"""Conditions and status patches, walked through a job's life and checked against the CRD.

Patches are JSON merge patches of ``status``; :func:`merge` applies one the way
the API server does (``None`` deletes, objects merge, lists are replaced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from zopilot_operator import status as st
from zopilot_operator.admission import Admission, QueueItem
from zopilot_operator.conditions import condition_status, find_condition, set_condition
from zopilot_operator.outcome import Failure, Kind, PodOutcome, Summary
from zopilot_operator.planning import Plan
from zopilot_operator.reasons import Phase, Reason
from zopilot_operator.retry import NextStep
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import at
from zopilot_operator.testing import merge_patch as merge

SETTINGS = OperatorSettings()
PLAN = Plan(20480, "planner", "mixtral-8x7b-instruct at nf4: ... = 20.0 GiB")
CRD = Path(__file__).resolve().parents[2] / "crds" / "documentjob.yaml"


def status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["status"]  # type: ignore[no-any-return]


def violations(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """What the API server would prune or refuse (types, enums, unknown fields)."""
    kind = schema.get("type")
    checks: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "array": list,
        "object": dict,
    }
    if kind in checks and not isinstance(value, checks[kind]):
        return [f"{path}: {type(value).__name__} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in {schema['enum']}"]
    problems = []
    if kind == "object" and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties", {})
        for key, item in value.items():
            if key not in props:
                problems.append(f"{path}.{key}: unknown field (pruned)")
            else:
                problems += violations(item, props[key], f"{path}.{key}")
        problems += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
    if kind == "array":
        for i, item in enumerate(value):
            problems += violations(item, schema.get("items", {}), f"{path}[{i}]")
    return problems


# --- conditions ------------------------------------------------------------------------


def test_new_condition_gets_a_transition_time() -> None:
    [c] = set_condition([], "Admitted", False, "Queued", "waiting", at(0), 1)
    assert c == {
        "type": "Admitted",
        "status": "False",
        "reason": "Queued",
        "message": "waiting",
        "lastTransitionTime": "2026-03-01T12:00:00Z",
        "observedGeneration": 1,
    }


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    before = set_condition([], "Admitted", False, "Queued", "waiting", at(0), 1)
    after = set_condition(before, "Admitted", False, "MetricsStale", "old", at(50), 2)
    assert after[0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    assert (after[0]["reason"], after[0]["message"], after[0]["observedGeneration"]) == (
        "MetricsStale",
        "old",
        2,
    )
    assert before[0]["reason"] == "Queued"  # input untouched


def test_flip_moves_transition_time_and_keeps_order() -> None:
    conditions = set_condition([], "Planned", True, "Planned", "", at(0), 1)
    conditions = set_condition(conditions, "Admitted", False, "Queued", "", at(0), 1)
    conditions = set_condition(conditions, "Admitted", True, "Admitted", "", at(30), 1)
    assert [c["type"] for c in conditions] == ["Planned", "Admitted"]
    assert conditions[1]["lastTransitionTime"] == "2026-03-01T12:00:30Z"
    assert condition_status({"conditions": conditions}, "Admitted") == "True"
    assert condition_status({}, "Admitted") == "Unknown"
    assert find_condition(conditions, "Running") is None


# --- transitions ------------------------------------------------------------------------


def admission() -> Admission:
    item = QueueItem("ns", "job", "uid", 0, at(0), at(0), 20480)
    return Admission(item, "gpu-b", "0", "GPU-1", 20480, 24000, 1, at(20))


def test_queued_from_nothing() -> None:
    patch = st.queued({}, PLAN, now=at(1), generation=1)
    assert {k: v for k, v in patch.items() if k != "conditions"} == {
        "phase": "Queued",
        "reason": "Queued",
        "message": "needs 20.0 GiB; waiting for admission",
        "attempt": 1,
        "plan": {"requiredMiB": 20480, "source": "planner", "detail": PLAN.detail},
        "queuedAt": "2026-03-01T12:00:01Z",
        "observedGeneration": 1,
    }
    assert [(c["type"], c["status"]) for c in patch["conditions"]] == [
        ("Planned", "True"),
        ("Admitted", "False"),
    ]


def test_waiting_writes_only_changes() -> None:
    status = merge({}, st.queued({}, PLAN, now=at(1), generation=1))
    first = st.waiting(status, Reason.METRICS_STALE, "old", now=at(10), generation=1)
    status = merge(status, first)
    assert set(first) == {"reason", "message", "conditions", "observedGeneration"}
    assert st.waiting(status, Reason.METRICS_STALE, "old", now=at(20), generation=1) == {}
    again = st.waiting(status, Reason.WAITING_FOR_GPU_MEMORY, "full", now=at(30), generation=1)
    admitted_cond = find_condition(again["conditions"], "Admitted")
    assert admitted_cond is not None
    assert admitted_cond["lastTransitionTime"] == "2026-03-01T12:00:01Z"


def test_progress_is_written_only_when_it_moves() -> None:
    status = {"progress": {"documents": 10, "done": 3, "failed": 0, "summary": "3/10"}}
    assert st.progress(status, 10, 3, 0, now=at(0), generation=1) == {}
    patch = st.progress(status, 10, 7, 1, now=at(0), generation=1)
    assert patch["progress"] == {
        "documents": 10,
        "done": 7,
        "failed": 1,
        "summary": "7/10 (1 failed)",
    }


def lifecycle_until_running() -> dict[str, Any]:
    status: dict[str, Any] = {}
    status = merge(status, st.queued(status, PLAN, now=at(1), generation=1))
    status = merge(status, st.admitted(status, admission(), now=at(20), generation=1))
    status = merge(status, st.pod_created(status, "job-a1", now=at(21), generation=1))
    return merge(status, st.running(status, "job-a1", at(40), now=at(41), generation=1))


def test_admitted_records_the_reservation() -> None:
    status = lifecycle_until_running()
    assert status["admission"] == {
        "node": "gpu-b",
        "gpu": "0",
        "uuid": "GPU-1",
        "requiredMiB": 20480,
        "freeMiB": 24000,
        "decidedAt": "2026-03-01T12:00:20Z",
    }
    assert (status["phase"], status["workerPod"], status["startedAt"]) == (
        "Running",
        "job-a1",
        "2026-03-01T12:00:40Z",
    )
    assert condition_status(status, "Admitted") == "True"
    assert condition_status(status, "Running") == "True"


def test_succeeded() -> None:
    status = lifecycle_until_running()
    summary = Summary(
        documents=10, done=9, failed=1, by_label={"invoice": 9}, output_path="/o", pages=30
    )
    outcome = PodOutcome(Kind.SUCCEEDED, Reason.SUCCEEDED, "", None, 0, at(40), at(340), summary)
    status = merge(
        status, st.succeeded(status, outcome, now=at(341), generation=1, settings=SETTINGS)
    )
    assert status["phase"] == "Succeeded"
    assert status["message"] == "9 of 10 documents done, 1 failed"
    assert status["results"] == {"byLabel": {"invoice": 9}, "outputPath": "/o", "pages": 30}
    assert status["progress"]["summary"] == "9/10 (1 failed)"
    assert (status["gpuSeconds"], status["costUSD"], status["finishedAt"]) == (
        300.0,
        0.093,
        "2026-03-01T12:05:40Z",
    )
    assert condition_status(status, "Succeeded") == "True"
    assert condition_status(status, "Running") == "False"
    assert violations(status, status_schema()) == []


def test_retry_releases_the_claim_and_accrues_cost() -> None:
    status = lifecycle_until_running()
    failure = PodOutcome(
        Kind.FAILED, Reason.OOM_KILLED, "oom", Failure.OUT_OF_MEMORY, 137, at(40), at(140)
    )
    step = NextStep(
        True,
        Reason.RETRY_BACKOFF,
        "attempt 1 failed ...",
        2,
        Plan(25600, "oom-replan", "x1.25"),
        30.0,
        at(170),
    )
    status = merge(
        status,
        st.retrying(status, step, failure=failure, now=at(140), generation=1, settings=SETTINGS),
    )
    assert status["phase"] == Phase.QUEUED
    assert status["attempt"] == 2
    assert status["plan"]["requiredMiB"] == 25600
    assert status["queuedAt"] == "2026-03-01T12:02:50Z"
    assert "admission" not in status and "workerPod" not in status and "startedAt" not in status
    assert status["gpuSeconds"] == 100.0
    assert condition_status(status, "Admitted") == "False"
    assert find_condition(status["conditions"], "Running")["reason"] == "OOMKilled"  # type: ignore[index]
    assert violations(status, status_schema()) == []


def test_failed_after_running() -> None:
    status = lifecycle_until_running()
    patch = st.failed(
        status,
        Reason.DEADLINE_EXCEEDED,
        "too long",
        now=at(100),
        generation=1,
        settings=SETTINGS,
        gpu_seconds=60,
    )
    status = merge(status, patch)
    assert (status["phase"], status["reason"], status["gpuSeconds"]) == (
        "Failed",
        "DeadlineExceeded",
        60.0,
    )
    assert condition_status(status, "Failed") == "True"
    assert condition_status(status, "Running") == "False"
    assert violations(status, status_schema()) == []


def test_rejected_before_queueing() -> None:
    patch = st.rejected(
        {}, Reason.NEVER_FITS, "needs 47.1 GiB at int8", now=at(0), generation=1, settings=SETTINGS
    )
    status = merge({}, patch)
    assert (status["phase"], status["reason"]) == ("Failed", "NeverFits")
    assert condition_status(status, "Planned") == "False"
    assert condition_status(status, "Failed") == "True"
    assert condition_status(status, "Running") == "Unknown"
    assert violations(status, status_schema()) == []


def test_the_schema_check_can_fail() -> None:
    bad = {"phase": "Sleeping", "retryAt": "x", "admission": {"requiredMiB": "1"}}
    assert violations(bad, status_schema()) == [
        "status.phase: 'Sleeping' not in "
        "['Pending', 'Queued', 'Admitted', 'Running', 'Succeeded', 'Failed']",
        "status.retryAt: unknown field (pruned)",
        "status.admission.requiredMiB: str is not integer",
    ]


@pytest.mark.parametrize("generation", [None, 3])
def test_observed_generation(generation: int | None) -> None:
    patch = st.queued({}, PLAN, now=at(0), generation=generation)
    assert patch.get("observedGeneration") == generation
    assert all(c.get("observedGeneration") == generation for c in patch["conditions"])
