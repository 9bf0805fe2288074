"""End to end with the REAL worker image: kubectl apply -> operator -> pod on the
real GPU node (a kubelet on containerd; its GPU is simulated: labels, capacity,
DCGM numbers) -> containerd runs `zopilot-worker run-job` in
localhost/zopilot/worker:dev, as UID 10001 on a read-only root, with the
spec ConfigMap and the PVCs (hostPath PVs) really mounted -> results on the
output volume -> the termination message the runtime wrote -> summary on the
job's status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from zopilot_dev import images
from zopilot_dev.builders import DocumentJobBuilder
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.operatorproc import OperatorProcess
from zopilot_dev.waiting import event_reasons, wait_job

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LABELS = ["invoice", "receipt", "contract", "other"]


@pytest.fixture(scope="module")
def real_operator(crd: LocalCluster) -> Iterator[OperatorProcess]:
    crd.load_images([images.WORKER])  # builds and imports it when it changed
    op = OperatorProcess(
        crd, log_name="operator-e2e", real_pods=True, model_pvc_name="zopilot-models"
    )
    op.start()
    yield op
    op.stop()


def test_a_job_over_mixed_documents_runs_the_real_worker(
    real_operator: OperatorProcess, namespace: str
) -> None:
    from zopilot_worker.testing.documents import make_html, sample_corpus
    from zopilot_worker.testing.tiny_models import build_tiny_mixtral

    c = real_operator.cluster
    inbox = c.create_volume(namespace, "inbox")
    files = sample_corpus(inbox / "docs", n_invoices=2, n_receipts=1, n_contracts=1)
    build_tiny_mixtral(c.create_volume(namespace, "zopilot-models") / "tiny-mixtral")
    out = c.create_volume(namespace, "results")
    html = make_html(None, "Receipt", ["Thank you for your purchase", "Total 12.00 EUR"])
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "mail", "namespace": namespace},
        "data": {"receipt.html": html.decode() if isinstance(html, bytes) else html},
    }
    c.kubectl("apply", "-f", "-", input=json.dumps(cm))
    job = (
        DocumentJobBuilder("mixed", namespace)
        .volume("inbox", "docs/*")
        .config_map("mail", "receipt.html")
        .classify(LABELS, model="tiny-mixtral", quantization="none")
        .output("results", "run1")
    )
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump(job.obj()))

    st = wait_job(c, namespace, "mixed", phase="Succeeded", timeout_s=300)
    # A real container of the worker image ran it, on the real GPU node.
    pod = json.loads(c.kubectl("get", "pod", "-n", namespace, st["workerPod"], "-o", "json").stdout)
    node = c.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json").stdout
    assert st["admission"]["node"] == pod["spec"]["nodeName"]
    assert "kwok.x-k8s.io/node" not in json.loads(node)["metadata"].get("annotations", {})
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["containerID"].startswith("containerd://") and cs["image"] == images.WORKER
    assert cs["state"]["terminated"]["exitCode"] == 0
    n = len(files) + 1
    assert st["progress"] == {"documents": n, "done": n, "failed": 0, "summary": f"{n}/{n}"}
    assert sum(st["results"]["byLabel"].values()) == n
    assert set(st["results"]["byLabel"]) <= set(LABELS)
    assert st["gpuSeconds"] > 0 and st["costUSD"] == pytest.approx(
        st["gpuSeconds"] * 0.00031, rel=1e-3
    )
    lines = [json.loads(x) for x in (out / "run1" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == n and all(x["label"] in LABELS for x in lines)
    assert all(
        (out / "run1" / Path(x["markdown_path"]).name).exists()
        for x in lines
        if x.get("markdown_path")
    )
    assert {"Queued", "Admitted", "PodCreated", "Running", "Succeeded"} <= set(
        event_reasons(c, namespace, "mixed")
    )
