"""The end-to-end demo (``make demo``): local cluster, CRD, operator, sample
DocumentJobs over generated invoices, receipts and contracts, live progress,
and a results table. A second run reuses the cluster, the built binaries and
the tiny model.

The operator is installed with the Helm chart and runs in-cluster, as a real
container of ``localhost/zopilot/operator:dev`` on the real CPU node; the
worker pods are real containers of ``localhost/zopilot/worker:dev``, run by a
real kubelet on the real GPU node ``real-gpu-0`` (both images built with
podman on first use and imported into the nodes' containerd). Simulated here
(see README): that node's GPU (labels, ``nvidia.com/gpu`` capacity, DCGM
numbers that follow the worker pods) and model weights (a tiny random Mixtral
built locally). Everything else is real.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import yaml

from . import chart, images
from .builders import DocumentJobBuilder
from .cluster import LocalCluster
from .config import ClusterConfig
from .procs import wait_for
from .waiting import get_job

NS = "zopilot-demo"
LABELS = ["invoice", "receipt", "contract", "other"]
TERMINAL = {"Succeeded", "Failed"}


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def prepare_inputs(c: LocalCluster) -> None:
    from zopilot_worker.testing.documents import sample_corpus
    from zopilot_worker.testing.tiny_models import build_tiny_mixtral

    inbox = c.create_volume(NS, "inbox")
    files = sample_corpus(inbox / "docs", n_invoices=3, n_receipts=3, n_contracts=3)
    say(
        f"{len(files)} generated documents in PVC inbox: "
        + ", ".join(sorted(p.name for p in files))
    )
    models = c.create_volume(NS, "zopilot-models")
    t0 = time.monotonic()
    build_tiny_mixtral(models / "tiny-mixtral")  # reused when already there
    say(
        f"tiny random Mixtral (MixtralConfig, local tokenizer) ready in PVC zopilot-models "
        f"({time.monotonic() - t0:.1f} s)"
    )
    c.create_volume(NS, "results")


def jobs() -> list[dict[str, Any]]:
    def job(name: str, pattern: str) -> DocumentJobBuilder:
        return (
            DocumentJobBuilder(name, NS)
            .volume("inbox", pattern)
            .classify(LABELS, model="tiny-mixtral", quantization="none")
            .output("results", name)
        )

    return [
        job("invoices", "docs/invoice-*").obj(),
        job("receipts", "docs/receipt-*").obj(),
        job("contracts", "docs/contract-*").obj(),
        # Planning before anything starts: Mixtral 8x7B does not fit a 24 GiB 4090.
        DocumentJobBuilder("mixtral-int8", NS)
        .volume("inbox", "docs/*")
        .classify(LABELS, model="mixtral-8x7b-instruct", quantization="int8")
        .obj(),
    ]


def table(c: LocalCluster) -> str:
    return c.kubectl("get", "documentjobs", "-n", NS, "-o", "wide").stdout.rstrip()


def seconds_between(a: str | None, b: str | None) -> str:
    from datetime import datetime

    if not a or not b:
        return "-"
    fa, fb = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in (a, b))
    return f"{(fb - fa).total_seconds():.0f}"


def results(c: LocalCluster, names: list[str]) -> None:
    rows = [
        (
            "job",
            "phase",
            "node",
            "GPU MiB",
            "docs",
            "by label",
            "GPU s",
            "cost $",
            "apply->admit s",
            "apply->done s",
        )
    ]
    for name in names:
        j = get_job(c, NS, name)
        st = j.get("status") or {}
        res = st.get("results") or {}
        created = j["metadata"]["creationTimestamp"]
        rows.append(
            (
                name,
                st.get("phase", "?"),
                (st.get("admission") or {}).get("node", "-"),
                str((st.get("plan") or {}).get("requiredMiB", "-")),
                (st.get("progress") or {}).get("summary", "-"),
                ", ".join(f"{k}={v}" for k, v in sorted((res.get("byLabel") or {}).items())) or "-",
                f"{st.get('gpuSeconds', 0):.1f}",
                f"{st.get('costUSD', 0):.4f}",
                seconds_between(created, (st.get("admission") or {}).get("decidedAt")),
                seconds_between(created, st.get("finishedAt")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for name in names:
        st = get_job(c, NS, name).get("status") or {}
        if st.get("phase") == "Failed":
            print(f"\n{name}: {st.get('reason')}: {st.get('message')}")
    out = c.config.state_dir / "volumes" / NS / "results"
    print("\nper document (results.jsonl in PVC results):")
    for name in names:
        f = out / name / "results.jsonl"
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            d = json.loads(line)
            score = (d.get("scores") or {}).get(d.get("label"), 0.0)
            err = (d.get("error") or {}).get("code", "")
            print(
                f"  {name:<10} {d.get('name', '?'):<18} {d.get('kind', ''):<5} "
                f"pages={d.get('pages', 0):<3} label={d.get('label') or '-':<9} "
                f"score={score:.2f} {err}"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the jobs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t_start = time.monotonic()
    c = LocalCluster(ClusterConfig())
    say("bringing up the local cluster (real control plane, real and kwok nodes, Prometheus)")
    t0 = time.monotonic()
    c.up()
    say(f"cluster ready in {time.monotonic() - t0:.1f} s; KUBECONFIG={c.state.kubeconfig}")
    print(
        c.kubectl(
            "get", "nodes", "-L", "nvidia.com/gpu.product", "-L", "nvidia.com/gpu.replicas"
        ).stdout
    )
    c.kubectl("apply", "--server-side", "-f", "crds/documentjob.yaml")
    c.kubectl(
        "wait", "--for=condition=Established", "crd/documentjobs.zopilot.dev", "--timeout=60s"
    )
    if c.kubectl("get", "namespace", NS, check=False).returncode != 0:
        c.kubectl("create", "namespace", NS)
    c.kubectl(
        "label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    say(
        "installing the Helm chart (charts/zopilot): the operator runs in-cluster from "
        f"{images.OPERATOR}; worker pods run {images.WORKER} on the real GPU node (a first "
        "run builds the images with podman: about 10 minutes; later runs reuse them)"
    )
    t0 = time.monotonic()
    release = chart.install(c, "zopilot", NS)
    say(
        f"helm release {release.name} ready in {time.monotonic() - t0:.1f} s "
        f"(kubectl -n {NS} logs deploy/{release.deployment})"
    )
    # Jobs of an earlier run go first (their pods with them).
    c.kubectl(
        "delete", "documentjobs", "--all", "-n", NS, "--wait=true", "--timeout=60s", check=False
    )
    prepare_inputs(c)
    manifests = jobs()
    t_apply = time.monotonic()
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    names = [m["metadata"]["name"] for m in manifests]
    say(f"applied {len(names)} DocumentJobs: {', '.join(names)}")
    last = ""

    def done() -> bool:
        nonlocal last
        now = table(c)
        if now != last:
            print(f"\n[{time.monotonic() - t_apply:5.1f} s]\n{now}", flush=True)
            last = now
        phases = [(get_job(c, NS, n).get("status") or {}).get("phase") for n in names]
        return all(p in TERMINAL for p in phases)

    if not wait_for(done, timeout_s=args.timeout, interval_s=1.0):
        say(f"jobs did not finish within {args.timeout:.0f} s; operator log tail:")
        logs = c.kubectl("logs", "-n", NS, f"deploy/{release.deployment}", "--tail=40", check=False)
        print(logs.stdout + logs.stderr)
        return 1
    say(f"all jobs finished {time.monotonic() - t_apply:.1f} s after kubectl apply\n")
    results(c, names)
    ok = [get_job(c, NS, n)["status"]["phase"] for n in names[:3]] == ["Succeeded"] * 3
    expected_fail = get_job(c, NS, "mixtral-int8")["status"].get("reason") == "NeverFits"
    say(
        "labels come from a tiny RANDOM Mixtral (no weights can be downloaded here): the "
        "pipeline is real, the predictions are not"
    )
    say(
        'the cluster and the operator stay up for a look (dev/cluster status; eval "$(dev/cluster '
        'env)"; kubectl describe dj -n zopilot-demo; helm list -n zopilot-demo); '
        "dev/cluster down stops it all"
    )
    say(f"demo finished in {time.monotonic() - t_start:.1f} s")
    return 0 if ok and expected_fail else 1


if __name__ == "__main__":
    sys.exit(main())
