"""Operator against the real control plane, real Prometheus and simulated GPUs:
admission, lifecycle, retries, crash consistency. Workers here are the stand-in
``zopilot_dev.fakeworker`` (scripted exit codes); the real worker runs in
test_integration_e2e.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from zopilot_common.spec import parse_quantity_bytes
from zopilot_dev import fakeworker
from zopilot_dev.builders import DocumentJobBuilder
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.operatorproc import OperatorProcess
from zopilot_dev.procs import wait_for
from zopilot_dev.waiting import event_reasons, get_job, job_status, wait_job, worker_pods

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(crd: LocalCluster, control_dir: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        crd, log_name="operator-admission", worker_command=fakeworker.command(control_dir)
    )
    op.start()
    yield op
    op.stop()


def submit(c: LocalCluster, job: DocumentJobBuilder) -> None:
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump(job.obj()))


def job(ns: str, name: str, gpu: str = "2Gi") -> DocumentJobBuilder:
    return DocumentJobBuilder(name, ns).url(f"https://files.example/{name}.pdf").gpu_memory(gpu)


def test_every_phase_is_walked_with_conditions_and_events(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    release = script(namespace, "walk", hold=True)
    submit(c, job(namespace, "walk"))
    st = wait_job(c, namespace, "walk", phase="Running")
    # No finalizer: a job stays deletable while no operator runs.
    assert not get_job(c, namespace, "walk")["metadata"].get("finalizers")
    assert st["admission"]["requiredMiB"] == 2048 and st["admission"]["node"].startswith(
        "gpu-4090-"
    )
    assert st["plan"]["source"] == "spec.gpuMemory"
    release.touch()
    st = wait_job(c, namespace, "walk", phase="Succeeded")
    conds = {x["type"]: x for x in st["conditions"]}
    assert conds["Planned"]["status"] == conds["Admitted"]["status"] == "True"
    assert conds["Succeeded"]["status"] == "True" and conds["Running"]["status"] == "False"
    assert all(x["observedGeneration"] == 1 and x["lastTransitionTime"] for x in conds.values())
    assert st["gpuSeconds"] >= 0 and st["costUSD"] >= 0 and st["finishedAt"]
    assert st["progress"]["summary"] == "1/1"
    reasons = event_reasons(c, namespace, "walk")
    for r in ("Queued", "Admitted", "PodCreated", "Running", "Succeeded"):
        assert r in reasons, reasons
    table = c.kubectl("get", "dj", "walk", "-n", namespace).stdout
    assert "Succeeded" in table and "gpu-4090-" in table
    # The operator's own metrics reach the real Prometheus.
    assert wait_for(
        lambda: float(c.query("zopilot_operator_admissions_total")[0]["value"][1]) >= 1,
        timeout_s=30,
    )


def test_progress_of_a_running_worker_shows_on_the_job(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    release = script(namespace, "slow", hold=True, progress={"total": 5, "done": 3, "failed": 1})
    submit(c, job(namespace, "slow"))
    wait_job(c, namespace, "slow", phase="Running")
    assert wait_for(
        lambda: job_status(c, namespace, "slow").get("progress", {}).get("done") == 3, timeout_s=30
    )
    st = job_status(c, namespace, "slow")
    assert st["phase"] == "Running"
    assert st["progress"]["documents"] == 5 and st["progress"]["failed"] == 1
    assert "3/5" in c.kubectl("get", "dj", "slow", "-n", namespace).stdout
    release.touch()
    wait_job(c, namespace, "slow", phase="Succeeded")


def test_best_fit_packs_10_and_12_together_20_alone_and_8_waits(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    releases = {n: script(namespace, n, hold=True) for n in ("j1-10g", "j2-12g", "j3-20g", "j4-8g")}
    # One apply, so the three arrive together (as a batch would). Admitted one
    # round apart instead, 12 could land beside 10 only once 10's memory shows
    # in DCGM *and* has settled (reservation_settle_s): until then the operator
    # counts it twice, on purpose (never under-count), and best fit may differ.
    c.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all(
            [
                job(namespace, n, f"{g}Gi").obj()
                for n, g in (("j1-10g", 10), ("j2-12g", 12), ("j3-20g", 20))
            ]
        ),
    )
    nodes = {
        n: wait_job(c, namespace, n, phase="Running")["admission"]["node"]
        for n in ("j1-10g", "j2-12g", "j3-20g")
    }
    assert nodes["j1-10g"] == nodes["j2-12g"] != nodes["j3-20g"]
    submit(c, job(namespace, "j4-8g", "8Gi"))
    st = wait_job(c, namespace, "j4-8g", reason="WaitingForGPUMemory")
    assert st["phase"] == "Queued"
    assert "needs 8.0 GiB" in st["message"] and "no GPU has that much free" in st["message"]
    releases["j1-10g"].touch()
    wait_job(c, namespace, "j1-10g", phase="Succeeded")
    st = wait_job(c, namespace, "j4-8g", phase="Running")
    assert st["admission"]["node"] == nodes["j2-12g"]
    for r in releases.values():
        r.touch()


def test_a_job_that_can_never_fit_fails_at_once_with_numbers(
    operator: OperatorProcess, namespace: str
) -> None:
    c = operator.cluster
    submit(
        c,
        DocumentJobBuilder("huge", namespace)
        .url("https://x/a.pdf")
        .classify(["a", "b"], model="mixtral-8x7b-instruct", quantization="int8"),
    )
    st = wait_job(c, namespace, "huge", phase="Failed")
    assert st["reason"] == "NeverFits"
    assert "at int8" in st["message"] and "largest GPU offers 23.0 GiB" in st["message"]
    assert "24.0 GiB less the 1.0 GiB safety margin" in st["message"]
    assert worker_pods(c, namespace, "huge") == []


def test_an_unknown_model_fails_with_the_known_names(
    operator: OperatorProcess, namespace: str
) -> None:
    c = operator.cluster
    submit(
        c,
        DocumentJobBuilder("gpt", namespace)
        .url("https://x/a.pdf")
        .classify(["a", "b"], model="gpt-17"),
    )
    st = wait_job(c, namespace, "gpt", phase="Failed")
    assert st["reason"] == "UnknownModel"
    assert "gpt-17" in st["message"] and "mixtral-8x7b-instruct" in st["message"]


def test_prometheus_down_blocks_admission_until_it_is_back(
    operator: OperatorProcess, namespace: str
) -> None:
    c = operator.cluster
    c.stop_component("prometheus")
    try:
        submit(c, job(namespace, "blind"))
        st = wait_job(c, namespace, "blind", reason="MetricsUnavailable")
        assert st["phase"] == "Queued" and "admission" not in st
    finally:
        c.start_component("prometheus")
    wait_job(c, namespace, "blind", phase="Succeeded")


def test_stale_metrics_are_not_trusted(operator: OperatorProcess, namespace: str) -> None:
    c = operator.cluster
    for gpu in c.state.gpus:
        c.set_gpu(str(gpu["node"]), frozen=True)
    try:
        assert wait_for(
            lambda: (
                min(
                    float(s["value"][1]) for s in c.query("time() - timestamp(DCGM_FI_DEV_FB_FREE)")
                )
                > 6
            ),
            timeout_s=30,
        )
        submit(c, job(namespace, "stale"))
        st = wait_job(c, namespace, "stale", reason="MetricsStale")
        assert st["phase"] == "Queued" and "old" in st["message"]
    finally:
        c.reset_gpus()
    wait_job(c, namespace, "stale", phase="Succeeded")


def test_retriable_exit_is_retried_and_permanent_exit_fails(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    script(namespace, "flaky", attempts={"1": {"exit": 75}, "2": {"exit": 0}})
    script(namespace, "broken", attempts={"1": {"exit": 2}})
    submit(c, job(namespace, "flaky"))
    submit(c, job(namespace, "broken"))
    st = wait_job(c, namespace, "flaky", phase="Succeeded")
    assert st["attempt"] == 2
    assert len(worker_pods(c, namespace, "flaky")) == 2
    st = wait_job(c, namespace, "broken", phase="Failed")
    assert st["attempt"] == 1 and st["reason"] == "WorkerPermanentError", st


def test_cuda_oom_replans_gpu_memory_and_oom_killed_raises_the_memory_request(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    script(namespace, "oom", attempts={"1": {"oom": True}, "2": {"exit": 0}})
    script(namespace, "cuda-oom", attempts={"1": {"exit": 76}, "2": {"exit": 0}})
    submit(c, job(namespace, "oom", "4Gi"))
    submit(c, job(namespace, "cuda-oom", "4Gi"))
    # CUDA out of memory (exit 76): more GPU memory.
    st = wait_job(c, namespace, "cuda-oom", phase="Succeeded")
    assert st["attempt"] == 2 and st["plan"]["requiredMiB"] > 4096
    assert "GPUOutOfMemory" in event_reasons(c, namespace, "cuda-oom")
    # OOMKilled is the host's OOM killer: the same GPU plan, a larger memory request.
    st = wait_job(c, namespace, "oom", phase="Succeeded")
    assert st["attempt"] == 2 and st["plan"]["requiredMiB"] == 4096
    assert st["hostMemoryMiB"] == 20480  # the operator's 16Gi request x 1.25
    assert "OOMKilled" in event_reasons(c, namespace, "oom")
    second = [
        p for p in worker_pods(c, namespace, "oom") if p["metadata"]["name"] == st["workerPod"]
    ]
    memory = second[0]["spec"]["containers"][0]["resources"]["requests"]["memory"]
    assert parse_quantity_bytes(memory) == 20480 * 1024 * 1024  # the API writes "20Gi"


def test_deleting_a_job_removes_its_pod_and_frees_the_gpu(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    script(namespace, "doomed", hold=True)
    submit(c, job(namespace, "doomed", "6Gi"))
    node = wait_job(c, namespace, "doomed", phase="Running")["admission"]["node"]
    assert wait_for(
        lambda: any(g["node"] == node and g["used_mib"] >= 6144 for g in c.gpus()), timeout_s=30
    ), "the simulated DCGM should show the pod's memory"
    c.kubectl("delete", "dj", "doomed", "-n", namespace)
    assert wait_for(lambda: worker_pods(c, namespace, "doomed") == [], timeout_s=60)
    assert wait_for(
        lambda: all(g["used_mib"] == 0 for g in c.gpus() if g["node"] == node), timeout_s=30
    )


def test_sigkill_right_after_creating_the_pod_still_yields_one_pod(
    operator: OperatorProcess, namespace: str
) -> None:
    c = operator.cluster
    operator.stop()
    try:
        operator.start({"ZOPILOT_OPERATOR_TEST_CRASH_AFTER_POD_CREATE": "1"})
        submit(c, job(namespace, "crash"))
        assert operator.wait_exit(60), "the operator should have killed itself after the create"
        assert len(worker_pods(c, namespace, "crash")) == 1
        assert "workerPod" not in job_status(c, namespace, "crash")
    finally:
        operator.stop()
        operator.start()
    wait_job(c, namespace, "crash", phase="Succeeded")
    assert len(worker_pods(c, namespace, "crash")) == 1
