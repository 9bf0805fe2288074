"""The local control plane is the real thing: versions, RBAC, admission, controllers, scheduler."""

from __future__ import annotations

import json
import uuid

import pytest
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.config import REPO_ROOT
from zopilot_dev.procs import wait_for

pytestmark = pytest.mark.cluster


def test_server_reports_the_pinned_kubernetes_version(cluster: LocalCluster) -> None:
    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    env = (REPO_ROOT / "dev" / "versions.env").read_text()
    pinned = next(
        line.split("=")[1] for line in env.splitlines() if line.startswith("KUBE_VERSION=")
    )
    assert versions["serverVersion"]["gitVersion"] == pinned.strip()
    assert versions["clientVersion"]["gitVersion"] == pinned.strip()


def test_rbac_denies_an_unprivileged_service_account(cluster: LocalCluster) -> None:
    r = cluster.kubectl(
        "auth",
        "can-i",
        "list",
        "pods",
        "-n",
        "kube-system",
        "--as=system:serviceaccount:default:default",
        check=False,
    )
    assert r.stdout.strip() == "no"
    assert cluster.kubectl("auth", "can-i", "list", "pods").stdout.strip() == "yes"


def _namespace(cluster: LocalCluster, **labels: str) -> str:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    for k, v in labels.items():
        cluster.kubectl("label", "namespace", ns, f"{k}={v}")
    return ns


def test_pod_security_admission_rejects_a_privileged_pod(cluster: LocalCluster) -> None:
    ns = _namespace(cluster, **{"pod-security.kubernetes.io/enforce": "restricted"})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "priv", "namespace": ns},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "securityContext": {"privileged": True}}
            ]
        },
    }
    r = cluster.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert r.returncode != 0
    assert "violates PodSecurity" in r.stderr and "privileged" in r.stderr


def test_controllers_run_service_accounts_and_garbage_collection(cluster: LocalCluster) -> None:
    ns = _namespace(cluster)
    # The service-account controller gives every namespace its "default" SA.
    assert wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
        timeout_s=30,
    )
    # The garbage collector deletes dependents of a deleted owner.
    cluster.kubectl("create", "configmap", "owner", "-n", ns)
    owner_uid = cluster.kubectl(
        "get", "cm", "owner", "-n", ns, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    dep = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": ns,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(dep))
    cluster.kubectl("delete", "cm", "owner", "-n", ns)
    assert wait_for(
        lambda: cluster.kubectl("get", "cm", "dependent", "-n", ns, check=False).returncode != 0,
        timeout_s=30,
    )


def test_scheduler_places_a_gpu_pod_on_a_simulated_4090_and_it_runs(cluster: LocalCluster) -> None:
    ns = _namespace(cluster)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cuda", "namespace": ns},
        "spec": {
            # kwok's GPU nodes are tainted as simulated (zopilot_dev.nodes.SIMULATED_TAINT).
            "tolerations": [{"key": "zopilot.dev/simulated", "operator": "Exists"}],
            "containers": [
                {
                    "name": "c",
                    "image": "nvidia/cuda:12.4.0-base-ubuntu22.04",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    cluster.kubectl(
        "wait", "-n", ns, "--for=jsonpath={.status.phase}=Running", "pod/cuda", "--timeout=60s"
    )
    node = cluster.kubectl("get", "pod", "cuda", "-n", ns, "-o", "jsonpath={.spec.nodeName}").stdout
    labels = json.loads(
        cluster.kubectl("get", "node", node, "-o", "jsonpath={.metadata.labels}").stdout
    )
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-GeForce-RTX-4090"
    assert labels["nvidia.com/gpu.memory"] == "24564"
    assert labels["nvidia.com/gpu.present"] == "true"
    # ServiceAccount admission mounted the SA token into the pod.
    vols = cluster.kubectl(
        "get", "pod", "cuda", "-n", ns, "-o", "jsonpath={.spec.volumes[*].name}"
    ).stdout
    assert "kube-api-access" in vols


def test_a_pod_asking_for_more_gpus_than_any_node_has_stays_pending(cluster: LocalCluster) -> None:
    ns = _namespace(cluster)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "greedy", "namespace": ns},
        "spec": {
            "containers": [
                {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "99"}}}
            ]
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    assert wait_for(
        lambda: (
            "Insufficient nvidia.com/gpu"
            in cluster.kubectl(
                "get", "pod", "greedy", "-n", ns, "-o", "jsonpath={.status.conditions}"
            ).stdout
        ),
        timeout_s=30,
    )


def test_nodes_advertise_time_sliced_gpus_and_a_cpu_node_exists(cluster: LocalCluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    cfg = cluster.config
    real = [n for n in nodes if n["metadata"]["labels"].get("zopilot.dev/real-node") == "true"]
    kwok = [n for n in nodes if n["metadata"]["labels"].get("zopilot.dev/simulated") == "true"]
    assert len(real) + len(kwok) == len(nodes)
    for group, want_gpu, want_cpu in (
        (kwok, cfg.gpu_nodes, cfg.cpu_nodes),
        (real, cfg.real_gpu_nodes, cfg.real_cpu_nodes),
    ):
        gpu = [n for n in group if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
        assert len(gpu) == want_gpu and len(group) - len(gpu) == want_cpu
    gpu = [n for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
    for n in gpu:
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == str(cluster.config.gpu_replicas)
        assert n["metadata"]["labels"]["nvidia.com/gpu.replicas"] == str(
            cluster.config.gpu_replicas
        )
