"""Bring the local cluster up and down, idempotently, and inspect it.

kwokctl's binary runtime runs the real control plane from the binaries
``dev/tools.sh`` builds (etcd, kube-apiserver with RBAC and admission,
kube-controller-manager, kube-scheduler, kwok-controller); we add the real
Prometheus, the DCGM stand-in and (optionally) the development pod runner,
and create the simulated nodes. All logs go to one directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import yaml

from . import nodes, procs, prometheus
from .config import REPO_ROOT, ClusterConfig, ClusterState

log = logging.getLogger("zopilot.cluster")

OWN_COMPONENTS = ("dcgm-exporter", "prometheus", "podrunner")


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
            log.info("cluster %s already up", self.config.name)
            return self.state
        if self._state is not None:
            log.info("cluster %s is partly up; restarting it", self.config.name)
            self.down()
        t0 = time.monotonic()
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = tools_bin_dir(build=True)
        api_port = cfg.apiserver_port or procs.free_port()
        prom_port = cfg.prometheus_port or procs.free_port()
        dcgm_port = cfg.dcgm_port or procs.free_port()
        gpus = nodes.simulated_gpus(cfg.name, cfg.gpu_nodes)
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
        self._create_control_plane(bin_dir, api_port)
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
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
        self.wait_for_gpu_metrics()
        log.info("cluster %s up in %.1f s", cfg.name, time.monotonic() - t0)
        return self.state

    def _create_control_plane(self, bin_dir: Path, api_port: int) -> None:
        cfg = self.config
        conf_path = cfg.state_dir / "kwokctl.yaml"
        kwokctl_conf = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeApiserverPort": api_port,
                "kubeAuthorization": True,
                "kubeAdmission": True,
                "kubeApiserverBinary": str(bin_dir / "kube-apiserver"),
                "kubeControllerManagerBinary": str(bin_dir / "kube-controller-manager"),
                "kubeSchedulerBinary": str(bin_dir / "kube-scheduler"),
                "kubectlBinary": str(bin_dir / "kubectl"),
                "etcdBinary": str(bin_dir / "etcd"),
                "kwokControllerBinary": str(bin_dir / "kwok"),
            },
        }
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
        keep = self.config.state_dir / "last-logs"
        if self.logs_dir.exists():
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(self.logs_dir, keep)
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
        ):
            p = self.config.state_dir / sub
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        self._state = None

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

        The development pod runner mounts the directory wherever a pod mounts
        the claim, so tests and the demo put inputs there and read outputs back.
        """
        d = self.config.state_dir / "volumes" / namespace / claim
        d.mkdir(parents=True, exist_ok=True)
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
        for f in sorted(self.logs_dir.glob("*.log")) if self.logs_dir.exists() else []:
            parts.append(f"==> {f.name} <==\n{procs.tail(f, lines)}")
        return "\n\n".join(parts)
