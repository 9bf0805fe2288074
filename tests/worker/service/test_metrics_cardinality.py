"""Whatever clients send, the number of Prometheus series stays bounded."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from zopilot_worker.metrics import (
    HTTP_METHODS,
    MAX_LABEL_VALUE_CHARS,
    OTHER_LABEL,
    CappedLabels,
    WorkerMetrics,
    method_label,
)
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings


def _series(client: Any, name: str) -> list[dict[str, str]]:
    return [
        s.labels
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == name
    ]


def _raw_request(base_url: str, request_line: str) -> None:
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(f"{request_line}\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass


def test_odd_methods_and_paths_do_not_make_new_series(
    make_settings: Callable[..., WorkerSettings], serve_app: Any
) -> None:
    app = create_app(make_settings(), doctor=None)
    with serve_app(app) as client:
        base = str(client.base_url)
        for i in range(40):
            _raw_request(base, f"M{i}X /extract HTTP/1.1")  # any token is a valid method
            _raw_request(base, f"GET /no/such/path/{i}?q={i} HTTP/1.1")
            client.request("PROPFIND", f"/health/{i}")
        client.get("/health")
        series = _series(client, "zopilot_worker_request_duration_seconds_count")
    methods = {s["method"] for s in series}
    endpoints = {s["endpoint"] for s in series}
    assert methods <= HTTP_METHODS | {"OTHER"}
    assert "OTHER" in methods
    assert endpoints <= {"/extract", "/classify", "/health", "/ready", "/metrics", "unmatched"}
    assert not any("no/such" in e for e in endpoints)
    # 120 odd requests, a handful of series.
    assert len(series) <= 6


def test_classification_labels_are_capped(
    make_settings: Callable[..., WorkerSettings], model_root: Path, serve_app: Any
) -> None:
    metrics = WorkerMetrics(max_classification_labels=3)
    app = create_app(make_settings(model_root=model_root), metrics=metrics, doctor=None)
    with serve_app(app) as client:
        for i in range(8):
            body = {"text": f"Document {i}", "labels": [f"kind{i} a", f"kind{i} b"]}
            assert client.post("/classify", json=body).status_code == 200
        series = _series(client, "zopilot_worker_classifications_total")
    labels = [s["label"] for s in series]
    assert len(labels) == 4  # the first 3 distinct labels by name, then one OTHER series
    assert OTHER_LABEL in labels
    assert sum(1 for s in series if s["label"] != OTHER_LABEL) == 3


def test_capped_labels_unit() -> None:
    cap = CappedLabels(2)
    assert [cap(v) for v in ("a", "b", "a", "c", "b", "d")] == [
        "a",
        "b",
        "a",
        OTHER_LABEL,
        "b",
        OTHER_LABEL,
    ]
    assert len(CappedLabels(5)("x" * 10_000)) == MAX_LABEL_VALUE_CHARS
    assert method_label("GET") == "GET"
    assert method_label("get") == "OTHER"  # methods are case-sensitive tokens
    assert method_label("BREW") == "OTHER"
