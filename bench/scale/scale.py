"""Admission at scale, side by side: ZopilotGPU vs Kueue v0.17.0 (minimalkueue).

One command (``bench/scale/run.sh``) brings up the local cluster (real
kube-apiserver, etcd, scheduler and controller manager; kwok nodes) with 100
simulated RTX 4090 nodes, each one GPU time-sliced into 4 ``nvidia.com/gpu``
with the GPU operator's labels, and the simulated DCGM exporter behind a real
Prometheus. Then, one system after the other on the same machine:

* **ours**: 1,000 DocumentJobs with ``gpuMemory: 5Gi`` (4 fit per GPU by
  memory and by slots, so 400 fit), admitted by the operator
  (``zopilot-operator``, production defaults: ``admission_interval_s`` 10 s);
* **Kueue**: its scheduler-only ``minimalkueue`` (built from the Go module
  proxy by ``bench/scale/build-kueue.sh``), a ResourceFlavor with nodeLabels
  ``nvidia.com/gpu.product: NVIDIA-GeForce-RTX-4090``, one ClusterQueue with
  ``nvidia.com/gpu`` quota 400 (the nodes' allocatable), one LocalQueue, and
  1,000 Workloads requesting ``nvidia.com/gpu: 1``. One queue, like ours:
  Kueue admits one Workload per ClusterQueue per cycle.

Scenarios, each for both systems:

* ``backlog``: the 1,000 objects are created first, then the controller starts;
* ``live``: the controller runs, then ``--live`` objects (default 400, all
  fit) are created in one request.

Measured for each: creation -> Admitted p50/p99 from the objects' own times
(``metadata.creationTimestamp`` and the ``Admitted`` condition's
``lastTransitionTime``, both whole seconds), admissions per second until all
that fit are admitted (from the controller's start, resp. the first creation,
to the last admission seen by a watch, sub-second), and the controller's
CPU-seconds and peak RSS (``/proc``), read once the controller is idle after
the last admission (its follow-up work included: our operator still writes
the waiting messages and creates the worker pods then). Admitted DocumentJobs' worker pods are
created by the operator and stay Pending on the kwok nodes (no pod runner):
what is measured is admission.

    bench/scale/run.sh [--jobs 1000] [--live 400] [--only ours|kueue] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from zopilot_dev import procs
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.config import REPO_ROOT, ClusterConfig
from zopilot_dev.operatorproc import OperatorProcess
from zopilot_operator.kube import Generic
from zopilot_operator.runtime import api_client

GPU_NODES, REPLICAS = 100, 4
SLOTS = GPU_NODES * REPLICAS
KUEUE = "kueue.x-k8s.io/v1beta2"
STATE_DIR = REPO_ROOT / ".cluster" / "scale"
KUEUE_CRDS = ("resourceflavors", "clusterqueues", "localqueues", "workloads")


# ----------------------------------------------------------------- objects
def document_jobs(namespace: str, count: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "zopilot.dev/v1alpha1",
            "kind": "DocumentJob",
            "metadata": {"name": f"{prefix}-{i:04d}", "namespace": namespace},
            "spec": {
                "documents": [{"url": f"https://files.example/{i}.pdf"}],
                "tasks": ["extract"],
                "gpuMemory": "5Gi",
            },
        }
        for i in range(count)
    ]


def kueue_setup(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": KUEUE,
            "kind": "ResourceFlavor",
            "metadata": {"name": "rtx4090"},
            "spec": {"nodeLabels": {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"}},
        },
        {
            "apiVersion": KUEUE,
            "kind": "ClusterQueue",
            "metadata": {"name": "gpu-cq"},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": ["nvidia.com/gpu"],
                        "flavors": [
                            {
                                "name": "rtx4090",
                                "resources": [{"name": "nvidia.com/gpu", "nominalQuota": SLOTS}],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": KUEUE,
            "kind": "LocalQueue",
            "metadata": {"name": "lq", "namespace": namespace},
            "spec": {"clusterQueue": "gpu-cq"},
        },
    ]


def workloads(namespace: str, count: int, prefix: str) -> list[dict[str, Any]]:
    container = {
        "name": "c",
        "image": "x",
        "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
    }
    return [
        {
            "apiVersion": KUEUE,
            "kind": "Workload",
            "metadata": {"name": f"{prefix}-{i:04d}", "namespace": namespace},
            "spec": {
                "queueName": "lq",
                "podSets": [
                    {
                        "name": "main",
                        "count": 1,
                        "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
                    }
                ],
            },
        }
        for i in range(count)
    ]


# --------------------------------------------------------------- measuring
def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def admitted_at(obj: dict[str, Any]) -> datetime | None:
    """When the object's Admitted condition turned True (its own time), else None."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Admitted" and c.get("status") == "True":
            return parse_time(c.get("lastTransitionTime")) or datetime.now(UTC)
    return None


class Observer:
    """Watches one resource and notes the wall time each object is first seen admitted."""

    def __init__(self, cluster: LocalCluster, path: str) -> None:
        self.cluster, self.path = cluster, path
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        os.environ["KUBECONFIG"] = self.cluster.state.kubeconfig
        client = Generic(api_client())
        while not self.stop.is_set():
            try:
                for event in client.watch(self.path, {"timeoutSeconds": 600}, 660.0):
                    if self.stop.is_set():
                        return
                    obj = event.get("object") or {}
                    name = (obj.get("metadata") or {}).get("name")
                    if name and name not in self.seen and admitted_at(obj) is not None:
                        self.seen[name] = time.time()
            except Exception as e:  # a dropped watch: start again
                print(f"  (observer: {e})", flush=True)
                time.sleep(0.5)

    def wait_settled(self, expected: int, since: float, timeout_s: float, quiet_s: float) -> None:
        """Until ``expected`` are admitted and nothing more for ``quiet_s``, or the timeout."""
        deadline = since + timeout_s
        while time.time() < deadline:
            count = len(self.seen)
            last = max(self.seen.values(), default=since)
            if count >= expected and time.time() - last >= quiet_s:
                return
            time.sleep(0.2)

    def close(self) -> None:
        self.stop.set()


def proc_usage(pid: int) -> tuple[float, float]:
    """(CPU-seconds user+system, peak RSS MiB) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return cpu, hwm


def wait_idle(pid: int, window_s: float = 3.0, cpu_s: float = 0.05, limit_s: float = 120.0) -> None:
    """Until the process used under ``cpu_s`` CPU-seconds in ``window_s`` (its work
    after the last admission done: waiting messages, pods, events), or ``limit_s``.
    Peak RSS and CPU-s are read then, not at the last admission: the operator's
    memory kept growing for ~10 s after it (first measured 118 MiB, then 150)."""
    deadline = time.time() + limit_s
    before = proc_usage(pid)[0]
    while time.time() < deadline:
        time.sleep(window_s)
        now = proc_usage(pid)[0]
        if now - before < cpu_s:
            return
        before = now


@dataclass
class Result:
    system: str
    scenario: str
    objects: int
    admitted: int
    p50_s: float | None
    p99_s: float | None
    rate_per_s: float | None
    span_s: float | None
    cpu_s: float
    peak_rss_mib: float
    notes: list[str] = field(default_factory=list)


def summarise(
    system: str,
    scenario: str,
    objs: list[dict[str, Any]],
    observer: Observer,
    started: float,
    usage: tuple[float, float],
) -> Result:
    latencies = []
    for obj in objs:
        done = admitted_at(obj)
        created = parse_time(obj["metadata"].get("creationTimestamp"))
        if done is not None and created is not None:
            latencies.append((done - created).total_seconds())
    latencies.sort()
    seen = sorted(observer.seen.values())
    span = (seen[-1] - started) if seen else None
    p50 = statistics.median(latencies) if latencies else None
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
    return Result(
        system,
        scenario,
        len(objs),
        len(latencies),
        p50,
        p99,
        (len(seen) / span) if span else None,
        span,
        usage[0],
        usage[1],
    )


# ------------------------------------------------------------------ systems
class System:
    name = ""
    kinds: tuple[str, ...] = ()
    plural_path = ""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster, self.base_namespace = cluster, namespace
        self.pid: int | None = None
        self.set_namespace(namespace)

    def set_namespace(self, namespace: str) -> None:
        """A fresh namespace per scenario: the last one may still be terminating."""
        self.namespace = namespace

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl(*args, input=input, timeout_s=600).stdout

    def create(self, objs: list[dict[str, Any]]) -> None:
        self.kubectl("create", "-f", "-", input=yaml.safe_dump_all(objs))

    def list(self) -> list[dict[str, Any]]:
        out = self.kubectl("get", "--raw", f"/{self.plural_path}?limit=0")
        return list(json.loads(out)["items"])

    def prepare(self) -> None:
        self.kubectl("create", "namespace", self.namespace)

    def objects(self, count: int, prefix: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.pid is not None:
            procs.stop(self.pid)
            self.pid = None

    def cleanup(self) -> None:
        """Delete what the scenario created, directly: the namespace controller (and
        the garbage collector) live in kube-controller-manager, which a starved
        machine can make lose its lease and exit."""
        try:
            self._delete()
        except subprocess.TimeoutExpired as e:
            print(f"  (cleanup of {self.namespace} incomplete: {e})", flush=True)

    def _delete(self) -> None:
        for kind in self.kinds:
            self.cluster.kubectl(
                "delete",
                kind,
                "--all",
                "-n",
                self.namespace,
                "--wait=true",
                "--timeout=300s",
                check=False,
                timeout_s=330,
            )
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)


class Ours(System):
    name = "ZopilotGPU"
    kinds = ("documentjobs", "pods")

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.operator: OperatorProcess | None = None
        super().__init__(cluster, namespace)

    def set_namespace(self, namespace: str) -> None:
        super().set_namespace(namespace)
        self.plural_path = f"apis/zopilot.dev/v1alpha1/namespaces/{namespace}/documentjobs"

    def prepare(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds" / "documentjob.yaml"))
        self.kubectl(
            "wait", "--for=condition=Established", "crd/documentjobs.zopilot.dev", "--timeout=60s"
        )
        super().prepare()

    def objects(self, count: int, prefix: str) -> list[dict[str, Any]]:
        return document_jobs(self.namespace, count, prefix)

    def start(self) -> None:
        # Production defaults (not the test suite's fast ones) except where the
        # local cluster differs: Prometheus' address, no model volume.
        self.operator = OperatorProcess(
            self.cluster,
            log_name="operator-scale",
            admission_interval_s=10.0,
            job_resync_s=10.0,
            metrics_max_age_s=90.0,
            reservation_settle_s=300.0,
            leader_election_lease_s=15.0,
            retry_backoff_base_s=30.0,
            retry_backoff_max_s=600.0,
            **EXTRA_SETTINGS,
        )
        self.operator.start()
        self.pid = self.operator.pid

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None
        self.pid = None


class Kueue(System):
    name = "Kueue v0.17.0 minimalkueue"
    kinds = ("workloads", "localqueues")

    def __init__(self, cluster: LocalCluster, namespace: str, kueue_dir: Path) -> None:
        super().__init__(cluster, namespace)
        self.kueue_dir = kueue_dir

    def set_namespace(self, namespace: str) -> None:
        super().set_namespace(namespace)
        self.plural_path = f"apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads"

    def prepare(self) -> None:
        # The Workloads CRD is 1.4 MB: too large for client-side apply's annotation.
        for crd in sorted((self.kueue_dir / "crd").glob("*.yaml")):
            self.kubectl("apply", "--server-side", "-f", str(crd))
        names = [f"{plural}.kueue.x-k8s.io" for plural in KUEUE_CRDS]
        ok = procs.wait_for(
            lambda: (
                self.cluster.kubectl(
                    "wait",
                    "--for=condition=Established",
                    *[f"crd/{n}" for n in names],
                    "--timeout=10s",
                    check=False,
                ).returncode
                == 0
            ),
            timeout_s=180,
        )
        assert ok, "Kueue's CRDs did not become Established"
        super().prepare()
        # The flavor and ClusterQueue stay between scenarios (the workloads go).
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(kueue_setup(self.namespace)))

    def objects(self, count: int, prefix: str) -> list[dict[str, Any]]:
        return workloads(self.namespace, count, prefix)

    def start(self) -> None:
        argv = [
            str(self.kueue_dir / "minimalkueue"),
            "--kubeconfig",
            self.cluster.state.kubeconfig,
            "--metricsPort",
            "0",
        ]
        self.pid = procs.start("minimalkueue", argv, self.cluster.logs_dir)


EXTRA_SETTINGS: dict[str, object] = {}


def run_backlog(system: System, jobs: int, timeout_s: float, cleanup: bool = True) -> Result:
    system.prepare()
    t0 = time.time()
    system.create(system.objects(jobs, "b"))
    print(f"  {system.name}: created {jobs} in {time.time() - t0:.1f} s", flush=True)
    observer = Observer(system.cluster, "/" + system.plural_path)
    time.sleep(2.0)  # the watch is established
    started = time.time()
    system.start()
    assert system.pid is not None
    observer.wait_settled(min(jobs, SLOTS), started, timeout_s, quiet_s=5.0)
    wait_idle(system.pid)
    usage = proc_usage(system.pid)
    observer.close()
    result = summarise(system.name, "backlog", system.list(), observer, started, usage)
    # Stopped first: a running operator would admit the next jobs as capacity
    # frees during the deletion (the Workloads carry no finalizer here).
    system.stop()
    if cleanup:  # only where a later scenario needs the capacity back
        system.cleanup()
    return result


def run_live(system: System, count: int, timeout_s: float) -> Result:
    system.prepare()
    system.start()
    assert system.pid is not None
    time.sleep(15.0)  # started, caches synced, leader elected
    observer = Observer(system.cluster, "/" + system.plural_path)
    time.sleep(2.0)
    started = time.time()
    system.create(system.objects(count, "l"))
    print(f"  {system.name}: created {count} in {time.time() - started:.1f} s", flush=True)
    observer.wait_settled(min(count, SLOTS), started, timeout_s, quiet_s=5.0)
    wait_idle(system.pid)
    usage = proc_usage(system.pid)
    observer.close()
    result = summarise(system.name, "live", system.list(), observer, started, usage)
    # Stopped first: a running operator would admit the next jobs as capacity
    # frees during the deletion (the Workloads carry no finalizer here).
    system.stop()
    system.cleanup()
    return result


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(results: list[Result]) -> str:
    rows = [
        "| scenario | system | admitted / objects | p50 create->admitted (s) | "
        "p99 (s) | admissions/s | last admission after (s) | CPU-s | peak RSS (MiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        rows.append(
            f"| {r.scenario} | {r.system} | {r.admitted} / {r.objects} | {fmt(r.p50_s)} | "
            f"{fmt(r.p99_s)} | {fmt(r.rate_per_s)} | {fmt(r.span_s)} | {fmt(r.cpu_s)} | "
            f"{fmt(r.peak_rss_mib, 0)} |"
        )
    by = {(r.scenario, r.system): r for r in results}
    for scenario in ("backlog", "live"):
        ours, theirs = by.get((scenario, Ours.name)), by.get((scenario, Kueue.name))
        if ours and theirs and ours.rate_per_s and theirs.rate_per_s:
            rows.append("")
            rows.append(
                f"{scenario}: throughput ours/Kueue = "
                f"{ours.rate_per_s / theirs.rate_per_s:.2f}x; peak RSS ours/Kueue = "
                f"{ours.peak_rss_mib / theirs.peak_rss_mib:.2f}x; CPU-s ours/Kueue = "
                f"{ours.cpu_s / max(theirs.cpu_s, 0.01):.2f}x"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--live", type=int, default=400, help="objects in the live scenario (0: skip)")
    ap.add_argument("--only", choices=["ours", "kueue"])
    ap.add_argument("--scenario", choices=["backlog", "live"])
    ap.add_argument("--timeout", type=float, default=300.0, help="per scenario (s)")
    ap.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    ap.add_argument(
        "--operator-setting",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="extra operator setting (e.g. admission_write_concurrency=1), for lever runs",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    for item in args.operator_setting:
        key, _, value = item.partition("=")
        EXTRA_SETTINGS[key] = json.loads(value)
    kueue_dir = Path(
        subprocess.run(
            ["bash", str(REPO_ROOT / "bench" / "scale" / "build-kueue.sh")]
            + (["--print"] if args.only == "ours" else []),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    cluster = LocalCluster(
        ClusterConfig(
            name="zopilot-scale",
            state_dir=STATE_DIR,
            gpu_nodes=GPU_NODES,
            gpu_replicas=REPLICAS,
            cpu_nodes=0,
        )
    )
    t0 = time.time()
    cluster.up()
    print(f"cluster up ({GPU_NODES} GPU nodes) in {time.time() - t0:.0f} s", flush=True)
    results: list[Result] = []
    try:
        systems: list[System] = []
        if args.only != "kueue":
            systems.append(Ours(cluster, "bench-ours"))
        if args.only != "ours":
            systems.append(Kueue(cluster, "bench-kueue", kueue_dir))
        live_follows = bool(args.live) and args.scenario in (None, "live")
        for scenario in ("backlog", "live"):
            if args.scenario not in (None, scenario) or (scenario == "live" and not args.live):
                continue
            for system in systems:
                system.set_namespace(f"{system.base_namespace}-{scenario}-{int(time.time())}")
                print(f"{scenario}: {system.name}", flush=True)
                if scenario == "backlog":
                    # Left in place when no live scenario follows: with the
                    # controller stopped they are static and cost nothing.
                    results.append(
                        run_backlog(system, args.jobs, args.timeout, cleanup=live_follows)
                    )
                else:
                    results.append(run_live(system, args.live, args.timeout))
                print(table(results[-1:]).splitlines()[-1], flush=True)
    finally:
        if not args.keep:
            cluster.down()
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
