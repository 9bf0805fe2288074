"""Issue 9, section 1, against the real control plane: no job stays stuck without
saying why. Workers are the stand-in ``zopilot_dev.fakeworker``; the operator runs
worker pods as ServiceAccount ``zopilot-worker``, which a namespace only has once a
test creates it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from zopilot_dev import fakeworker
from zopilot_dev.builders import DocumentJobBuilder
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.operatorproc import OperatorProcess
from zopilot_dev.procs import wait_for
from zopilot_dev.waiting import event_reasons, get_job, wait_job, worker_pods

pytestmark = pytest.mark.cluster

WORKER_SA = "zopilot-worker"


@pytest.fixture(scope="module")
def operator(crd: LocalCluster, control_dir: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        crd,
        log_name="operator-stuck",
        worker_command=fakeworker.command(control_dir),
        worker_service_account=WORKER_SA,
        pod_unschedulable_s=3,
    )
    op.start()
    yield op
    op.stop()


def submit(c: LocalCluster, job: DocumentJobBuilder) -> None:
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump(job.obj()))


def job(ns: str, name: str, gpu: str = "2Gi") -> DocumentJobBuilder:
    return DocumentJobBuilder(name, ns).url(f"https://files.example/{name}.pdf").gpu_memory(gpu)


def create(c: LocalCluster, obj: dict[str, object]) -> None:
    c.kubectl("apply", "-f", "-", input=json.dumps(obj))


def service_account(ns: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": WORKER_SA, "namespace": ns},
    }


def test_a_missing_service_account_is_reported_then_retried_until_it_exists(
    operator: OperatorProcess, namespace: str
) -> None:
    c = operator.cluster
    submit(c, job(namespace, "early"))
    st = wait_job(c, namespace, "early", phase="Admitted", reason="PodCreateRefused")
    assert f'serviceaccount "{WORKER_SA}" not found' in st["message"], st
    running = {x["type"]: x for x in st["conditions"]}["Running"]
    assert (running["status"], running["reason"]) == ("False", "PodCreateRefused")
    assert "PodCreateRefused" in event_reasons(c, namespace, "early")
    create(c, service_account(namespace))
    wait_job(c, namespace, "early", phase="Succeeded")
    assert len(worker_pods(c, namespace, "early")) == 1


def test_a_pod_refused_by_policy_fails_with_the_apis_message_and_frees_the_gpu(
    operator: OperatorProcess, namespace: str
) -> None:
    c = operator.cluster
    create(c, service_account(namespace))
    limits = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "small", "namespace": namespace},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "1Gi"}}]},
    }
    create(c, limits)
    submit(c, job(namespace, "capped"))
    st = wait_job(c, namespace, "capped", phase="Failed")
    assert st["reason"] == "PodRejected", st
    assert "memory" in st["message"] and "1Gi" in st["message"], st
    assert worker_pods(c, namespace, "capped") == []


def test_a_recreated_job_never_adopts_the_pod_its_namesake_left_behind(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    create(c, service_account(namespace))
    script(namespace, "reborn", attempts={"1": {"exit": 0}})
    submit(c, job(namespace, "reborn"))
    old = wait_job(c, namespace, "reborn", phase="Succeeded")["workerPod"]
    c.kubectl("delete", "dj", "reborn", "-n", namespace, "--cascade=orphan", "--wait=true")
    # The garbage collector drops the owner reference; the pod stays.
    assert wait_for(
        lambda: not get_pod(c, namespace, old)["metadata"].get("ownerReferences"), timeout_s=60
    )
    release = script(namespace, "reborn", hold=True)
    submit(c, job(namespace, "reborn"))
    uid = get_job(c, namespace, "reborn")["metadata"]["uid"]
    st = wait_job(c, namespace, "reborn", phase="Running")
    assert st["workerPod"] != old
    owners = get_pod(c, namespace, st["workerPod"])["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners] == [uid]
    release.touch()
    wait_job(c, namespace, "reborn", phase="Succeeded")
    c.kubectl("delete", "pod", old, "-n", namespace)


def get_pod(c: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(c.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout))


def test_a_job_as_large_as_the_crd_allows_starts_and_its_spec_goes_with_it(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    create(c, service_account(namespace))
    script(namespace, "huge", attempts={"1": {"exit": 0}})
    big = DocumentJobBuilder("huge", namespace).gpu_memory("2Gi")
    # 1,000 URLs of 1 KiB: a 1 MB spec, 8x an env string's limit and past a ConfigMap's.
    # (The CRD allows 2 KiB URLs, but etcd stores no object over 1.5 MiB.)
    for i in range(1000):
        big.url(f"https://files.example/{i:04d}/" + "x" * (1024 - 27))
    c.kubectl("create", "-f", "-", input=yaml.safe_dump(big.obj()))
    uid = get_job(c, namespace, "huge")["metadata"]["uid"]
    wait_job(c, namespace, "huge", phase="Succeeded", timeout_s=120)
    configmaps = json.loads(
        c.kubectl(
            "get", "configmaps", "-n", namespace, "-l", f"zopilot.dev/job-uid={uid}", "-o", "json"
        ).stdout
    )["items"]
    assert len(configmaps) == 1 and "spec.json" in configmaps[0]["binaryData"]
    assert [o["uid"] for o in configmaps[0]["metadata"]["ownerReferences"]] == [uid]
    c.kubectl("delete", "dj", "huge", "-n", namespace, "--wait=true")
    assert wait_for(
        lambda: (
            c.kubectl(
                "get",
                "configmaps",
                "-n",
                namespace,
                "-l",
                f"zopilot.dev/job-uid={uid}",
                "-o",
                "name",
            ).stdout.strip()
            == ""
        ),
        timeout_s=60,
    )


def test_a_pod_the_scheduler_cannot_place_is_admitted_elsewhere_without_using_a_retry(
    operator: OperatorProcess, namespace: str
) -> None:
    c = operator.cluster
    create(c, service_account(namespace))
    nodes = sorted(
        c.kubectl(
            "get",
            "nodes",
            "-l",
            "nvidia.com/gpu.product",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ).stdout.split()
    )
    first = nodes[0]  # where best fit goes on idle GPUs (ties: node name)
    # A GPU pod the operator did not create takes every nvidia.com/gpu slot of that node.
    # It uses no GPU memory, so DCGM (and admission) see the node as free.
    squatter = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "squatter", "namespace": namespace},
        "spec": {
            "nodeName": first,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "resources": {
                        "requests": {"nvidia.com/gpu": "4"},
                        "limits": {"nvidia.com/gpu": "4"},
                    },
                }
            ],
        },
    }
    create(c, squatter)
    submit(c, job(namespace, "placed").retries(0))
    st = wait_job(c, namespace, "placed", phase="Succeeded", timeout_s=120)
    assert (st["attempt"], st["disruptions"], st["avoidNode"]) == (2, 1, first), st
    assert st["admission"]["node"] != first
    c.kubectl("delete", "pod", "squatter", "-n", namespace, "--wait=false")
