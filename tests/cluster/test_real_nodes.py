"""Real nodes: pods there are real containers (kubelet + containerd + runc + bridge CNI).

Each test runs the local test image (``localhost/zopilot/testbox:dev``, one
static binary built from dev/testbox) on the session cluster's real nodes,
which are tainted so that only pods tolerating ``zopilot.dev/real-node`` land
there. What is checked comes from the real runtime: the security context as
the kernel applies it, the termination message, OOM kills, probes, pod
networking, volumes, and pods surviving restarts of the node's components.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.config import RTX_4090_PRODUCT
from zopilot_dev.ociarchive import TESTBOX_IMAGE
from zopilot_dev.procs import wait_for
from zopilot_dev.realnodes import REAL_NODE_LABEL, REAL_NODE_TOLERATION

pytestmark = pytest.mark.cluster

GPU_NODE = "real-gpu-0"
CPU_NODE = "real-cpu-0"

HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module")
def real(cluster: LocalCluster) -> LocalCluster:
    names = {n.name for n in cluster.real_node_list}
    if not {GPU_NODE, CPU_NODE} <= names:
        pytest.skip("this cluster was brought up without real nodes (ZOPILOT_REAL_NODES=0)")
    return cluster


@pytest.fixture
def ns(real: LocalCluster) -> Iterator[str]:
    name = f"rn-{uuid.uuid4().hex[:8]}"
    real.kubectl("create", "namespace", name)
    yield name
    real.kubectl("delete", "namespace", name, "--wait=false")


def pod(
    name: str,
    args: list[str],
    *,
    node: str | None = CPU_NODE,
    memory: str = "64Mi",
    extra: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "tolerations": [REAL_NODE_TOLERATION],
        "nodeSelector": {"kubernetes.io/hostname": node} if node else {REAL_NODE_LABEL: "true"},
        "containers": [
            {
                "name": "main",
                "image": TESTBOX_IMAGE,
                "imagePullPolicy": "Never",
                "args": args,
                "securityContext": HARDENED,
                "resources": {"limits": {"memory": memory, "cpu": "200m"}},
                **(container or {}),
            }
        ],
        **(extra or {}),
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def apply(c: LocalCluster, ns: str, obj: dict[str, Any]) -> None:
    c.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))


def get_pod(c: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(c.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout))


def wait_pod(
    c: LocalCluster, ns: str, name: str, ok: Any, what: str, timeout_s: float = 90
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.clear()
        seen.update(get_pod(c, ns, name))
        return bool(ok(seen))

    if not wait_for(check, timeout_s=timeout_s, interval_s=0.25):
        events = c.kubectl("get", "events", "-n", ns, check=False).stdout
        raise AssertionError(
            f"pod {ns}/{name} not {what} within {timeout_s} s; status: "
            f"{json.dumps(seen.get('status'), indent=1)}\nevents:\n{events}"
        )
    return seen


def phase(p: str) -> Any:
    return lambda pod: pod.get("status", {}).get("phase") == p


def ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["status"]["containerStatuses"][0]["state"]["terminated"])


def test_a_hardened_pod_succeeds_with_its_termination_message(real: LocalCluster, ns: str) -> None:
    apply(real, ns, pod("hardened", ["inspect"], memory="32Mi"))
    p = wait_pod(real, ns, "hardened", phase("Succeeded"), "Succeeded")
    term = terminated(p)
    # Written by the container to /dev/termination-log, reported by the runtime.
    assert term["message"] == "uid=10001 rootfs=EROFS capeff=0000000000000000 seccomp=2 nnp=1"
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert p["spec"]["nodeName"] == CPU_NODE
    assert p["status"]["podIP"].startswith("100.")
    # The container's own output, read through the API server from the kubelet.
    logs = real.kubectl("logs", "hardened", "-n", ns).stdout
    assert "rootfs=EROFS" in logs


def test_a_memory_hog_is_oom_killed(real: LocalCluster, ns: str) -> None:
    apply(real, ns, pod("hog", ["hog", "512"], memory="48Mi"))
    p = wait_pod(real, ns, "hog", phase("Failed"), "Failed")
    term = terminated(p)
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137


def _server(name: str, node: str) -> dict[str, Any]:
    return pod(
        name,
        ["serve", ":8080"],
        node=node,
        container={
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
        },
    )


def test_readiness_probe_pod_to_pod_and_host_to_pod(real: LocalCluster, ns: str) -> None:
    apply(real, ns, _server("web", GPU_NODE))
    web = wait_pod(real, ns, "web", ready, "Ready (HTTP readiness probe)")
    ip = web["status"]["podIP"]
    # From a pod on the other real node, across the bridges.
    apply(real, ns, pod("client", ["get", f"http://{ip}:8080/"], node=CPU_NODE))
    wait_pod(real, ns, "client", phase("Succeeded"), "Succeeded")
    assert real.kubectl("logs", "client", "-n", ns).stdout.strip() == "ok web"
    # From the host, as the operator and Prometheus reach worker pods.
    assert httpx.get(f"http://{ip}:8080/", timeout=5).text.strip() == "ok web"


def test_a_gpu_pod_lands_on_the_real_gpu_node(real: LocalCluster, ns: str) -> None:
    node = json.loads(real.kubectl("get", "node", GPU_NODE, "-o", "json").stdout)
    replicas = str(real.config.gpu_replicas)
    assert node["status"]["capacity"]["nvidia.com/gpu"] == replicas
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == replicas
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == RTX_4090_PRODUCT
    assert labels["nvidia.com/gpu.replicas"] == replicas
    assert "zopilot.dev/simulated" not in labels  # a real kubelet, not a kwok node
    gpu_pod = pod(
        "cuda", ["inspect"], node=None, container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    )
    apply(real, ns, gpu_pod)
    p = wait_pod(real, ns, "cuda", phase("Succeeded"), "Succeeded")
    assert p["spec"]["nodeName"] == GPU_NODE
    # The DCGM stand-in serves the real GPU node's (simulated) GPU too.
    assert GPU_NODE in {g["node"] for g in real.gpus()}


def test_a_hostpath_pvc_is_a_real_mount(real: LocalCluster, ns: str) -> None:
    d = real.create_volume(ns, "docs")
    d.chmod(0o777)
    (d / "input.txt").write_text("from the host\n")
    volumes = {"volumes": [{"name": "docs", "persistentVolumeClaim": {"claimName": "docs"}}]}
    mount = {"volumeMounts": [{"name": "docs", "mountPath": "/data"}]}
    apply(real, ns, pod("reader", ["cat", "/data/input.txt"], extra=volumes, container=mount))
    apply(
        real,
        ns,
        pod("writer", ["write", "/data/out.txt", "from the pod"], extra=volumes, container=mount),
    )
    for name in ("reader", "writer"):
        wait_pod(real, ns, name, phase("Succeeded"), "Succeeded")
    assert real.kubectl("logs", "reader", "-n", ns).stdout == "from the host\n"
    assert (d / "out.txt").read_text() == "from the pod"
    assert (d / "out.txt").stat().st_uid == 10001


def _running_container(p: dict[str, Any]) -> tuple[str, int]:
    cs = p["status"]["containerStatuses"][0]
    assert "running" in cs["state"], cs
    return cs["containerID"], cs["restartCount"]


def _node_ready(c: LocalCluster, name: str) -> bool:
    out = c.kubectl(
        "get", "node", name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
    ).stdout
    return out == "True"


@pytest.mark.slow
@pytest.mark.parametrize("component", ["kubelet", "containerd"])
def test_a_running_pod_survives_a_node_component_restart(
    real: LocalCluster, ns: str, component: str
) -> None:
    apply(real, ns, _server("steady", CPU_NODE))
    before = wait_pod(real, ns, "steady", ready, "Ready")
    ip = before["status"]["podIP"]
    container = _running_container(before)
    real.restart_real_node_component(component, CPU_NODE)
    assert wait_for(lambda: _node_ready(real, CPU_NODE), timeout_s=60)
    # The same container keeps running and serving; the node takes new pods.
    after = wait_pod(real, ns, "steady", ready, "Ready after the restart")
    assert _running_container(after) == container
    assert httpx.get(f"http://{ip}:8080/", timeout=5).text.strip() == "ok steady"
    apply(real, ns, pod("next", ["inspect"], node=CPU_NODE))
    wait_pod(real, ns, "next", phase("Succeeded"), "Succeeded after the restart")


@pytest.mark.slow
def test_an_api_server_restart_does_not_wedge_the_nodes(real: LocalCluster, ns: str) -> None:
    apply(real, ns, _server("before", GPU_NODE))
    wait_pod(real, ns, "before", ready, "Ready")
    real.restart_apiserver()
    # The kubelets re-list and go on: a new pod on each real node runs to completion.
    for node in (GPU_NODE, CPU_NODE):
        assert wait_for(lambda node=node: _node_ready(real, node), timeout_s=60)  # type: ignore[misc]
        apply(real, ns, pod(f"after-{node}", ["inspect"], node=node))
    for node in (GPU_NODE, CPU_NODE):
        wait_pod(real, ns, f"after-{node}", phase("Succeeded"), "Succeeded after the restart")
    # Deleting a pod still reaches its kubelet, which stops the container.
    real.kubectl("delete", "pod", "before", "-n", ns, "--timeout=60s")


def test_kwok_leaves_real_node_pods_to_their_kubelet(real: LocalCluster, ns: str) -> None:
    # No such image on the node: only a real kubelet reports that; kwok's pod
    # stages would have marked the pod Running.
    missing = pod("missing", ["inspect"], container={"image": "localhost/zopilot/absent:dev"})
    apply(real, ns, missing)
    p = wait_pod(
        real,
        ns,
        "missing",
        lambda p: (
            (p["status"].get("containerStatuses") or [{}])[0]
            .get("state", {})
            .get("waiting", {})
            .get("reason")
            == "ErrImageNeverPull"
        ),
        "waiting with ErrImageNeverPull",
    )
    assert p["status"]["phase"] == "Pending"


def test_the_dcgm_stand_in_follows_a_worker_pod_on_the_real_gpu_node(
    real: LocalCluster, ns: str
) -> None:
    worker = pod("worker", ["sleep"], node=GPU_NODE)
    worker["metadata"]["labels"] = {"app.kubernetes.io/name": "zopilot-worker"}
    worker["metadata"]["annotations"] = {"zopilot.dev/required-mib": "3072"}

    def used() -> int:
        return int(next(g["used_mib"] for g in real.gpus() if g["node"] == GPU_NODE))

    apply(real, ns, worker)
    wait_pod(real, ns, "worker", phase("Running"), "Running")
    assert wait_for(lambda: used() == 3072, timeout_s=30)
    real.kubectl("delete", "pod", "worker", "-n", ns, "--timeout=60s")
    assert wait_for(lambda: used() == 0, timeout_s=30)
