"""A job's whole life through the pure core, the way the handlers will drive it.

Each step applies the returned status patch as the API server would (merge
patch) and feeds the result to the next step, with no cluster.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from zopilot_operator import status as st
from zopilot_operator.gpus import NodeInfo, node_info
from zopilot_operator.lifecycle import Update, on_attempt, on_created
from zopilot_operator.reasons import EventType, Reason
from zopilot_operator.scheduler import admission_round, round_updates
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import (
    RTX_4090_MIB,
    JobBuilder,
    NodeBuilder,
    PodBuilder,
    at,
    merge_patch,
    sample,
)

SETTINGS = OperatorSettings()
NODES = [NodeBuilder("gpu-a").obj(), NodeBuilder("gpu-b").obj(), NodeBuilder("cpu").no_gpu().obj()]
INFOS: list[NodeInfo] = [i for i in (node_info(n) for n in NODES) if i]


def apply(job: dict[str, Any], update: Update) -> dict[str, Any]:
    """Merge ``update.patch`` into the job's status (None deletes, objects merge)."""

    job = copy.deepcopy(job)
    job["status"] = merge_patch(job.get("status") or {}, update.patch)
    return job


def classify_job(name: str = "march", **spec: Any) -> dict[str, Any]:
    """A classify job on mistral-7b-instruct at nf4 (5.5 GiB); ``spec`` overrides fields."""
    classify = {"labels": ["invoice", "receipt"], "model": "mistral-7b-instruct"}
    classify.update(spec.pop("classify", {}))
    return JobBuilder(name, "finance").spec(tasks=["classify"], classify=classify, **spec).obj()


def admit(job: dict[str, Any], now_s: float, free: int = RTX_4090_MIB) -> dict[str, Any]:
    samples = [
        sample("gpu-a", free, sampled_at=at(now_s)),
        sample("gpu-b", free, sampled_at=at(now_s)),
    ]
    round_ = admission_round([job], NODES, samples, at(now_s), SETTINGS)
    updates = round_updates(round_, [job], at(now_s))
    return apply(job, updates["finance/march"])


def test_happy_path() -> None:
    job = classify_job(gpuMemory="12Gi")
    created = on_created(job, INFOS, at(1), SETTINGS)
    assert created.events[0].reason == Reason.QUEUED
    job = apply(job, created)
    assert job["status"]["phase"] == "Queued"

    job = admit(job, 10)
    assert job["status"]["phase"] == "Admitted"
    assert job["status"]["admission"]["node"] == "gpu-a"  # tie: first by name

    start = on_attempt(job, None, at(11), SETTINGS, RTX_4090_MIB)
    assert start.create_pod is not None and start.patch == {}
    pod_name = start.create_pod["metadata"]["name"]
    assert pod_name == "march-a1"

    # After kube.create_pod the handler records the pod (the status helper it calls).
    job = apply(job, Update(st.pod_created(job["status"], pod_name, now=at(12), generation=1)))
    pending = on_attempt(
        job, PodBuilder(pod_name, "finance").created(at(12)).obj(), at(13), SETTINGS, None
    )
    assert pending.patch["conditions"][-1]["reason"] == Reason.POD_PENDING
    job = apply(job, pending)

    running = on_attempt(job, PodBuilder(pod_name).running(at(20)).obj(), at(21), SETTINGS, None)
    job = apply(job, running)
    assert (job["status"]["phase"], job["status"]["startedAt"]) == (
        "Running",
        "2026-03-01T12:00:20Z",
    )
    assert (
        on_attempt(job, PodBuilder(pod_name).running(at(20)).obj(), at(30), SETTINGS, None)
        == Update()
    )

    summary = json.dumps({"documents": 2, "done": 2, "failed": 0, "byLabel": {"invoice": 2}})
    done_pod = (
        PodBuilder(pod_name).terminated(0, started=at(20), finished=at(120), message=summary).obj()
    )
    done = on_attempt(job, done_pod, at(121), SETTINGS, None)
    job = apply(job, done)
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["results"] == {"byLabel": {"invoice": 2}}
    assert job["status"]["gpuSeconds"] == 100.0
    assert done.events[0].type == EventType.NORMAL
    # Finished jobs are left alone.
    assert on_attempt(job, done_pod, at(200), SETTINGS, None) == Update()


def test_oom_is_retried_with_more_memory_after_backoff() -> None:
    job = apply(
        classify_job(gpuMemory="16Gi"),
        on_created(classify_job(gpuMemory="16Gi"), INFOS, at(0), SETTINGS),
    )
    job = admit(job, 10)
    job["status"]["workerPod"] = "march-a1"
    oom_pod = (
        PodBuilder("march-a1")
        .terminated(137, reason="OOMKilled", started=at(20), finished=at(80))
        .obj()
    )

    update = on_attempt(job, oom_pod, at(81), SETTINGS, RTX_4090_MIB)
    job = apply(job, update)
    assert update.events[0].reason == Reason.OOM_KILLED
    assert (job["status"]["phase"], job["status"]["attempt"]) == ("Queued", 2)
    assert job["status"]["plan"]["requiredMiB"] == 20480  # 16384 x 1.25
    assert "admission" not in job["status"]

    # Backoff: 30 s after the failure at 81 s, the job sits rounds out...
    round_ = admission_round(
        [job], NODES, [sample("gpu-a", RTX_4090_MIB, sampled_at=at(100))], at(100), SETTINGS
    )
    assert [d.key for d in round_.deferred] == ["finance/march"]
    assert round_updates(round_, [job], at(100)) == {}
    # ...then comes back with the grown plan, as attempt 2 with its own pod name.
    job = admit(job, 120)
    assert job["status"]["admission"]["requiredMiB"] == 20480
    manifest = on_attempt(job, None, at(121), SETTINGS, RTX_4090_MIB).create_pod
    assert manifest is not None and manifest["metadata"]["name"] == "march-a2"


def test_permanent_worker_failure_fails_the_job() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    job["status"]["workerPod"] = "march-a1"
    pod = (
        PodBuilder("march-a1")
        .terminated(2, started=at(20), finished=at(30), message='{"message": "model missing"}')
        .obj()
    )
    job = apply(job, on_attempt(job, pod, at(31), SETTINGS, RTX_4090_MIB))
    assert (job["status"]["phase"], job["status"]["reason"]) == ("Failed", "WorkerPermanentError")
    assert (
        job["status"]["message"]
        == "attempt 1 failed: WorkerPermanentError: worker exited with code 2: model missing"
    )


def test_deleted_pod_is_retried() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    job["status"]["workerPod"] = "march-a1"
    update = on_attempt(job, None, at(50), SETTINGS, RTX_4090_MIB)
    assert apply(job, update)["status"]["reason"] == Reason.RETRY_BACKOFF
    assert update.create_pod is None


def test_stuck_pod_is_deleted_and_retried() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    job["status"]["workerPod"] = "march-a1"
    stuck = PodBuilder("march-a1", "finance").created(at(10)).unschedulable("0/3 nodes").obj()
    update = on_attempt(job, stuck, at(2000), SETTINGS, RTX_4090_MIB)
    assert update.delete_pod == "march-a1"
    assert apply(job, update)["status"]["attempt"] == 2


def test_existing_pod_without_status_record_is_recorded() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    update = on_attempt(job, PodBuilder("march-a1").created(at(11)).obj(), at(12), SETTINGS, None)
    assert update.patch["workerPod"] == "march-a1"
    assert update.create_pod is None


def test_int8_mixtral_is_rejected_at_once_with_numbers() -> None:
    job = classify_job(classify={"model": "mixtral-8x7b-instruct", "quantization": "int8"})
    update = on_created(job, INFOS, at(0), SETTINGS)
    status = apply(job, update)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "NeverFits")
    assert " at int8; largest GPU offers 23.0 GiB" in status["message"]
    assert update.events[0].type == EventType.WARNING


def test_unknown_model_and_invalid_spec_are_rejected() -> None:
    unknown = classify_job(classify={"model": "gpt-9"})
    assert (
        apply(unknown, on_created(unknown, INFOS, at(0), SETTINGS))["status"]["reason"]
        == "UnknownModel"
    )
    invalid = JobBuilder("bad").spec(tasks=["classify"]).obj()
    assert (
        apply(invalid, on_created(invalid, INFOS, at(0), SETTINGS))["status"]["reason"]
        == "InvalidSpec"
    )


def test_without_gpu_nodes_a_job_queues_and_waits_with_a_reason() -> None:
    job = classify_job()
    job = apply(job, on_created(job, [], at(0), SETTINGS))
    assert job["status"]["phase"] == "Queued"
    round_ = admission_round([job], [NodeBuilder("cpu").no_gpu().obj()], [], at(5), SETTINGS)
    update = round_updates(round_, [job], at(5))["finance/march"]
    assert update.patch["reason"] == Reason.NO_MATCHING_GPU
    assert update.events[0].type == EventType.WARNING
    # The same reason again next round: nothing to write, no new event.
    job = apply(job, update)
    assert round_updates(round_, [job], at(15)) == {}


def test_created_twice_is_a_no_op() -> None:
    job = apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS))
    assert on_created(job, INFOS, at(5), SETTINGS) == Update()


def test_default_mixtral_at_nf4_never_fits_a_4090() -> None:
    # The predecessor's model: ~26 GB at 4-bit; an RTX 4090 has 24 GiB.
    job = classify_job(classify={"model": "mixtral-8x7b-instruct"})
    status = apply(job, on_created(job, INFOS, at(0), SETTINGS))["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "NeverFits")
    assert status["message"].startswith("needs 25.1 GiB at nf4; largest GPU offers 23.0 GiB")
