"""Bring the local cluster up and down, idempotently, and inspect it.

kwokctl's binary runtime runs the real control plane from the binaries
``dev/tools.sh`` builds (etcd, kube-apiserver with RBAC and admission,
kube-controller-manager, kube-scheduler, kwok-controller); we add the real
Prometheus, the DCGM stand-in and (optionally) the development pod runner,
create the simulated (kwok) nodes, and start the real nodes (a kubelet on
containerd each; see realnodes.py). Component logs go to kwokctl's log
directory, the real nodes' to ``<state dir>/logs``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import yaml

from . import images, nodes, ociarchive, procs, prometheus, realnodes
from .config import POD_UID, REPO_ROOT, ClusterConfig, ClusterState, default_cache_dir

log = logging.getLogger("zopilot.cluster")

OWN_COMPONENTS = ("dcgm-exporter", "prometheus", "podrunner", "hostproxy")
# Local images every real node gets, built from dev/tools.sh's binaries.
LOCAL_IMAGES = {
    "pause": (ociarchive.PAUSE_IMAGE, ""),
    "testbox": (ociarchive.TESTBOX_IMAGE, "10001"),
}


class ClusterError(RuntimeError):
    pass


def tools_bin_dir(build: bool = True) -> Path:
    """Directory with kubectl, helm, kwokctl... (builds missing ones when ``build``)."""
    cmd = ["bash", str(REPO_ROOT / "dev" / "tools.sh")] + ([] if build else ["--print"])
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    path = Path(out.strip().splitlines()[-1])
    return path if build else path / "current"


class LocalCluster:
    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self._state: ClusterState | None = ClusterState.load(self.config.state_file)

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> ClusterState:
        if self._state is None:
            raise ClusterError("the local cluster is not up: run dev/cluster up")
        return self._state

    @property
    def logs_dir(self) -> Path:
        # kwokctl writes its component logs here; ours go next to them.
        return self.config.kwok_workdir / "clusters" / self.config.name / "logs"

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/operator processes against this cluster."""
        return {
            "KUBECONFIG": self.state.kubeconfig,
            "PATH": f"{self.state.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # ------------------------------------------------------------ real nodes
    @property
    def real_node_list(self) -> list[realnodes.RealNode]:
        if self._state is not None and self._state.real_nodes:
            return [
                realnodes.RealNode(name, int(n["index"]), bool(n["gpu"]))
                for name, n in self._state.real_nodes["nodes"].items()
            ]
        return realnodes.real_nodes(self.config.real_gpu_nodes, self.config.real_cpu_nodes)

    def _real(self) -> realnodes.RealNodes:
        return realnodes.RealNodes(
            self.config.state_dir,
            self.real_node_list,
            self.config.logs_dir,
            image_cache=default_cache_dir() / "node-images" / self.config.name,
        )

    def _net(self) -> realnodes.NodeNetwork:
        return realnodes.NodeNetwork(
            realnodes.cluster_id(self.config.state_dir), int(self.state.real_nodes["slot"])
        )

    def _real_node(self, name: str) -> realnodes.RealNode:
        for n in self.real_node_list:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.real_node_list) or "none"
        raise ClusterError(f"no real node {name!r}; real nodes: {known}")

    def image_archives(self) -> list[Path]:
        """OCI archives of the local pause and test images, imported on every ``up``."""
        out_dir = self.config.state_dir / "images"
        out_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = Path(self.state.bin_dir)
        archives = []
        for binary, (name, user) in LOCAL_IMAGES.items():
            data = ociarchive.binary_image(name, bin_dir / binary, user=user)
            path = out_dir / f"{binary}.oci.tar"
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
            archives.append(path)
        return archives

    @staticmethod
    def images_for(node: realnodes.RealNode, names: Iterable[str]) -> list[str]:
        """Which of the project's images a real node gets: the worker (6.9 GB) only
        where workers run, the GPU nodes; the operator and the fake worker everywhere."""
        return [n for n in names if node.gpu or n != images.WORKER]

    def _saved_project_archives(self) -> dict[str, Path]:
        """The archives ``dev/images.sh save`` last wrote (``ZOPILOT_NODE_IMAGES=1`` at ``up``)."""
        if os.environ.get("ZOPILOT_NODE_IMAGES", "") not in ("1", "true", "yes"):
            return {}
        archives = {name: images.archive_path(name) for name in images.IMAGES}
        return {name: path for name, path in archives.items() if path.exists()}

    def load_images(self, names: Sequence[str] = images.IMAGES) -> dict[str, list[str]]:
        """Put the project's images on the real nodes that run them (:meth:`images_for`):
        build what changed and export it (``dev/images.sh save``), then import each
        archive a node does not have yet. Idempotent; node -> archives imported now.

        The import goes through containerd's own ``ctr images import`` (no
        registry is reachable here); pods use ``imagePullPolicy: Never``.
        """
        unknown = sorted(set(names) - set(images.IMAGES))
        if unknown:
            raise ClusterError(f"unknown images {unknown}; known: {', '.join(images.IMAGES)}")
        nodes_ = self.real_node_list
        if not nodes_:
            raise ClusterError(
                "this cluster has no real nodes to load images into "
                "(started with --real-gpu-nodes 0 --real-cpu-nodes 0?)"
            )
        saved = images.save_oci()
        missing = sorted(set(names) - set(saved))
        if missing:
            raise ClusterError(f"dev/images.sh save did not list {missing}")
        rn, done = self._real(), {}
        for n in nodes_:
            wanted = [saved[name] for name in self.images_for(n, names)]
            t0 = time.monotonic()
            imported = rn.import_images(n, wanted)
            if imported:
                log.info(
                    "%s: imported %s in %.0f s",
                    n.name,
                    ", ".join(imported),
                    time.monotonic() - t0,
                )
            done[n.name] = imported
        return done

    def start_containerd(self, name: str, *, wait: bool = True) -> None:
        node, rn = self._real_node(name), self._real()
        key = f"containerd-{name}"
        pid = procs.start(key, rn.containerd_argv(node), self.config.logs_dir)
        self.state.pids[key] = pid
        self.state.save(self.config.state_file)
        if wait:
            rn.wait_containerd(node, pid)

    def start_kubelet(self, name: str) -> None:
        node, rn, st = self._real_node(name), self._real(), self.state
        labels = realnodes.node_labels(node, nodes.gpu_labels(self.config.gpu_replicas))
        argv = rn.kubelet_argv(
            node, Path(st.bin_dir) / "kubelet", st.kubeconfig, self._net(), labels
        )
        st.pids[f"kubelet-{name}"] = procs.start(f"kubelet-{name}", argv, self.config.logs_dir)
        st.save(self.config.state_file)

    def restart_real_node_component(self, component: str, name: str) -> None:
        """Stop and start a real node's kubelet or containerd (its pods' containers
        and shims keep running, as on a real node)."""
        if component not in ("kubelet", "containerd"):
            raise ClusterError(f"unknown node component {component!r}: kubelet or containerd")
        pid = self.state.pids.pop(f"{component}-{name}", None)
        if pid is not None:
            procs.stop(pid)
        if component == "kubelet":
            self.start_kubelet(name)
        else:
            self.start_containerd(name)

    def restart_apiserver(self) -> None:
        """Kill the API server and start it again with the same command line (a
        control-plane restart, as in an upgrade); wait until it is ready."""
        st = self.state
        pid = st.pids["kube-apiserver"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        cwd = Path(f"/proc/{pid}/cwd").resolve()
        procs.stop(pid, group=False)  # kwokctl's child: not a group leader
        st.pids["kube-apiserver"] = procs.start(
            "kube-apiserver", [a.decode() for a in argv], self.logs_dir, cwd=cwd
        )
        st.save(self.config.state_file)
        ok = procs.wait_for(
            lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0,
            timeout_s=120,
        )
        if not ok:
            raise ClusterError(
                "the API server did not come back:\n"
                + procs.tail(self.logs_dir / "kube-apiserver.log")
            )

    def _start_real_nodes(self, bin_dir: Path) -> threading.Thread:
        """Host setup and containerd now; images in a thread (while the control plane starts)."""
        st, rn = self.state, self._real()
        realnodes.preflight()
        missing = [b for b in ("kubelet", *LOCAL_IMAGES) if not (bin_dir / b).exists()]
        if missing:
            raise ClusterError(
                f"{', '.join(missing)} missing from {bin_dir}: run `bash dev/tools.sh`"
            )
        net = rn.setup_host()
        st.real_nodes = {
            "slot": net.slot,
            "nodes": {n.name: {"gpu": n.gpu, "index": n.index} for n in rn.nodes},
        }
        st.save(self.config.state_file)
        for n in rn.nodes:
            self.start_containerd(n.name, wait=False)
        errors: list[BaseException] = []

        def containerds_and_images() -> None:
            # No state writes here: the main thread saves the state meanwhile.
            try:
                local = self.image_archives()
                project = self._saved_project_archives()
                for n in rn.nodes:
                    rn.wait_containerd(n, self.state.pids[f"containerd-{n.name}"])
                    archives = local + [project[i] for i in self.images_for(n, project)]
                    imported = rn.import_images(n, archives, always=local)
                    log.info("%s: imported %s", n.name, ", ".join(imported) or "nothing new")
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=containerds_and_images, name="real-nodes", daemon=True)
        t.start()
        t.errors = errors  # type: ignore[attr-defined]
        return t

    def _join_real_nodes(self, t: threading.Thread) -> None:
        t.join()
        errors: list[BaseException] = t.errors  # type: ignore[attr-defined]
        if errors:
            raise ClusterError(f"real nodes: {errors[0]}") from errors[0]
        pki = self.config.kwok_pki
        for n in self.real_node_list:
            self._real().write_kubelet_config(n, self._net(), str(pki / "ca.crt"))
            self.start_kubelet(n.name)

    def _register_real_nodes(self, timeout_s: float = 120) -> None:
        """Wait for the kubelets to register, then give the GPU node its (simulated) GPUs."""
        for n in self.real_node_list:
            ok = procs.wait_for(
                lambda n=n: self.kubectl("get", "node", n.name, check=False).returncode == 0,  # type: ignore[misc]
                timeout_s=timeout_s,
            )
            if not ok:
                raise ClusterError(
                    f"real node {n.name} did not register within {timeout_s:.0f} s:\n"
                    f"{procs.tail(self.config.logs_dir / f'kubelet-{n.name}.log')}"
                )
            if n.gpu:
                self.set_node_gpus(n.name, self.config.gpu_replicas)

    def expose_control_plane(self) -> None:
        """Let pods on the real nodes reach the API server and Prometheus, as in-cluster
        clients do: the forwarder (``zopilot_dev.hostproxy``) on the host's veth, and in
        the cluster's network namespace one DNAT rule, the ``kubernetes`` Service's
        ClusterIP:443 to that forwarder (the one Service rule kube-proxy would write;
        the API server's certificate names that ClusterIP). Idempotent."""
        self.start_component("hostproxy")
        svc_ip = self.kubectl(
            "get", "service", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}"
        ).stdout.strip()
        api_port = self.state.apiserver_url.rsplit(":", 1)[1]
        rule = [
            "PREROUTING", "-d", f"{svc_ip}/32", "-p", "tcp", "--dport", "443",
            "-j", "DNAT", "--to-destination", f"{self._net().host_ip}:{api_port}",
        ]  # fmt: skip
        ns = ["nsenter", f"--net={self._real().netns_file}", "iptables", "-t", "nat"]
        if subprocess.run([*ns, "-C", *rule], capture_output=True).returncode != 0:
            subprocess.run([*ns, "-A", *rule], check=True, capture_output=True)

    @property
    def host_ip(self) -> str:
        """The host's address as pods on the real nodes reach it (the host end of the
        real nodes' veth): a server the host runs on it is reachable from those pods."""
        return self._net().host_ip

    @property
    def in_cluster_prometheus_url(self) -> str:
        """Prometheus as pods on the real nodes reach it (through the host forwarder)."""
        return f"http://{self.host_ip}:{self.state.prometheus_url.rsplit(':', 1)[1]}"

    def set_node_gpus(self, name: str, count: int) -> None:
        """Patch ``nvidia.com/gpu`` capacity and allocatable onto a real node's status
        (what the NVIDIA device plugin would advertise; time-sliced replicas)."""
        patch = {
            "status": {
                "capacity": {"nvidia.com/gpu": str(count)},
                "allocatable": {"nvidia.com/gpu": str(count)},
            }
        }
        self.kubectl(
            "patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
        )

    def _kwok_env(self) -> dict[str, str]:
        return {**os.environ, "KWOK_WORKDIR": str(self.config.kwok_workdir)}

    # ------------------------------------------------------------- lifecycle
    def healthy(self) -> bool:
        st = self._state
        if st is None:
            return False
        # Operators started against the cluster come and go; the cluster's own
        # components must all be alive.
        if any(not procs.alive(pid) for n, pid in st.pids.items() if not n.startswith("operator")):
            return False
        try:
            return self.kubectl("get", "--raw=/readyz", check=False).returncode == 0
        except (FileNotFoundError, ClusterError):
            return False

    def up(self, *, podrunner: bool = False) -> ClusterState:
        """Start everything that is not running. Safe to call again."""
        if self.healthy():
            if podrunner and "podrunner" not in self.state.pids:
                self.start_component("podrunner")
            if self.state.real_nodes and "hostproxy" not in self.state.pids:
                self.expose_control_plane()  # a cluster started before it existed
            log.info("cluster %s already up", self.config.name)
            return self.state
        if self._state is not None:
            log.info("cluster %s is partly up; restarting it", self.config.name)
            self.down()
        try:
            return self._up(podrunner=podrunner)
        except (realnodes.RealNodeError, ClusterError, subprocess.SubprocessError) as e:
            # Leave nothing half-started on the host (logs stay in last-logs).
            log.error("up failed (%s); taking down what was started", e)
            try:
                self.down()
            except ClusterError as cleanup:
                log.error("cleanup after the failed up: %s", cleanup)
            if isinstance(e, realnodes.RealNodeError):
                raise ClusterError(str(e)) from e
            raise

    def _up(self, *, podrunner: bool) -> ClusterState:
        t0 = time.monotonic()
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = tools_bin_dir(build=True)
        api_port = cfg.apiserver_port or procs.free_port()
        prom_port = cfg.prometheus_port or procs.free_port()
        dcgm_port = cfg.dcgm_port or procs.free_port()
        real = realnodes.real_nodes(cfg.real_gpu_nodes, cfg.real_cpu_nodes)
        gpus = nodes.simulated_gpus(cfg.name, cfg.gpu_nodes, [n.name for n in real if n.gpu])
        self._state = ClusterState(
            name=cfg.name,
            kubeconfig=str(cfg.kubeconfig),
            apiserver_url=f"https://127.0.0.1:{api_port}",
            prometheus_url=f"http://127.0.0.1:{prom_port}",
            dcgm_url=f"http://127.0.0.1:{dcgm_port}",
            logs_dir=str(self.logs_dir),
            bin_dir=str(bin_dir),
            gpus=[asdict(g) for g in gpus],
            config={k: str(v) for k, v in asdict(cfg).items()},
        )
        self._state.save(cfg.state_file)
        nodes_thread = self._start_real_nodes(bin_dir) if real else None
        self._create_control_plane(bin_dir, api_port, real_nodes=bool(real))
        self._state.pids.update(self._read_kwok_pids())
        self._state.save(cfg.state_file)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (cfg.state_dir / "gpus.json").write_text(json.dumps([asdict(g) for g in gpus]))
        for name in ("dcgm-exporter", "prometheus"):
            self.start_component(name)
        if podrunner:
            self.start_component("podrunner")
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump_all(
                nodes.all_nodes(cfg.gpu_nodes, cfg.gpu_replicas, cfg.cpu_nodes)
            ),
        )
        if nodes_thread is not None:
            self._join_real_nodes(nodes_thread)
            self._register_real_nodes()
            self.expose_control_plane()
        r = self.kubectl(
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            "--timeout=120s",
            check=False,
            timeout_s=150,
        )
        if r.returncode != 0:
            nodes_now = self.kubectl("get", "nodes", check=False).stdout
            raise ClusterError(f"nodes not Ready within 120 s: {r.stderr.strip()}\n{nodes_now}")
        self.wait_for_gpu_metrics()
        log.info("cluster %s up in %.1f s", cfg.name, time.monotonic() - t0)
        return self.state

    def _create_control_plane(self, bin_dir: Path, api_port: int, *, real_nodes: bool) -> None:
        cfg = self.config
        conf_path = cfg.state_dir / "kwokctl.yaml"
        kwokctl_conf: dict[str, Any] = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeApiserverPort": api_port,
                "kubeAuthorization": True,
                # In-cluster clients on the real nodes dial the kubernetes Service's
                # ClusterIP (expose_control_plane): the serving certificate names it.
                "kubeApiserverCertSANs": [
                    "10.0.0.1",
                    "10.96.0.1",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ],
                "kubeAdmission": True,
                "kubeApiserverBinary": str(bin_dir / "kube-apiserver"),
                "kubeControllerManagerBinary": str(bin_dir / "kube-controller-manager"),
                "kubeSchedulerBinary": str(bin_dir / "kube-scheduler"),
                "kubectlBinary": str(bin_dir / "kubectl"),
                "etcdBinary": str(bin_dir / "etcd"),
                "kwokControllerBinary": str(bin_dir / "kwok"),
            },
        }
        # kwok drives only the simulated nodes (annotated kwok.x-k8s.io/node=fake)
        # and their pods; kwokctl's default is every node, real kubelets' included.
        # One scheduler and one controller manager: no leader election, so that
        # an API server down for longer than the lease does not make them exit.
        patches: list[dict[str, Any]] = [
            {"name": c, "extraArgs": [{"key": "leader-elect", "value": "false"}]}
            for c in ("kube-scheduler", "kube-controller-manager")
        ]
        patches += [
            {
                "name": "kwok-controller",
                "extraArgs": [
                    {"key": "manage-all-nodes", "value": "false"},
                    {
                        "key": "manage-nodes-with-annotation-selector",
                        "value": "kwok.x-k8s.io/node=fake",
                    },
                ],
            }
        ]
        if real_nodes:
            # The API server reaches real kubelets (logs, exec) at their InternalIP,
            # authenticating with the admin certificate the kubelets trust.
            pki = cfg.kwok_pki
            patches.append(
                {
                    "name": "kube-apiserver",
                    "extraArgs": [
                        {"key": "kubelet-preferred-address-types", "value": "InternalIP,Hostname"},
                        {"key": "kubelet-client-certificate", "value": str(pki / "admin.crt")},
                        {"key": "kubelet-client-key", "value": str(pki / "admin.key")},
                    ],
                }
            )
        kwokctl_conf["componentsPatches"] = patches
        stages = (REPO_ROOT / "dev" / "kwok" / "stages.yaml").read_text()
        conf_path.write_text(yaml.safe_dump(kwokctl_conf, sort_keys=False) + "---\n" + stages)
        argv = [
            str(bin_dir / "kwokctl"),
            "create",
            "cluster",
            "--name",
            cfg.name,
            "--config",
            str(conf_path),
            "--kubeconfig",
            str(cfg.kubeconfig),
            "--wait",
            "120s",
        ]
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        with (cfg.state_dir / "kwokctl.log").open("ab") as out:
            r = subprocess.run(argv, env=self._kwok_env(), stdout=out, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise ClusterError(
                f"kwokctl create cluster failed (exit {r.returncode}); see "
                f"{cfg.state_dir / 'kwokctl.log'}:\n{procs.tail(cfg.state_dir / 'kwokctl.log')}"
            )

    def _read_kwok_pids(self) -> dict[str, int]:
        pids: dict[str, int] = {}
        pid_dir = self.config.kwok_workdir / "clusters" / self.config.name / "pids"
        for f in sorted(pid_dir.glob("*.pid")):
            try:
                pids[f.stem] = int(f.read_text().strip())
            except ValueError:
                continue
        return pids

    def start_component(self, name: str) -> None:
        """Start (or restart) one of our own components: prometheus, dcgm-exporter, podrunner."""
        st, cfg = self.state, self.config
        if name in st.pids and procs.alive(st.pids[name]):
            return
        py = sys.executable
        if name == "dcgm-exporter":
            port = int(st.dcgm_url.rsplit(":", 1)[1])
            argv = [
                py,
                "-m",
                "zopilot_dev.dcgm",
                "--port",
                str(port),
                "--gpus",
                str(cfg.state_dir / "gpus.json"),
                "--kubeconfig",
                st.kubeconfig,
                "--follow-delay",
                str(cfg.dcgm_follow_delay_s),
            ]
            ready = f"{st.dcgm_url}/health"
        elif name == "prometheus":
            root = cfg.state_dir / "prometheus"
            prometheus.write_config(
                root, st.dcgm_url.removeprefix("http://"), cfg.scrape_interval_s
            )
            argv = prometheus.argv(root, int(st.prometheus_url.rsplit(":", 1)[1]))
            ready = f"{st.prometheus_url}/-/ready"
        elif name == "podrunner":
            argv = [
                py,
                "-m",
                "zopilot_dev.podrunner",
                "--kubeconfig",
                st.kubeconfig,
                "--work-dir",
                str(cfg.state_dir / "pods"),
            ]
            ready = ""
        elif name == "hostproxy":
            host_ip = self._net().host_ip
            ports = [u.rsplit(":", 1)[1] for u in (st.apiserver_url, st.prometheus_url)]
            argv = [py, "-m", "zopilot_dev.hostproxy", "--listen", host_ip]
            argv += [a for p in ports for a in ("--port", p)]
            ready = f"http://{host_ip}:{ports[1]}/-/ready"
        else:
            raise ClusterError(f"unknown component {name!r}; known: {', '.join(OWN_COMPONENTS)}")
        st.pids[name] = procs.start(name, argv, self.logs_dir, cwd=REPO_ROOT)
        st.save(cfg.state_file)
        if ready and not procs.wait_for(
            lambda: httpx.get(ready, timeout=1).status_code == 200, timeout_s=60
        ):
            raise ClusterError(
                f"{name} did not become ready:\n{procs.tail(self.logs_dir / f'{name}.log')}"
            )

    def stop_component(self, name: str) -> None:
        st = self.state
        pid = st.pids.pop(name, None)
        if pid is not None:
            procs.stop(pid)
        st.save(self.config.state_file)

    def down(self) -> None:
        """Stop every process of this cluster and remove its state (logs are kept)."""
        st = self._state
        if st is not None:
            for name in OWN_COMPONENTS:
                if name in st.pids:
                    procs.stop(st.pids[name])
        # Real nodes first: their kubelets would otherwise retry the API server.
        leftovers = self._real().teardown()
        keep = self.config.state_dir / "last-logs"
        log_dirs = [d for d in (self.logs_dir, self.config.logs_dir) if d.exists()]
        if log_dirs:  # a second down must not wipe the first one's logs
            shutil.rmtree(keep, ignore_errors=True)
            for d in log_dirs:
                shutil.copytree(d, keep, dirs_exist_ok=True)
        kwokctl = Path(st.bin_dir if st else tools_bin_dir(build=False)) / "kwokctl"
        if kwokctl.exists():
            subprocess.run(
                [str(kwokctl), "delete", "cluster", "--name", self.config.name],
                env=self._kwok_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        # Whatever kwokctl missed (e.g. after a crash): kill by recorded pid.
        for pid in st.pids.values() if st else []:
            procs.stop(pid, timeout_s=5)
        for pid in self._read_kwok_pids().values():
            procs.stop(pid, timeout_s=5)
        for sub in (
            "kwok",
            "prometheus",
            "pods",
            "volumes",
            "state.json",
            "kubeconfig",
            "gpus.json",
            "logs",
        ):
            p = self.config.state_dir / sub
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        self._state = None
        if leftovers:
            raise ClusterError("down left real-node resources behind: " + "; ".join(leftovers))

    # ---------------------------------------------------------------- helpers
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        st = self.state
        r = subprocess.run(
            [str(Path(st.bin_dir) / "kubectl"), "--kubeconfig", st.kubeconfig, *args],
            input=input,
            text=True,
            capture_output=True,
            timeout=timeout_s,
        )
        if check and r.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}"
            )
        return r

    def query(self, promql: str) -> list[dict[str, Any]]:
        return prometheus.query(self.state.prometheus_url, promql)

    def wait_for_gpu_metrics(self, timeout_s: float = 60) -> None:
        n = len(self.state.gpus)
        if not procs.wait_for(
            lambda: len(self.query("DCGM_FI_DEV_FB_FREE")) == n, timeout_s=timeout_s
        ):
            raise ClusterError(f"Prometheus has no DCGM_FI_DEV_FB_FREE series for all {n} GPUs")

    def set_gpu(self, key: str, **values: Any) -> dict[str, Any]:
        """Override the simulated DCGM numbers of one GPU (by node name or UUID)."""
        r = httpx.put(f"{self.state.dcgm_url}/gpus/{key}", json=values, timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def reset_gpus(self) -> None:
        httpx.post(f"{self.state.dcgm_url}/reset", timeout=5).raise_for_status()

    def gpus(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.state.dcgm_url}/gpus", timeout=5).json())

    def create_volume(self, namespace: str, claim: str, size: str = "10Gi") -> Path:
        """A PVC bound to a hostPath PV over a local directory; returns the directory.

        A real kubelet mounts it into the pod's containers (hostPath); the
        development pod runner maps it wherever a pod mounts the claim. Tests and
        the demo put inputs there and read outputs back. The directory belongs to
        the pods' UID (10001), as a provisioner honouring ``fsGroup`` would
        leave it: a hostPath volume is not re-owned for the pod.
        """
        d = self.config.state_dir / "volumes" / namespace / claim
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, POD_UID, POD_UID)
        pv_name = f"zopilot-local-{namespace}-{claim}"[:253]
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"zopilot.dev/simulated": "true"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "zopilot-local",
                "hostPath": {"path": str(d), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
        pvc = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "storageClassName": "zopilot-local",
                "volumeName": pv_name,
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": size}},
            },
        }
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([pv, pvc]))
        self.kubectl(
            "wait",
            "-n",
            namespace,
            "--for=jsonpath={.status.phase}=Bound",
            f"pvc/{claim}",
            "--timeout=60s",
        )
        return d

    def add_scrape_target(self, name: str, target: str) -> None:
        prometheus.add_target(self.config.state_dir / "prometheus", name, target)

    def status(self) -> dict[str, Any]:
        if self._state is None:
            return {"up": False}
        st = self.state
        comps = {name: ("running" if procs.alive(pid) else "dead") for name, pid in st.pids.items()}
        out: dict[str, Any] = {
            "up": self.healthy(),
            "name": st.name,
            "components": comps,
            "kubeconfig": st.kubeconfig,
            "apiserver": st.apiserver_url,
            "prometheus": st.prometheus_url,
            "dcgm": st.dcgm_url,
            "logs": st.logs_dir,
        }
        try:
            out["nodes"] = self.kubectl(
                "get", "nodes", "-L", "nvidia.com/gpu.product", "-L", "nvidia.com/gpu.replicas"
            ).stdout
            out["server_version"] = json.loads(self.kubectl("version", "-o", "json").stdout)[
                "serverVersion"
            ]["gitVersion"]
            out["gpus"] = self.gpus()
        except Exception as e:
            out["error"] = str(e)
        return out

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        files = [
            f for d in (self.logs_dir, self.config.logs_dir) if d.exists() for f in d.glob("*.log")
        ]
        for f in sorted(files, key=lambda f: f.name):
            parts.append(f"==> {f.name} <==\n{procs.tail(f, lines)}")
        return "\n\n".join(parts)
