"""Live progress parsing from a worker's /metrics (pure)."""

from __future__ import annotations

import httpx
from zopilot_operator.progress import Progress, metrics_url, parse


def test_parse_reads_the_job_document_counts() -> None:
    text = (
        "# HELP zopilot_worker_job_documents run-job documents\n"
        "# TYPE zopilot_worker_job_documents gauge\n"
        'zopilot_worker_job_documents{state="total"} 10.0\n'
        'zopilot_worker_job_documents{state="done"} 7.0\n'
        'zopilot_worker_job_documents{state="failed"} 1.0\n'
        "zopilot_worker_ready 1.0\n"
    )
    assert parse(text) == Progress(documents=10, done=7, failed=1)


def test_parse_without_the_metric_or_with_garbage_is_none() -> None:
    assert parse("zopilot_worker_ready 1.0\n") is None
    assert parse("this is not { prometheus") is None


def test_metrics_url_needs_a_pod_ip_and_the_metrics_port() -> None:
    pod = {
        "status": {"podIP": "10.1.2.3"},
        "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 8080}]}]},
    }
    assert metrics_url(pod) == "http://10.1.2.3:8080/metrics"
    assert metrics_url({"status": {}, "spec": pod["spec"]}) is None
    assert metrics_url({"status": {"podIP": "10.1.2.3"}, "spec": {"containers": [{}]}}) is None


def test_metrics_url_of_an_ipv6_pod_has_brackets() -> None:
    spec = {"containers": [{"ports": [{"name": "metrics", "containerPort": 8080}]}]}
    pod = {"status": {"podIP": "fd00:10:244::5"}, "spec": spec}
    assert metrics_url(pod) == "http://[fd00:10:244::5]:8080/metrics"
    httpx.URL(metrics_url(pod) or "")  # a URL httpx accepts
    assert metrics_url({"status": {"podIP": "not-an-ip"}, "spec": spec}) is None
