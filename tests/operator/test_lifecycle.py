"""A job's whole life through the pure core, the way the handlers will drive it.

Each step applies the returned status patch as the API server would (merge
patch) and feeds the result to the next step, with no cluster.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from zopilot_operator import status as st
from zopilot_operator.errors import PermanentError, RetriableError
from zopilot_operator.gpus import NodeInfo, node_info
from zopilot_operator.lifecycle import Update, on_attempt, on_created, on_pod_create_refused
from zopilot_operator.podbuilder import worker_pod_name
from zopilot_operator.reasons import EventType, Reason
from zopilot_operator.reservations import claim_from_job
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
POD_A1 = worker_pod_name("march", 1, "uid-finance-march")


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
    assert pod_name == worker_pod_name("march", 1, "uid-finance-march")
    assert re.fullmatch(r"march-[0-9a-f]{6}-a1", pod_name)

    # After kube.create_pod the handler records the pod (the status helper it calls).
    job = apply(job, Update(st.pod_created(job["status"], pod_name, now=at(12), generation=1)))
    pending = on_attempt(job, PodBuilder.of(job).created(at(12)).obj(), at(13), SETTINGS, None)
    assert pending.patch["conditions"][-1]["reason"] == Reason.POD_PENDING
    job = apply(job, pending)

    running = on_attempt(job, PodBuilder.of(job).running(at(20)).obj(), at(21), SETTINGS, None)
    job = apply(job, running)
    assert (job["status"]["phase"], job["status"]["startedAt"]) == (
        "Running",
        "2026-03-01T12:00:20Z",
    )
    assert (
        on_attempt(job, PodBuilder.of(job).running(at(20)).obj(), at(30), SETTINGS, None)
        == Update()
    )

    summary = json.dumps({"documents": 2, "done": 2, "failed": 0, "byLabel": {"invoice": 2}})
    done_pod = (
        PodBuilder.of(job).terminated(0, started=at(20), finished=at(120), message=summary).obj()
    )
    done = on_attempt(job, done_pod, at(121), SETTINGS, None)
    job = apply(job, done)
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["results"] == {"byLabel": {"invoice": 2}}
    assert job["status"]["gpuSeconds"] == 100.0
    assert done.events[0].type == EventType.NORMAL
    # Finished jobs are left alone.
    assert on_attempt(job, done_pod, at(200), SETTINGS, None) == Update()


def test_cuda_oom_is_retried_with_more_gpu_memory_after_backoff() -> None:
    job = apply(
        classify_job(gpuMemory="16Gi"),
        on_created(classify_job(gpuMemory="16Gi"), INFOS, at(0), SETTINGS),
    )
    job = admit(job, 10)
    job["status"]["workerPod"] = POD_A1
    oom_pod = PodBuilder.of(job).terminated(76, started=at(20), finished=at(80)).obj()

    update = on_attempt(job, oom_pod, at(81), SETTINGS, RTX_4090_MIB)
    job = apply(job, update)
    assert update.events[0].reason == Reason.GPU_OUT_OF_MEMORY
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
    assert manifest is not None
    assert manifest["metadata"]["name"] == worker_pod_name("march", 2, "uid-finance-march")


def test_permanent_worker_failure_fails_the_job() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    job["status"]["workerPod"] = POD_A1
    pod = (
        PodBuilder.of(job)
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
    job["status"]["workerPod"] = POD_A1
    update = on_attempt(job, None, at(50), SETTINGS, RTX_4090_MIB)
    assert apply(job, update)["status"]["reason"] == Reason.RETRY_BACKOFF
    assert update.create_pod is None


def test_stuck_pod_is_deleted_and_retried() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    job["status"]["workerPod"] = POD_A1
    stuck = PodBuilder.of(job).created(at(10)).waiting("ContainerCreating").obj()
    update = on_attempt(job, stuck, at(2000), SETTINGS, RTX_4090_MIB)
    assert update.delete_pod == POD_A1
    assert apply(job, update)["status"]["attempt"] == 2


def test_existing_pod_without_status_record_is_recorded() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    update = on_attempt(job, PodBuilder.of(job).created(at(11)).obj(), at(12), SETTINGS, None)
    assert update.patch["workerPod"] == POD_A1
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


# ------------------------------------------------- pod creation refused (issue 9)
NO_SA = (
    'create pod finance/march-a1: pods "march-a1" is forbidden: error looking up service '
    'account finance/worker: serviceaccount "worker" not found'
)


def admitted_job(now_s: float = 10) -> dict[str, Any]:
    return admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), now_s)


def test_a_retriable_refusal_shows_on_the_job_and_is_retried_with_backoff() -> None:
    job = admitted_job()
    update = on_pod_create_refused(job, RetriableError(NO_SA, delay_s=30), at(11), SETTINGS)
    job = apply(job, update)
    status = job["status"]
    # Still Admitted (holding its GPU), but the reason is on the job for everyone to see.
    assert (status["phase"], status["reason"]) == ("Admitted", "PodCreateRefused")
    assert 'serviceaccount "worker" not found' in status["message"]
    running = next(c for c in status["conditions"] if c["type"] == "Running")
    assert (running["status"], running["reason"]) == ("False", "PodCreateRefused")
    assert update.events[0].reason == Reason.POD_CREATE_REFUSED
    # Not tried again before the backoff ends ...
    assert on_attempt(job, None, at(40), SETTINGS, RTX_4090_MIB) == Update()
    # ... then tried again; a second refusal backs off twice as long.
    assert on_attempt(job, None, at(41), SETTINGS, RTX_4090_MIB).create_pod is not None
    again = on_pod_create_refused(job, RetriableError(NO_SA, delay_s=30), at(41), SETTINGS)
    assert apply(job, again)["status"]["podCreateRetryAt"] == "2026-03-01T12:01:41Z"
    assert again.events == ()  # one event per streak of refusals, not per try
    # Once created, the refusal record is gone.
    recorded = st.pod_created(job["status"], "march-a1", now=at(50), generation=1)
    created = apply(job, Update(recorded))
    assert "podCreateFailures" not in created["status"]


def test_a_permanent_refusal_fails_with_the_apis_message_and_releases_the_gpu() -> None:
    job = admitted_job()
    invalid = PermanentError(
        'create pod finance/march-a1: Pod "march-a1" is invalid: spec.containers[0].resources'
        '.requests: Invalid value: "16Gi": must be less than or equal to memory limit of 1Gi',
        reason="Invalid",
    )
    job = apply(job, on_pod_create_refused(job, invalid, at(11), SETTINGS))
    status = job["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PodRejected")
    assert "must be less than or equal to memory limit of 1Gi" in status["message"]
    assert claim_from_job(job) is None


def test_a_refusal_that_outlasts_the_pending_timeout_fails_the_attempt() -> None:
    job = admitted_job()
    quota = RetriableError("create pod: exceeded quota: gpus", delay_s=30)
    job = apply(job, on_pod_create_refused(job, quota, at(11), SETTINGS))
    late = 10 + SETTINGS.pod_pending_timeout_s + 1
    job = apply(job, on_pod_create_refused(job, quota, at(late), SETTINGS))
    status = job["status"]
    # The claim ends (back to Queued for attempt 2 after its backoff), and the reason stays.
    assert (status["phase"], status["attempt"], status["reason"]) == ("Queued", 2, "RetryBackoff")
    assert "PodCreateRefused" in status["message"] and "exceeded quota" in status["message"]
    assert claim_from_job(job) is None and "podCreateFailures" not in status


# ------------------------------------------------------ pod adoption (issue 9)
def orphan_of_namesake(job: dict[str, Any]) -> dict[str, Any]:
    """A pod at this attempt's name left behind by a deleted job of the same name
    (``kubectl delete --cascade=orphan``: the garbage collector removed its owner)."""
    pod = PodBuilder.of(job).terminated(0, started=at(1), finished=at(2), message="{}").obj()
    pod["metadata"]["ownerReferences"] = []
    pod["metadata"]["labels"]["zopilot.dev/job-uid"] = "uid-of-the-deleted-job"
    return pod


def test_a_pod_the_job_does_not_own_is_never_adopted() -> None:
    job = admitted_job()
    update = on_attempt(job, orphan_of_namesake(job), at(12), SETTINGS, RTX_4090_MIB)
    failed = apply(job, update)["status"]
    assert (failed["phase"], failed["reason"]) == ("Failed", "PodNameTaken"), failed
    assert "workerPod" not in failed and update.delete_pod is None  # not ours to delete
    # Recorded or not: a pod that is not ours is never followed either.
    job["status"]["workerPod"] = POD_A1
    followed = apply(job, on_attempt(job, orphan_of_namesake(job), at(12), SETTINGS, None))
    assert followed["status"]["reason"] == "PodNameTaken"


def test_a_recreated_job_of_the_same_name_gets_pods_of_its_own() -> None:
    old, new = JobBuilder("march", "finance").obj(), JobBuilder("march", "finance").obj()
    new["metadata"]["uid"] = "uid-of-the-new-march"
    for attempt in (1, 2):
        assert worker_pod_name("march", attempt, old["metadata"]["uid"]) != worker_pod_name(
            "march", attempt, new["metadata"]["uid"]
        )


# ------------------------------------------ host OOM and disruptions (issue 9)
def test_oom_killed_raises_the_host_memory_request_not_the_gpu_plan() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    gpu_plan = job["status"]["plan"]["requiredMiB"]
    job["status"]["workerPod"] = POD_A1
    killed = PodBuilder.of(job).terminated(137, reason="OOMKilled", started=at(20), finished=at(80))
    update = on_attempt(job, killed.obj(), at(81), SETTINGS, RTX_4090_MIB, largest_host_mib=65536)
    job = apply(job, update)
    status = job["status"]
    assert update.events[0].reason == Reason.OOM_KILLED
    assert (status["phase"], status["attempt"]) == ("Queued", 2)
    assert status["plan"]["requiredMiB"] == gpu_plan  # GPU memory was not the problem
    assert status["hostMemoryMiB"] == 20480  # 16Gi x 1.25
    assert "memory request raised to 20.0 GiB (was 16.0 GiB)" in status["message"]
    # The next attempt's pod asks for it (the status survives operator restarts).
    job = admit(job, 200)
    manifest = on_attempt(job, None, at(201), SETTINGS, RTX_4090_MIB).create_pod
    assert manifest is not None
    assert manifest["spec"]["containers"][0]["resources"]["requests"]["memory"] == "20480Mi"


def test_oom_killed_at_the_largest_nodes_memory_fails_saying_so() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    job["status"].update(workerPod=POD_A1, hostMemoryMiB=65536)
    killed = PodBuilder.of(job).terminated(137, reason="OOMKilled", started=at(20), finished=at(80))
    status = apply(
        job, on_attempt(job, killed.obj(), at(81), SETTINGS, None, largest_host_mib=65536)
    )["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "OOMKilled")
    assert "out of host memory at a 64.0 GiB memory request" in status["message"]


def evicted(job: dict[str, Any]) -> dict[str, Any]:
    return PodBuilder.of(job).pod_reason("Evicted", "The node was low on resource: memory.").obj()


def drained(job: dict[str, Any]) -> dict[str, Any]:
    pod = PodBuilder.of(job).terminated(143, started=at(20), finished=at(30)).obj()
    pod["status"]["conditions"] = [
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    ]
    return pod


def test_evictions_and_drains_do_not_use_up_retries() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    job["spec"]["retries"] = 0  # no retries at all: only disruptions may come back
    for n, disrupted in enumerate((evicted, drained), start=1):
        job["status"]["workerPod"] = PodBuilder.of(job).obj()["metadata"]["name"]
        job = apply(job, on_attempt(job, disrupted(job), at(100 * n), SETTINGS, RTX_4090_MIB))
        status = job["status"]
        assert (status["phase"], status["disruptions"]) == ("Queued", n), status
        assert "does not use up spec.retries" in status["message"]
        job = admit(job, 100 * n + 50)
    # A node that is gone takes the pod with it: a disruption too.
    job["status"]["workerPod"] = PodBuilder.of(job).obj()["metadata"]["name"]
    job = apply(job, on_attempt(job, None, at(400), SETTINGS, None, node_gone=True))
    assert (job["status"]["disruptions"], job["status"]["reason"]) == (3, "RetryBackoff")
    assert "node gpu-a is gone" in job["status"]["message"]
    # A real failure still has the job's one attempt (retries: 0) to spend.
    job = admit(job, 500)
    job["status"]["workerPod"] = PodBuilder.of(job).obj()["metadata"]["name"]
    crashed = PodBuilder.of(job).terminated(1, started=at(510), finished=at(520)).obj()
    job = apply(job, on_attempt(job, crashed, at(521), SETTINGS, None))
    assert (job["status"]["phase"], job["status"]["reason"]) == ("Failed", "WorkerFailed")
    assert job["status"]["message"].endswith("no retries left (1 of 1 attempts)")


# --------------------------------------- admission and the scheduler agree (issue 9)
def test_an_unschedulable_pod_is_given_up_and_admitted_elsewhere_without_a_retry() -> None:
    job = admit(apply(classify_job(), on_created(classify_job(), INFOS, at(0), SETTINGS)), 10)
    job["spec"]["retries"] = 0
    assert job["status"]["admission"]["node"] == "gpu-a"
    job["status"]["workerPod"] = POD_A1
    # The scheduler counts what admission did not (a GPU pod of someone else's, a
    # terminating pod, CPU or memory requests): the pod cannot go where it was admitted.
    stuck = (
        PodBuilder.of(job)
        .created(at(11))
        .unschedulable("0/3 nodes are available: 1 Insufficient nvidia.com/gpu.")
        .obj()
    )
    assert on_attempt(job, stuck, at(11 + 30), SETTINGS, None).patch.get("phase") is None
    update = on_attempt(job, stuck, at(11 + 61), SETTINGS, None)  # pod_unschedulable_s: 60
    assert update.delete_pod == POD_A1
    job = apply(job, update)
    status = job["status"]
    assert (status["phase"], status["attempt"], status["disruptions"]) == ("Queued", 2, 1)
    assert status["avoidNode"] == "gpu-a"
    assert "Insufficient nvidia.com/gpu" in status["message"]
    # Admitted elsewhere at once, though gpu-a would win the tie by name.
    job = admit(job, 80)
    assert (job["status"]["phase"], job["status"]["admission"]["node"]) == ("Admitted", "gpu-b")


def test_an_avoided_node_is_still_used_when_no_other_fits() -> None:
    job = JobBuilder("march", "finance").queued(4096).status(avoidNode="gpu-a").obj()
    only_a = [NodeBuilder("gpu-a").obj()]
    round_ = admission_round([job], only_a, [sample("gpu-a", RTX_4090_MIB)], at(10), SETTINGS)
    assert [a.node for a in round_.admitted] == ["gpu-a"]
