"""Real nodes for the local cluster: kubelet + containerd + runc + a bridge CNI.

Each real node is a real kubelet (built by ``dev/tools.sh``) on its own
containerd (Debian's, with runc and the ``containernetworking-plugins``), so a
pod there is a real container: its security context, image, volumes, memory
limit (OOMKilled), probes and termination message all come from the real
runtime. Nothing host-wide is changed, and everything lives under
``<state dir>/nodes``:

* **Network.** The containerds run inside one network namespace this cluster
  creates (pinned at ``nodes/netns``), so the bridge plugin's bridges, and the
  ``net.ipv4.ip_forward`` it turns on as a gateway, stay inside it. A veth
  pair links it to the host (``100.64.<slot>.1`` on the host side,
  ``.2`` inside); the host routes each node's pod subnet
  (``100.<96+i>.<slot>.0/24``) through it, so host processes (the operator,
  Prometheus, the kubelet's probes) reach pod IPs, and pods on different
  nodes reach each other. The routes go away with the veth.
* **Mounts.** ``nodes/`` is a shared bind mount of itself, so the mounts the
  kubelet makes for pod volumes and those containerd makes for root
  filesystems and sandbox network namespaces are seen by both, across
  restarts of either. The kubelet and containerd each run in a mount
  namespace of their own where ``<node dir>/varlib`` is bound over
  ``/var/lib``: the kubelet's root is ``/var/lib/kubelet`` for both (pod
  volume paths agree; socket paths stay short), the CNI result cache
  ``/var/lib/cni`` is the node's. The kubelet also gets the kernel settings
  it checks (``protectKernelDefaults``) bind-mounted from files and a
  ``/var/log`` of its own (container-log symlinks); containerd gets a
  ``/run`` of its own (shim sockets, runc state).
* **cgroups.** Each kubelet's pods live under its own cgroup root,
  ``/zopilot-<cluster id>-<node>``, in every hierarchy.

Real nodes are tainted ``zopilot.dev/real-node=true:NoSchedule``: only pods
that tolerate it run there (the operator does not, yet: its worker pods stay
on the simulated nodes and the development pod runner). The GPU node carries
the GPU operator's labels like the simulated RTX 4090 nodes and
``nvidia.com/gpu`` capacity and allocatable patched onto its status; its
GPU is simulated (accounting only: nothing is injected into containers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procs
from .ociarchive import PAUSE_IMAGE

log = logging.getLogger("zopilot.realnodes")

REAL_NODE_LABEL = "zopilot.dev/real-node"
REAL_NODE_TAINT = {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
# The toleration a pod needs to run on a real node.
REAL_NODE_TOLERATION = {"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
# protectKernelDefaults: what the kubelet expects; served from files in its mount namespace.
KERNEL_DEFAULTS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
CNI_BIN_DIR = Path("/usr/lib/cni")
# The kubelet's root as the kubelet and containerd see it: both have <node dir>/varlib
# bound over /var/lib, so the paths of pod volumes agree, and socket paths stay short.
KUBELET_ROOT = "/var/lib/kubelet"
CNI_PLUGINS = ("bridge", "host-local", "loopback")
HOST_TOOLS = ("containerd", "ctr", "runc", "ip", "unshare", "nsenter", "mount", "umount")


class RealNodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class RealNode:
    name: str
    index: int  # position among the real nodes: picks the pod subnet and bridge
    gpu: bool


def real_nodes(gpu_nodes: int, cpu_nodes: int) -> list[RealNode]:
    gpus = [RealNode(f"real-gpu-{i}", i, True) for i in range(gpu_nodes)]
    cpus = [RealNode(f"real-cpu-{i}", gpu_nodes + i, False) for i in range(cpu_nodes)]
    return gpus + cpus


def cluster_id(state_dir: Path) -> str:
    """8 hex digits naming this cluster's host objects (veth, cgroups)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class NodeNetwork:
    cid: str
    slot: int  # 0..255: the third octet of every address of this cluster

    @property
    def host_veth(self) -> str:
        return f"zph{self.cid}"

    @property
    def ns_veth(self) -> str:
        return f"zpn{self.cid}"

    @property
    def host_ip(self) -> str:
        return f"100.64.{self.slot}.1"

    @property
    def ns_ip(self) -> str:
        return f"100.64.{self.slot}.2"

    def pod_cidr(self, node: RealNode) -> str:
        if not 0 <= node.index < 32:
            raise RealNodeError("at most 32 real nodes")
        return f"100.{96 + node.index}.{self.slot}.0/24"

    @staticmethod
    def bridge(node: RealNode) -> str:
        return f"zbr{node.index}"


# ------------------------------------------------------------------ configs (pure)
def containerd_config(node_dir: Path, ns_ip: str, sandbox_image: str) -> str:
    d = node_dir
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""# Written by zopilot_dev.realnodes: everything under {d}
version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "{ns_ip}"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"
  SystemdCgroup = false
  Root = "{d}/runc"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{d}/cni/conf"
"""


def cni_conflist(node: RealNode, net: NodeNetwork, node_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "zopilot",
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge(node),
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node_dir / "cni" / "ipam"),
                    "ranges": [[{"subnet": net.pod_cidr(node)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def kubelet_config(
    node: RealNode,
    node_dir: Path,
    *,
    address: str,
    port: int,
    healthz_port: int,
    ca_file: str,
    cgroup_root: str,
) -> dict[str, Any]:
    sock = f"unix://{node_dir}/containerd.sock"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "failSwapOn": False,
        "containerRuntimeEndpoint": sock,
        "imageServiceEndpoint": sock,
        "address": address,
        "port": port,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "readOnlyPort": 0,
        "podLogsDir": str(node_dir / "pod-logs"),
        # In the kubelet's mount namespace /var/lib is <node dir>/varlib (see kubelet_argv).
        "volumePluginDir": f"{KUBELET_ROOT}/volume-plugins",
        "makeIPTablesUtilChains": False,
        # Checked, not written: the expected values are bind-mounted from files.
        "protectKernelDefaults": True,
        "authentication": {
            "x509": {"clientCAFile": ca_file},
            "webhook": {"enabled": True},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "Webhook"},
        "registerWithTaints": [REAL_NODE_TAINT],
        # A shared development machine: never evict for its disk or memory.
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "10s",
    }


def node_labels(node: RealNode, gpu_labels: dict[str, str]) -> dict[str, str]:
    labels = {REAL_NODE_LABEL: "true", "type": "real"}
    if node.gpu:
        labels.update(gpu_labels)
    return labels


def sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def private_bind_script(binds: Iterable[tuple[str, str]], exec_argv: list[str]) -> str:
    """sh script for a fresh mount namespace: bind SRC over DST without letting
    the bind propagate back to the host (the mount holding DST is made private
    in this namespace first, which matters on hosts whose mounts are shared),
    then exec the command."""
    lines = ["set -e"]
    for src, dst in binds:
        lines.append(f'mount --make-private "$(findmnt -n -o TARGET --target {sh_quote(dst)})"')
        # --rbind: with the mounts below SRC (pod volumes, after a restart).
        lines.append(f"mount --rbind {sh_quote(src)} {sh_quote(dst)}")
    lines.append("exec " + " ".join(sh_quote(a) for a in exec_argv))
    return "\n".join(lines)


# ------------------------------------------------------------------ host helpers
def _run(
    *argv: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, input=input)
    except FileNotFoundError:
        raise RealNodeError(f"{argv[0]} is not installed: run `bash dev/install-deps.sh`") from None
    if check and r.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def mounts_under(path: Path) -> list[str]:
    """Mount points at or under ``path`` in this mount namespace, deepest first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == prefix or mp.startswith(prefix + "/"):
                found.append(mp)
    return sorted(found, key=lambda m: (-m.count("/"), m), reverse=False)


def cgroup_hierarchies() -> list[Path]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split()[0] if right else ""
            if fstype in ("cgroup", "cgroup2"):
                out.append(Path(left.split()[4]))
    return out


def cgroups_named(prefix: str) -> list[Path]:
    """Top-level cgroup directories starting with ``prefix``, in every hierarchy."""
    found = []
    for h in cgroup_hierarchies():
        with contextlib.suppress(OSError):
            found += [p for p in h.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return found


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    # os.walk ignores directories that vanish meanwhile (runc removes them as containers exit).
    for d, _, _ in os.walk(root):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(x) for x in Path(d, "cgroup.procs").read_text().split()}
    return pids


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text``."""
    me = os.getpid()
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == me:
            continue
        with contextlib.suppress(OSError):
            if text in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"):
                out.append(int(p.name))
    return out


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def preflight() -> None:
    """Fail early, saying what to install or change, when real nodes cannot run here."""
    problems = []
    if os.geteuid() != 0:
        problems.append("they need root (network and mount namespaces, cgroups)")
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if missing:
        problems.append(f"missing commands: {', '.join(missing)}")
    missing_cni = [p for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()]
    if missing_cni:
        problems.append(f"missing CNI plugins in {CNI_BIN_DIR}: {', '.join(missing_cni)}")
    if not cgroup_hierarchies():
        problems.append("no cgroup filesystem is mounted")
    if problems:
        raise RealNodeError(
            "cannot start real nodes: "
            + "; ".join(problems)
            + ". Run `bash dev/install-deps.sh` as root (it installs containerd, runc, "
            "containernetworking-plugins, iproute2), or start without real nodes: "
            "`dev/cluster up --real-gpu-nodes 0 --real-cpu-nodes 0` (or ZOPILOT_REAL_NODES=0)."
        )


# ------------------------------------------------------------------ the nodes
class RealNodes:
    """Host side of this cluster's real nodes: set up, start, stop, tear down."""

    def __init__(
        self,
        state_dir: Path,
        nodes: list[RealNode],
        logs_dir: Path,
        image_cache: Path | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self._image_cache = image_cache
        self.root = self.state_dir / "nodes"
        self.nodes = nodes
        self.logs_dir = logs_dir
        self.cid = cluster_id(state_dir)

    @property
    def netns_file(self) -> Path:
        return self.root / "netns"

    def node_dir(self, node: RealNode) -> Path:
        return self.root / node.name

    def cgroup_root(self, node: RealNode) -> str:
        return f"/zopilot-{self.cid}-{node.name}"

    # ---------------------------------------------------------- host setup
    def setup_host(self) -> NodeNetwork:
        """Shared mount, network namespace + veth + routes, directories, cgroups."""
        longest = max(
            (self.node_dir(n) / "containerd.sock.ttrpc" for n in self.nodes),
            key=lambda p: len(str(p)),
        )
        if len(str(longest)) > 107:
            raise RealNodeError(
                f"the state dir is too deep for unix sockets ({longest} is over 107 characters): "
                "use a shorter --state-dir"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if not mounts_under(self.root):  # before the bind mount: renames must not cross it
            for node in self.nodes:
                self._restore_image_store(node)
        if str(self.root) not in mounts_under(self.root):
            _run("mount", "--bind", str(self.root), str(self.root))
        _run("mount", "--make-shared", str(self.root))
        net = self._setup_network()
        for node in self.nodes:
            self._setup_node_dirs(node, net)
            self._setup_cgroups(node)
        return net

    def _setup_network(self) -> NodeNetwork:
        self.netns_file.touch()
        if str(self.netns_file) not in mounts_under(self.netns_file):
            _run("unshare", f"--net={self.netns_file}", "true")
        start = int(self.cid, 16) % 200
        used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route").stdout
        for k in [*range(start, 256), *range(0, start)]:
            if f"100.64.{k}." in used or any(
                f"100.{96 + n.index}.{k}." in used for n in self.nodes
            ):
                continue
            net = NodeNetwork(self.cid, k)
            break
        else:
            raise RealNodeError("no free 100.64.x.0/24 subnet for the real nodes' veth")
        ns = ["nsenter", f"--net={self.netns_file}"]
        _run(
            "ip",
            "link",
            "add",
            net.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            net.ns_veth,
            "netns",
            str(self.netns_file),
        )
        _run("ip", "addr", "add", f"{net.host_ip}/24", "dev", net.host_veth)
        _run("ip", "link", "set", net.host_veth, "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "ip", "addr", "add", f"{net.ns_ip}/24", "dev", net.ns_veth)
        _run(*ns, "ip", "link", "set", net.ns_veth, "up")
        _run(*ns, "ip", "route", "add", "default", "via", net.host_ip)
        # Inside the namespace only: it routes between the nodes' bridges and the veth.
        _run(*ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        for node in self.nodes:
            _run("ip", "route", "add", net.pod_cidr(node), "via", net.ns_ip, "dev", net.host_veth)
        return net

    def _setup_node_dirs(self, node: RealNode, net: NodeNetwork) -> None:
        d = self.node_dir(node)
        for sub in (
            "containerd/root",
            "containerd/state",
            "containerd/opt",
            "run",
            "varlib",
            "runc",
            "cni/conf",
            "cni/ipam",
            "pod-logs",
            "kubelet/varlog",
            "kubelet/sysctl",
        ):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "containerd" / "config.toml").write_text(containerd_config(d, net.ns_ip, PAUSE_IMAGE))
        # Written in place (containerd 1.6 misses a conflist that is renamed into the dir).
        (d / "cni" / "conf" / "10-zopilot.conflist").write_text(
            json.dumps(cni_conflist(node, net, d), indent=1)
        )
        for key, value in KERNEL_DEFAULTS.items():
            (d / "kubelet" / "sysctl" / key.replace("/", ".")).write_text(value + "\n")

    def _setup_cgroups(self, node: RealNode) -> None:
        name = self.cgroup_root(node).strip("/")
        for h in cgroup_hierarchies():
            cg = h / name
            cg.mkdir(exist_ok=True)
            if (h / "cpuset.cpus").exists() and not (h / "cgroup.subtree_control").exists():
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (cg / f).read_text().strip():
                        (cg / f).write_text((h / f).read_text())
            ctl = cg / "cgroup.subtree_control"
            if ctl.exists() and (h / "cgroup.subtree_control").read_text().strip():
                for c in ("cpu", "cpuset", "io", "memory", "pids", "hugetlb"):
                    with contextlib.suppress(OSError):
                        ctl.write_text(f"+{c}")

    # ---------------------------------------------------------- processes
    def containerd_argv(self, node: RealNode) -> list[str]:
        d = self.node_dir(node)
        script = private_bind_script(
            [(str(d / "run"), "/run"), (str(d / "varlib"), "/var/lib")],
            ["containerd", "--config", str(d / "containerd" / "config.toml")],
        )
        return [
            "nsenter",
            f"--net={self.netns_file}",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "unchanged",
            "--",
            "sh",
            "-c",
            script,
        ]

    def kubelet_argv(
        self,
        node: RealNode,
        kubelet: Path,
        kubeconfig: str,
        net: NodeNetwork,
        labels: dict[str, str],
    ) -> list[str]:
        d = self.node_dir(node)
        binds = [
            (str(d / "kubelet" / "sysctl" / k.replace("/", ".")), f"/proc/sys/{k}")
            for k in KERNEL_DEFAULTS
        ]
        binds += [
            (str(d / "varlib"), "/var/lib"),
            (str(d / "kubelet" / "varlog"), "/var/log"),
        ]
        script = private_bind_script(
            binds,
            [
                str(kubelet),
                f"--config={d / 'kubelet' / 'config.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={KUBELET_ROOT}",
                f"--cert-dir={KUBELET_ROOT}/pki",
                f"--hostname-override={node.name}",
                f"--node-ip={net.host_ip}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            ],
        )
        return ["unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", script]

    def write_kubelet_config(
        self, node: RealNode, net: NodeNetwork, ca_file: str
    ) -> tuple[int, int]:
        import yaml

        port, healthz = procs.free_port(), procs.free_port()
        cfg = kubelet_config(
            node,
            self.node_dir(node),
            address=net.host_ip,
            port=port,
            healthz_port=healthz,
            ca_file=ca_file,
            cgroup_root=self.cgroup_root(node),
        )
        (self.node_dir(node) / "kubelet" / "config.yaml").write_text(yaml.safe_dump(cfg))
        return port, healthz

    def ctr(
        self, node: RealNode, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            "ctr",
            "-a",
            str(self.node_dir(node) / "containerd.sock"),
            "-n",
            "k8s.io",
            *args,
            check=check,
        )

    def wait_containerd(self, node: RealNode, pid: int, timeout_s: float = 60) -> None:
        def ready() -> bool:
            if not procs.alive(pid):
                raise RealNodeError(
                    f"containerd of {node.name} exited:\n"
                    f"{procs.tail(self.logs_dir / f'containerd-{node.name}.log')}"
                )
            return self.ctr(node, "version", check=False).returncode == 0

        if not procs.wait_for(ready, timeout_s=timeout_s, interval_s=0.1):
            raise RealNodeError(
                f"containerd of {node.name} did not answer within {timeout_s:.0f} s:\n"
                f"{procs.tail(self.logs_dir / f'containerd-{node.name}.log')}"
            )

    def import_images(
        self, node: RealNode, archives: Iterable[Path], always: Iterable[Path] = ()
    ) -> list[str]:
        """``ctr images import`` each archive not imported since it last changed, and
        each of ``always`` (the tiny pause and test images) every time: a kept image
        store that lists an image is not proof that the CRI can run it."""
        always = set(always)
        marker = self.node_dir(node) / "containerd" / "imported.json"
        try:
            seen: dict[str, dict[str, Any]] = json.loads(marker.read_text())
        except (OSError, ValueError):
            seen = {}
        present = set(self.ctr(node, "images", "ls", "-q").stdout.split())
        done = []
        for a in archives:
            st = a.stat()
            stamp = [st.st_mtime, st.st_size]
            prev = seen.get(str(a), {})
            if (
                a not in always
                and prev.get("stamp") == stamp
                and prev.get("names")
                and set(prev["names"]) <= present
            ):
                continue
            self.ctr(node, "images", "import", str(a))
            after = set(self.ctr(node, "images", "ls", "-q").stdout.split())
            seen[str(a)] = {"stamp": stamp, "names": sorted(after - present) or sorted(after)}
            present = after
            done.append(a.name)
        marker.write_text(json.dumps(seen))
        return done

    # ---------------------------------------------------------- teardown
    def stop_node_processes(self) -> None:
        """Kill every container, shim, containerd and kubelet of these nodes."""
        for name in self._cgroup_names():
            for cg in cgroups_named(name):
                _kill(_cgroup_pids(cg))
        _kill(processes_mentioning(str(self.root) + "/"))
        procs.wait_for(lambda: not processes_mentioning(str(self.root) + "/"), timeout_s=10)

    def _cgroup_names(self) -> list[str]:
        return [f"zopilot-{self.cid}-"]

    @property
    def image_cache(self) -> Path:
        """Where each node's image store waits between a ``down`` and the next ``up``
        (``<state dir>/node-images`` unless given: the cluster keeps it in the cache
        directory, so a fresh clone does not import the 6.9 GB worker image again)."""
        return self._image_cache or self.state_dir / "node-images"

    def _clear_containers(self, node_dir: Path) -> bool:
        """With containerd still up: stop the kubelet, delete every task and
        container; True when the image store is then clean enough to keep for
        the next ``up`` (importing a large image again would cost more than the
        whole bring-up)."""
        sock = node_dir / "containerd.sock"

        def ctr(*args: str) -> subprocess.CompletedProcess[str]:
            return _run("ctr", "-a", str(sock), "-n", "k8s.io", *args, check=False)

        if not sock.exists() or ctr("version").returncode != 0:
            return False
        _kill(processes_mentioning(str(node_dir / "kubelet" / "config.yaml")))
        for task in ctr("tasks", "ls", "-q").stdout.split():
            ctr("tasks", "delete", "--force", task)
        ids = ctr("containers", "ls", "-q").stdout.split()
        if ids:
            ctr("containers", "rm", *ids)
        return not ctr("containers", "ls", "-q").stdout.split()

    def _set_aside_image_store(self, node_dir: Path) -> None:
        # After the unmounts: a rename across the nodes/ bind mount would fail (EXDEV).
        keep = self.image_cache / node_dir.name
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        for name in ("root", "imported.json"):
            src = node_dir / "containerd" / name
            if src.exists():
                try:
                    src.rename(keep / name)
                except OSError as e:  # another filesystem (EXDEV): not worth a copy
                    log.info("not keeping %s's image store in %s: %s", node_dir.name, keep, e)
                    shutil.rmtree(keep, ignore_errors=True)
                    return

    def _restore_image_store(self, node: RealNode) -> None:
        keep = self.image_cache / node.name
        if not keep.is_dir():
            return
        dst = self.node_dir(node) / "containerd"
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("root", "imported.json"):
            if (keep / name).exists() and not (dst / name).exists():
                try:
                    (keep / name).rename(dst / name)
                except OSError as e:  # another filesystem (EXDEV): import afresh
                    log.info("not reusing the image store in %s: %s", keep, e)
                    break
        shutil.rmtree(keep, ignore_errors=True)

    def teardown(self) -> list[str]:
        """Remove everything this cluster's real nodes put on the host; return what is left.

        Each node's image store (containerd's root without containers) is kept
        under :attr:`image_cache` and reused by the next ``up``."""
        keep = []
        if self.root.is_dir():
            for node_dir in self.root.iterdir():
                configured = (node_dir / "containerd" / "config.toml").exists()
                if configured and self._clear_containers(node_dir):
                    keep.append(node_dir)
        self.stop_node_processes()
        # Mounts: deepest first; lazily, so a busy one cannot block the rest.
        for mp in mounts_under(self.root):
            _run("umount", "--lazy", mp, check=False)
        if not mounts_under(self.root):
            for node_dir in keep:
                self._set_aside_image_store(node_dir)
        for name in self._cgroup_names():
            for _ in range(50):
                left = cgroups_named(name)
                if not left:
                    break
                for cg in left:
                    _kill(_cgroup_pids(cg))
                    for d, _, _ in sorted(os.walk(cg), key=lambda w: -len(Path(w[0]).parts)):
                        with contextlib.suppress(OSError):
                            os.rmdir(d)
                    with contextlib.suppress(OSError):
                        cg.rmdir()
                time.sleep(0.1)
        # The veth (and with it the host routes) goes with the namespace, which
        # went with its last process and its pinning mount; delete the host end
        # explicitly in case something still holds the namespace.
        if self._has_veth():
            _run("ip", "link", "del", f"zph{self.cid}", check=False)
        if self.root.exists():
            for child in self.root.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        child.unlink()
            with contextlib.suppress(OSError):
                self.root.rmdir()
        return self.leftovers()

    def leftovers(self) -> list[str]:
        """What of this cluster's real nodes is still on the host (empty after teardown)."""
        left = [f"mount {m}" for m in mounts_under(self.root)]
        left += [f"process {p}" for p in processes_mentioning(str(self.root) + "/")]
        for name in self._cgroup_names():
            left += [f"cgroup {c}" for c in cgroups_named(name)]
        if self._has_veth():
            left.append(f"link zph{self.cid}")
        return left

    def _has_veth(self) -> bool:
        return Path("/sys/class/net", f"zph{self.cid}").exists()
