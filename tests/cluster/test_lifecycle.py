"""`up` is idempotent and `down` leaves nothing behind (a throwaway cluster of its own).

"Nothing" is checked on the host, for everything a real node creates:
processes, mounts, network namespaces, cgroups, network devices (the veth;
the bridges live inside the cluster's network namespace), sockets and
directories at the runtime's hard-coded paths under /run and /var, and the
host's ``net.ipv4.ip_forward``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.config import ClusterConfig
from zopilot_dev.ociarchive import TESTBOX_IMAGE
from zopilot_dev.procs import wait_for
from zopilot_dev.realnodes import (
    REAL_NODE_TOLERATION,
    cgroups_named,
    cluster_id,
    mounts_under,
    processes_mentioning,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Where containerd, runc, CNI and the kubelet write by default; real nodes must not.
DEFAULT_RUNTIME_PATHS = [
    "/run/containerd",
    "/run/netns",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/opt/containerd",
]


def _processes_mentioning(path: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(path) in line and "ps -eo" not in line]


def _host_snapshot() -> dict[str, object]:
    def listing(p: str) -> list[str] | None:
        return sorted(os.listdir(p)) if os.path.isdir(p) else None

    return {
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "runtime paths": {p: listing(p) for p in DEFAULT_RUNTIME_PATHS},
    }


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _netns_holders(inode: str) -> list[str]:
    held = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "ns" / "net") == inode:
                    held.append(p.name)
            except OSError:
                continue
    with open("/proc/self/mountinfo") as f:
        held += [line.split()[4] for line in f if inode in line]
    return held


def test_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    cfg = ClusterConfig(
        name="zopilot-lifecycle",
        state_dir=tmp_path / "c",
        gpu_nodes=1,
        cpu_nodes=1,
        real_gpu_nodes=1,
        real_cpu_nodes=1,
    )
    cid = cluster_id(cfg.state_dir)
    before = _host_snapshot()
    c = LocalCluster(cfg)
    try:
        first = c.up()
        pids = dict(first.pids)
        assert {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok-controller",
            "prometheus",
            "dcgm-exporter",
            "containerd-real-gpu-0",
            "kubelet-real-gpu-0",
            "containerd-real-cpu-0",
            "kubelet-real-cpu-0",
            "hostproxy",
        } <= set(pids)
        again = LocalCluster(cfg).up()  # a second `up` from a new process view
        assert again.pids == pids, "a second up must reuse the running cluster"
        # Everything binds to loopback, but the forwarder that pods on the real nodes
        # reach the API server and Prometheus through: it binds to the cluster's veth.
        assert again.apiserver_url.startswith("https://127.0.0.1:")
        assert again.prometheus_url.startswith("http://127.0.0.1:")
        proxy_argv = Path(f"/proc/{pids['hostproxy']}/cmdline").read_bytes().split(b"\0")
        listen = proxy_argv[proxy_argv.index(b"--listen") + 1].decode()
        assert listen.startswith("100.64.") and listen.endswith(".1")
        assert _processes_mentioning(cfg.state_dir)

        # A running pod on a real node: a shim, a sandbox netns, a bridge, cgroups.
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper", "namespace": "default"},
            "spec": {
                "tolerations": [REAL_NODE_TOLERATION],
                "nodeSelector": {"kubernetes.io/hostname": "real-cpu-0"},
                "containers": [
                    {
                        "name": "main",
                        "image": TESTBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "args": ["sleep"],
                    }
                ],
            },
        }
        _run_sleeper(c, pod)
        netns = os.readlink(f"/proc/{pids['containerd-real-cpu-0']}/ns/net")
        assert netns != os.readlink("/proc/self/ns/net"), "containerd must run in its own netns"
        assert f"zph{cid}" in _links()
        assert mounts_under(cfg.state_dir) and cgroups_named(f"zopilot-{cid}-")
        # The bridge, and ip_forward on, exist only inside the cluster's namespace.
        inside = subprocess.run(
            ["nsenter", f"--net=/proc/{pids['containerd-real-cpu-0']}/ns/net", "ip", "-o", "link"],
            capture_output=True,
            text=True,
        ).stdout
        assert "zbr1" in inside and "zbr1" not in _links()
        assert _host_snapshot() == before
    finally:
        LocalCluster(cfg).down()
    assert _processes_mentioning(cfg.state_dir) == []
    assert processes_mentioning(str(cfg.state_dir)) == []
    assert mounts_under(cfg.state_dir) == []
    assert cgroups_named(f"zopilot-{cid}-") == []
    assert f"zph{cid}" not in _links()
    assert wait_for(lambda: _netns_holders(netns) == [], timeout_s=10), _netns_holders(netns)
    assert _host_snapshot() == before
    assert (cfg.state_dir / "last-logs" / "kube-apiserver.log").exists()
    assert (cfg.state_dir / "last-logs" / "kubelet-real-cpu-0.log").exists()

    # The image store was set aside without containers (in the cache, outside the
    # state dir); the next up reuses it.
    cache = c._real().image_cache
    assert not str(cache).startswith(str(cfg.state_dir))
    assert (cache / "real-cpu-0" / "root").is_dir()
    c = LocalCluster(cfg)
    try:
        c.up()
        _run_sleeper(c, pod)
    finally:
        c.down()
    assert mounts_under(cfg.state_dir) == [] and cgroups_named(f"zopilot-{cid}-") == []
    assert _host_snapshot() == before
    # This throwaway cluster's cached image stores go too.
    shutil.rmtree(cache)
    assert not cache.exists()


def _run_sleeper(c: LocalCluster, pod: dict[str, object]) -> None:
    c.kubectl("apply", "-f", "-", input=json.dumps(pod))
    c.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=90s")
