"""The chart installed for real: the operator runs in-cluster from its image.

``helm install`` (``zopilot_dev.chart``) into a namespace that enforces Pod
Security ``restricted``; the operator Deployment's pod is a real container of
``localhost/zopilot/operator:dev`` on the real CPU node, under the chart's
ServiceAccount (RBAC enforced by the real API server), reaching the API server
through the ``kubernetes`` Service and Prometheus through the host
(``LocalCluster.expose_control_plane``). Its worker pods are real containers of
the worker image on the real GPU node. What stays simulated: the GPU (labels,
``nvidia.com/gpu`` capacity, DCGM numbers).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import yaml
from zopilot_dev import chart, images
from zopilot_dev.builders import DocumentJobBuilder
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.procs import wait_for
from zopilot_dev.realnodes import REAL_NODE_LABEL, REAL_NODE_TOLERATION
from zopilot_dev.waiting import get_job, wait_job

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LABELS = ["invoice", "receipt", "contract", "other"]
TOKEN = "in-cluster-test-token"
SERVICE_MIB = 2048  # what the opt-in HTTP service plans to hold on its GPU


@dataclass
class Install:
    release: chart.Release

    @property
    def c(self) -> LocalCluster:
        return self.release.c

    @property
    def ns(self) -> str:
        return self.release.namespace

    def operator_pods(self) -> list[dict[str, Any]]:
        out = self.c.kubectl(
            "get", "pods", "-n", self.ns, "-o", "json",
            "-l", "app.kubernetes.io/component=operator",
        ).stdout  # fmt: skip
        return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]

    def submit(self, name: str, documents: int = 1, gpu: str = "9Gi") -> None:
        job = DocumentJobBuilder(name, self.ns)
        for i in range(documents):
            job = job.config_map("mail", f"note-{i % 2}.html")
        job = job.classify(LABELS, model="tiny-mixtral", quantization="none").gpu_memory(gpu)
        self.c.kubectl("apply", "-f", "-", input=yaml.safe_dump(job.obj()))

    def worker_pods(self, job: str) -> list[dict[str, Any]]:
        uid = get_job(self.c, self.ns, job)["metadata"]["uid"]
        out = self.c.kubectl(
            "get", "pods", "-n", self.ns, "-o", "json", "-l", f"zopilot.dev/job-uid={uid}"
        ).stdout
        return list(json.loads(out)["items"])


@pytest.fixture(scope="module")
def install(crd: LocalCluster) -> Iterator[Install]:
    from zopilot_worker.testing.documents import make_html
    from zopilot_worker.testing.tiny_models import build_tiny_mixtral

    ns = f"zic-{uuid.uuid4().hex[:6]}"
    crd.kubectl("create", "namespace", ns)
    crd.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    build_tiny_mixtral(crd.create_volume(ns, "zopilot-models") / "tiny-mixtral")
    notes = {
        f"note-{i}.html": make_html(None, title, [line]).decode()
        for i, (title, line) in enumerate(
            [("Receipt", "Thank you for your purchase. Total 12.00 EUR"),
             ("Invoice", "Invoice 42, due in 30 days: 310.00 EUR")]
        )
    }  # fmt: skip
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "mail", "namespace": ns}, "data": notes}  # fmt: skip
    crd.kubectl("apply", "-f", "-", input=json.dumps(cm))
    crd.kubectl(
        "create", "secret", "generic", "svc-token", "-n", ns, f"--from-literal=token={TOKEN}"
    )
    # Job pods may fetch plain http from the host (GatedServer): the on-prem fetch
    # policy, set through the chart's workerEnv.
    fetch_policy = {
        "ZOPILOT_WORKER_FETCH_ALLOW_HTTP": "true",
        "ZOPILOT_WORKER_FETCH_PRIVATE_HOSTS": json.dumps([crd.host_ip]),
    }
    values = chart.local_values(crd, **chart.QUICK, workerEnv=fetch_policy)
    values["worker"]["apiToken"] = {"existingSecret": "svc-token", "key": "token"}
    values["service"] = {
        "enabled": True,
        "gpuMemoryMiB": SERVICE_MIB,
        # No classification queue: a second concurrent /classify is answered 503 at
        # once, so the test can overload the service for real.
        "settings": {
            "CLASSIFY_MODEL": "tiny-mixtral",
            "QUANTIZATION": "none",
            "CLASSIFY_QUEUE_SIZE": 0,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "1Gi"},
            "limits": {"nvidia.com/gpu": 1},
        },
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            REAL_NODE_TOLERATION,
        ],
    }
    release = chart.install(crd, f"z{uuid.uuid4().hex[:5]}", ns, values)
    yield Install(release)
    release.uninstall()
    crd.kubectl("delete", "documentjobs", "--all", "-n", ns, "--wait=true", "--timeout=120s")
    assert wait_for(
        lambda: crd.kubectl("get", "pods", "-n", ns, "-o", "name").stdout.strip() == "",
        timeout_s=120,
    ), crd.kubectl("get", "pods", "-n", ns).stdout
    crd.kubectl("delete", "namespace", ns, "--wait=false")
    left = chart.cluster_leftovers(crd, release.name)
    assert not left, f"helm uninstall left {left}"


def test_the_operator_runs_in_cluster_as_the_charts_pod(install: Install) -> None:
    (pod,) = install.operator_pods()
    spec, status = pod["spec"], pod["status"]
    assert spec["serviceAccountName"] == install.release.deployment
    node = json.loads(install.c.kubectl("get", "node", spec["nodeName"], "-o", "json").stdout)
    assert node["metadata"]["labels"].get(REAL_NODE_LABEL) == "true"
    (cs,) = status["containerStatuses"]
    assert cs["ready"] and cs["containerID"].startswith("containerd://")
    assert cs["image"] == images.OPERATOR
    ctx = spec["containers"][0]["securityContext"]
    assert ctx["readOnlyRootFilesystem"] and ctx["capabilities"]["drop"] == ["ALL"]
    # `helm test`: the hook pod proves the operator is ready and the CRD is served.
    out = install.release.run("test", install.release.name, "-n", install.ns).stdout
    assert "Phase:          Succeeded" in out, out


def service_url(install: Install) -> str:
    """The HTTP service once Ready, through its pod IP (the host routes to pods on
    the real nodes; there is no kube-proxy for the Service's ClusterIP)."""
    c, sel = install.c, "app.kubernetes.io/component=service"
    c.kubectl(
        "wait", "--for=condition=Ready", "pod", "-l", sel, "-n", install.ns, "--timeout=300s",
        timeout_s=330,
    )  # fmt: skip
    (pod,) = json.loads(c.kubectl("get", "pods", "-l", sel, "-n", install.ns, "-o", "json").stdout)[
        "items"
    ]
    assert pod["spec"]["nodeName"] == "real-gpu-0"
    return f"http://{pod['status']['podIP']}:8080"


def test_the_http_service_answers_real_requests(install: Install) -> None:
    url = service_url(install)
    page = make_page()
    files = {"file": ("receipt.html", page, "text/html")}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{url}/extract", files=files, timeout=60).status_code == 401
    r = httpx.post(f"{url}/extract", files=files, headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "html" and "Thank you for your purchase" in r.json()["markdown"]
    r = httpx.post(
        f"{url}/classify", files=files, data={"labels": LABELS}, headers=auth, timeout=300
    )
    assert r.status_code == 200, r.text
    assert r.json()["label"] in LABELS and r.json()["model"] == "tiny-mixtral"


class GatedServer:
    """An HTTP server on the host's address as the real nodes' pods reach it: GET
    ``/<name>`` answers ``page`` once ``open`` is set (a job pod's fetch waits there,
    so the job stays Running as long as the test needs)."""

    def __init__(self, host: str, page: bytes) -> None:
        self.open = threading.Event()
        self.requests: list[str] = []
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gate.requests.append(self.path)
                gate.open.wait(timeout=120)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> GatedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.open.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)
        assert not self._thread.is_alive()


def overload(url: str, auth: dict[str, str], page: bytes) -> list[int]:
    """Four /classify requests at once against one slot and no queue: statuses."""
    files = {"file": ("p.html", page, "text/html")}

    def one(_: int) -> int:
        r = httpx.post(
            f"{url}/classify", files=files, data={"labels": LABELS}, headers=auth, timeout=300
        )
        if r.status_code == 503 and r.json()["error"]["code"] == "overloaded":
            assert int(r.headers["Retry-After"]) > 0
        return r.status_code

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(4)))


def test_the_worker_dashboard_shows_the_live_service_and_a_running_job(
    install: Install,
) -> None:
    """Every Worker dashboard query against what the real Prometheus scrapes from the
    running service pod and from a running job's pod (the chart's PodMonitor does this
    where prometheus-operator runs; here each pod is a file_sd target): after real
    requests, an overload answered 503, and a job held Running by a gated fetch."""
    from .test_chart_cluster import panel_queries

    c = install.c
    url = service_url(install)
    c.add_scrape_target("zopilot-service", url.removeprefix("http://"))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    page = make_page()
    for _ in range(3):
        r = httpx.post(
            f"{url}/extract", files={"file": ("p.html", page, "text/html")}, headers=auth,
            timeout=120,
        )  # fmt: skip
        assert r.status_code == 200, r.text
    # Overload: one request holds the only classification slot, the rest get 503.
    statuses: list[int] = []

    def rejected() -> bool:
        statuses.extend(overload(url, auth, page))
        return 503 in statuses

    assert wait_for(rejected, timeout_s=300), statuses
    assert 200 in statuses and set(statuses) <= {200, 503}, statuses

    with GatedServer(c.host_ip, page) as gated:
        job = (
            DocumentJobBuilder("watched", install.ns)
            .config_map("mail", "note-0.html")
            .url(f"{gated.url}/slow.html")
            .classify(LABELS, model="tiny-mixtral", quantization="none")
            .gpu_memory("9Gi")
        )
        c.kubectl("apply", "-f", "-", input=yaml.safe_dump(job.obj()))
        assert wait_for(lambda: bool(gated.requests), timeout_s=300), "the job never fetched"
        (pod,) = install.worker_pods("watched")
        (port,) = [p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]]
        c.add_scrape_target("zopilot-job", f"{pod['status']['podIP']}:{port}")
        worker = {k: v for k, v in panel_queries().items() if k.startswith("worker: ")}
        empty: set[str] = set()

        def served() -> bool:
            empty.clear()
            empty.update(k for k, exprs in worker.items() if not any(c.query(e) for e in exprs))
            return not empty

        assert wait_for(served, timeout_s=90), f"panels without data: {sorted(empty)}"
        gated.open.set()
        st = wait_job(c, install.ns, "watched", phase="Succeeded", timeout_s=300)
    assert st["progress"]["summary"] == "2/2", st
    assert gated.requests == ["/slow.html"]


def make_page() -> bytes:
    from zopilot_worker.testing.documents import make_html

    return make_html(None, "Receipt", ["Thank you for your purchase", "Total 12.00 EUR"])


def test_a_job_runs_end_to_end_through_the_install(install: Install) -> None:
    service_url(install)  # the service holds its GPU memory from here on
    install.submit("first", documents=2)
    st = wait_job(install.c, install.ns, "first", phase="Succeeded", timeout_s=300)
    # Admission counted the service's planned memory on the GPU they share.
    assert st["admission"]["freeMiB"] <= 24564 - SERVICE_MIB, st["admission"]
    assert st["progress"]["summary"] == "2/2" and sum(st["results"]["byLabel"].values()) == 2
    (pod,) = install.worker_pods("first")
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["image"] == images.WORKER and cs["containerID"].startswith("containerd://")
    assert st["admission"]["node"] == pod["spec"]["nodeName"]


@pytest.mark.parametrize("change", ["upgrade", "rollback"])
def test_upgrade_and_rollback_with_jobs_in_flight_lose_nothing(
    install: Install, change: str
) -> None:
    """Three jobs of 9 GiB on one 24 GiB GPU: two run, one waits. The chart changes
    under them (a new value rolls the operator's pod; then back to the revision before);
    every job still succeeds on its first attempt with exactly one pod."""
    names = [f"{change}-{i}" for i in range(3)]
    for n in names:
        install.submit(n, documents=2)
    assert wait_for(
        lambda: any(
            (get_job(install.c, install.ns, n).get("status") or {}).get("phase")
            in ("Admitted", "Running")
            for n in names
        ),
        timeout_s=120,
    )
    before = {p["metadata"]["uid"] for p in install.operator_pods()}
    release = install.release
    if change == "upgrade":  # a new price: the config checksum rolls the operator's pod
        release.upgrade("--set-json", "worker.pricePerGpuSecondUsd=0.0005")
    else:
        release.run("rollback", release.name, "-n", release.namespace)
        release.wait_operator_ready()
    assert {p["metadata"]["uid"] for p in install.operator_pods()}.isdisjoint(before)
    for n in names:
        st = wait_job(install.c, install.ns, n, phase="Succeeded", timeout_s=600)
        assert st.get("attempt", 1) == 1, (n, st)
        assert len(install.worker_pods(n)) == 1, n
