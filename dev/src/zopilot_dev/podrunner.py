"""Development pod runner: runs worker pods bound to simulated nodes as local
processes and reports their state like a kubelet (SIMULATED container runtime).

No container runtime exists on development machines, so for every pod labelled
``app.kubernetes.io/name=zopilot-worker`` that the real scheduler bound to a
simulated node (kwok leaves those pods alone, see dev/kwok/stages.yaml), this
runner:

* materialises the pod's volumes as local directories: a PVC maps to the
  ``hostPath`` of the PV bound to it (``LocalCluster.create_volume`` makes
  such pairs), a ConfigMap is written out key by key, an emptyDir is a fresh
  directory, and the termination-message path is a local file;
* runs the container's command (``zopilot-worker ...`` resolves to this
  virtualenv's script) with its env, every path under a mount rewritten to
  the local directory;
* patches the pod status: Running with ``startedAt``, then Succeeded/Failed
  with the exit code, reason (Completed, Error, DeadlineExceeded, or
  OOMKilled when the process died of SIGKILL it did not send) and the
  termination message (at most 4096 bytes, as the kubelet truncates);
* enforces ``activeDeadlineSeconds`` and kills the process when the pod is
  deleted;
* gives each pod its own loopback address (127.1.x.y) as its pod IP and
  sets ``ZOPILOT_WORKER_HOST`` to it, as a pod's own network namespace
  would: several workers can then all listen on their container port (8080)
  and the operator reaches each one at podIP:port, as in a real cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("zopilot.podrunner")
SELECTOR = "app.kubernetes.io/name=zopilot-worker"
SIMULATED_NODE_LABEL = "zopilot.dev/simulated"
MAX_TERMINATION_MESSAGE = 4096


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LocalPod:
    uid: str
    namespace: str
    name: str
    proc: subprocess.Popen[bytes]
    started: float
    started_iso: str
    deadline_s: int | None
    termination_log: Path
    container: str
    killed_by_us: str | None = None  # reason when we killed it
    extra: dict[str, Any] = field(default_factory=dict)


class PodRunner:
    def __init__(self, api: client.CoreV1Api, work_dir: Path) -> None:
        self.api = api
        self.work_dir = work_dir
        self.pods: dict[str, LocalPod] = {}
        self.bin_dir = Path(sys.executable).parent
        self._next_ip = 0

    def _pod_ip(self) -> str:
        n = self._next_ip
        self._next_ip += 1
        return f"127.1.{(n // 250) % 250}.{n % 250 + 1}"

    # -------------------------------------------------------------- mapping
    def _pvc_dir(self, namespace: str, claim: str) -> Path:
        pvc: Any = self.api.read_namespaced_persistent_volume_claim(claim, namespace)
        if not pvc.spec.volume_name:
            raise RuntimeError(f"PVC {namespace}/{claim} is not bound to a PV")
        pv: Any = self.api.read_persistent_volume(pvc.spec.volume_name)
        if pv.spec.host_path is None:
            raise RuntimeError(f"PV {pv.metadata.name} has no hostPath; the dev runner needs one")
        return Path(pv.spec.host_path.path)

    def _volume_dirs(self, pod: Any, pod_dir: Path) -> dict[str, Path]:
        dirs: dict[str, Path] = {}
        for v in pod.spec.volumes or []:
            if v.persistent_volume_claim is not None:
                dirs[v.name] = self._pvc_dir(
                    pod.metadata.namespace, v.persistent_volume_claim.claim_name
                )
            elif v.config_map is not None:
                d = pod_dir / "configmaps" / v.name
                d.mkdir(parents=True, exist_ok=True)
                cm: Any = self.api.read_namespaced_config_map(
                    v.config_map.name, pod.metadata.namespace
                )
                for k, val in (cm.data or {}).items():
                    (d / k).write_text(val)
                for k, val in (cm.binary_data or {}).items():
                    import base64

                    (d / k).write_bytes(base64.b64decode(val))
                dirs[v.name] = d
            else:  # emptyDir and anything else: a fresh local directory
                d = pod_dir / "volumes" / v.name
                d.mkdir(parents=True, exist_ok=True)
                dirs[v.name] = d
        return dirs

    @staticmethod
    def _rewrite(value: str, root: Path, mount_paths: list[str]) -> str:
        """Map a container path to the pod's local root when it is a mount, under
        one, or a parent of one (e.g. a "volumes root" env var).

        Host paths that already exist (this virtualenv's python, a test's
        control directory under /tmp) are left alone unless they are exactly a
        mount path: the runner shares the host's filesystem, so a container
        mount such as /tmp must not swallow them.
        """
        if not value.startswith("/"):
            return value
        v = value.rstrip("/") or "/"
        exact = any(v == m.rstrip("/") for m in mount_paths)
        if not exact and Path(v).exists():
            return value
        for m in mount_paths:
            m = m.rstrip("/")
            if v == m or v.startswith(m + "/") or m.startswith(v + "/"):
                return str(root) + value
        return value

    def _env(self, pod: Any, c: Any, root: Path, mounts: list[str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        fields = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name,
        }
        for e in c.env or []:
            if e.value is not None:
                env[e.name] = self._rewrite(e.value, root, mounts)
            elif e.value_from is not None and e.value_from.field_ref is not None:
                env[e.name] = str(fields.get(e.value_from.field_ref.field_path, ""))
        return env

    # ------------------------------------------------------------ lifecycle
    def start(self, pod: Any) -> None:
        uid, ns, name = pod.metadata.uid, pod.metadata.namespace, pod.metadata.name
        c = pod.spec.containers[0]
        pod_dir = self.work_dir / ns / f"{name}-{uid[:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        try:
            vols = self._volume_dirs(pod, pod_dir)
        except (ApiException, RuntimeError) as e:
            log.warning("%s/%s: cannot prepare volumes: %s", ns, name, e)
            self._patch(pod, self._waiting_status("CreateContainerConfigError", str(e)))
            return
        # The container's filesystem view: every mount is a symlink under
        # <pod_dir>/root at its mount path; paths in args/env are rewritten there.
        root = pod_dir / "root"
        mount_paths: list[str] = []
        for m in c.volume_mounts or []:
            if m.name not in vols:
                continue
            link = root / m.mount_path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(vols[m.name], target_is_directory=True)
            mount_paths.append(m.mount_path)
        term_path = c.termination_message_path or "/dev/termination-log"
        term_local = root / term_path.lstrip("/")
        term_local.parent.mkdir(parents=True, exist_ok=True)
        term_local.write_text("")
        mount_paths.append(term_path)
        argv = [self._rewrite(a, root, mount_paths) for a in [*(c.command or []), *(c.args or [])]]
        if not argv:
            self._finish_status(pod, 128, "ContainerCannotRun", "no command", now_iso())
            return
        if "/" not in argv[0] and (self.bin_dir / argv[0]).exists():
            argv[0] = str(self.bin_dir / argv[0])
        env = self._env(pod, c, root, mount_paths)
        pod_ip = self._pod_ip()
        env.setdefault("ZOPILOT_WORKER_HOST", pod_ip)
        with (pod_dir / "container.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=pod_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started_iso = now_iso()
        self.pods[uid] = LocalPod(
            uid,
            ns,
            name,
            proc,
            time.monotonic(),
            started_iso,
            pod.spec.active_deadline_seconds,
            term_local,
            c.name,
        )
        log.info("%s/%s: started pid %d: %s", ns, name, proc.pid, " ".join(argv))
        self._patch(
            pod,
            {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": pod_ip,
                "podIPs": [{"ip": pod_ip}],
                "startTime": started_iso,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started_iso}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [
                    {
                        "name": c.name,
                        "image": c.image or "",
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "state": {"running": {"startedAt": started_iso}},
                    }
                ],
            },
        )

    def _waiting_status(self, reason: str, message: str) -> dict[str, Any]:
        return {"phase": "Pending", "reason": reason, "message": message}

    def _finish_status(
        self,
        pod: Any,
        code: int,
        reason: str,
        message: str,
        started_iso: str,
        pod_reason: str | None = None,
    ) -> None:
        c = pod.spec.containers[0]
        finished = now_iso()
        status: dict[str, Any] = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [
                {
                    "type": t,
                    "status": "False",
                    "lastTransitionTime": finished,
                    "reason": "PodCompleted" if code == 0 else "PodFailed",
                }
                for t in ("ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": c.name,
                    "image": c.image or "",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": reason,
                            "message": message,
                            "startedAt": started_iso,
                            "finishedAt": finished,
                        }
                    },
                }
            ],
        }
        if pod_reason:
            status["reason"] = pod_reason
            status["message"] = message
        self._patch(pod, status)

    def finish(self, lp: LocalPod, pod: Any) -> None:
        rc = lp.proc.returncode
        try:
            message = lp.termination_log.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(
                "utf-8", "replace"
            )
        except FileNotFoundError:
            message = ""
        pod_reason = None
        if lp.killed_by_us == "DeadlineExceeded":
            code, reason, pod_reason = 137, "Error", "DeadlineExceeded"
            message = message or f"Pod was active on the node longer than {lp.deadline_s} s"
        elif rc < 0:
            code = 128 - rc
            # A SIGKILL we did not send is what the OOM killer does to a container.
            reason = "OOMKilled" if rc == -signal.SIGKILL else "Error"
        else:
            code, reason = rc, ("Completed" if rc == 0 else "Error")
        log.info("%s/%s: exited %s (%s)", lp.namespace, lp.name, code, reason)
        self._finish_status(pod, code, reason, message, lp.started_iso, pod_reason)

    def _patch(self, pod: Any, status: dict[str, Any]) -> None:
        with contextlib.suppress(ApiException):
            self.api.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": status}
            )

    def kill(self, lp: LocalPod, reason: str) -> None:
        lp.killed_by_us = reason
        with contextlib.suppress(ProcessLookupError):
            os.killpg(lp.proc.pid, signal.SIGTERM)
        try:
            lp.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lp.proc.pid, signal.SIGKILL)
            lp.proc.wait()

    def sync_once(self, simulated_nodes: set[str]) -> None:
        pods: list[Any] = self.api.list_pod_for_all_namespaces(label_selector=SELECTOR).items
        seen = set()
        for pod in pods:
            uid = pod.metadata.uid
            seen.add(uid)
            if pod.spec.node_name not in simulated_nodes:
                continue
            lp = self.pods.get(uid)
            if pod.metadata.deletion_timestamp is not None:
                if lp and lp.proc.poll() is None:
                    self.kill(lp, "Deleted")
                continue
            phase = pod.status.phase if pod.status else None
            if lp is None:
                if phase == "Pending":
                    self.start(pod)
                continue
            if (
                lp.proc.poll() is None
                and lp.deadline_s
                and time.monotonic() - lp.started > lp.deadline_s
            ):
                self.kill(lp, "DeadlineExceeded")
            if lp.proc.poll() is not None and not lp.extra.get("reported"):
                self.finish(lp, pod)
                lp.extra["reported"] = True
        for uid in list(self.pods):
            if uid not in seen:  # pod object gone: make sure its process is too
                lp = self.pods.pop(uid)
                if lp.proc.poll() is None:
                    self.kill(lp, "Deleted")

    def simulated_nodes(self) -> set[str]:
        nodes: list[Any] = self.api.list_node(label_selector=f"{SIMULATED_NODE_LABEL}=true").items
        return {n.metadata.name for n in nodes}

    def run(self, interval_s: float = 0.3) -> None:
        stopping = False

        def _stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        nodes: set[str] = set()
        last_nodes = 0.0
        while not stopping:
            try:
                if time.monotonic() - last_nodes > 5:
                    nodes, last_nodes = self.simulated_nodes(), time.monotonic()
                self.sync_once(nodes)
            except Exception:
                log.exception("sync failed")
            time.sleep(interval_s)
        for lp in self.pods.values():
            if lp.proc.poll() is None:
                self.kill(lp, "RunnerStopped")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="development pod runner (simulated kubelet)")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--work-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    api = client.CoreV1Api(
        config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    )
    args.work_dir.mkdir(parents=True, exist_ok=True)
    PodRunner(api, args.work_dir).run()
    shutil.rmtree(args.work_dir / ".tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
