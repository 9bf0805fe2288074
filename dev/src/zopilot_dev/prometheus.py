"""The real Prometheus of the local cluster: config, start, queries.

Prometheus comes from Debian's ``prometheus`` package (installed by
``dev/install-deps.sh``). It scrapes the DCGM stand-in and any target a test
or the demo drops into ``<state>/prometheus/targets/*.json`` (file_sd), e.g.
the operator's own metrics.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml


def binary() -> str:
    path = shutil.which("prometheus")
    if not path:
        raise RuntimeError(
            "prometheus not found: run dev/install-deps.sh (installs Debian's prometheus package)"
        )
    return path


def write_config(root: Path, dcgm_target: str, scrape_interval_s: float) -> Path:
    (root / "targets").mkdir(parents=True, exist_ok=True)
    interval = f"{int(scrape_interval_s * 1000)}ms"
    cfg = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "dcgm-exporter",
                # Keep the exporter's own Hostname/gpu labels, as the real
                # ServiceMonitor of the GPU operator does.
                "honor_labels": True,
                "static_configs": [{"targets": [dcgm_target]}],
            },
            {
                "job_name": "zopilot",
                "file_sd_configs": [
                    {"files": [str(root / "targets" / "*.json")], "refresh_interval": "1s"}
                ],
            },
        ],
    }
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def argv(root: Path, port: int) -> list[str]:
    return [
        binary(),
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
    ]


def add_target(root: Path, name: str, target: str, labels: dict[str, str] | None = None) -> None:
    """Register a scrape target (host:port) under job "zopilot" via file_sd."""
    path = root / "targets" / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [target], "labels": labels or {"component": name}}]))
    tmp.replace(path)


def query(url: str, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Instant query; returns the result vector (raises on any error)."""
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=timeout_s)
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus query failed: {body}")
    return list(body["data"]["result"])
