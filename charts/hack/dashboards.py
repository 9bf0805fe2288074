"""Generate the chart's Grafana dashboards (charts/zopilot/dashboards/*.json).

Panels are declared here in a few lines each; the JSON Grafana loads is
written from them, so every dashboard has the same shape: a ``datasource``
variable (no hard-coded UID), a unit on every panel, ``$__rate_interval`` in
every rate. tests/chart checks the files are what this writes, that every
query parses (promtool) and that it uses only metric names defined in code.

    .venv/bin/python charts/hack/dashboards.py          # rewrite the files
    .venv/bin/python charts/hack/dashboards.py --check  # exit 1 if they drift
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "zopilot" / "dashboards"
HOW = ".venv/bin/python charts/hack/dashboards.py"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MIB = "1048576"
RI = "$__rate_interval"


@dataclass
class Panel:
    title: str
    description: str
    unit: str
    targets: list[tuple[str, str]]  # (expr, legend)
    kind: str = "timeseries"
    width: int = 12
    stack: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def quantiles(metric: str, selector: str = "") -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{selector}[{RI}])))",
            f"p{int(float(q) * 100)}",
        )
        for q in ("0.5", "0.95")
    ]


OVERVIEW = [
    Panel(
        "Jobs by phase",
        "DocumentJobs per phase, as the admission leader counts them each round.",
        "short",
        [("sum by (phase) (zopilot_operator_jobs)", "{{phase}}")],
        stack=True,
    ),
    Panel(
        "Admissions per second",
        "Jobs admitted onto a GPU per second.",
        "ops",
        [(f"sum(rate(zopilot_operator_admissions_total[{RI}]))", "admissions")],
    ),
    Panel(
        "Queue wait",
        "Seconds from entering the queue to admission (p50, p95).",
        "s",
        quantiles("zopilot_operator_queue_wait_seconds"),
    ),
    Panel(
        "Waiting reasons",
        "Why queued jobs were left waiting, per job and admission round.",
        "ops",
        [
            (
                f"sum by (reason) (rate(zopilot_operator_rejections_total[{RI}]))",
                "{{reason}}",
            )
        ],
        stack=True,
    ),
    Panel(
        "Finished jobs by reason",
        "Jobs that reached Succeeded or Failed per second, by phase and reason.",
        "ops",
        [
            (
                f"sum by (phase, reason) (rate(zopilot_operator_jobs_finished_total[{RI}]))",
                "{{phase}} {{reason}}",
            )
        ],
    ),
    Panel(
        "GPU-seconds per namespace",
        "GPU-seconds of finished attempts in the selected time range.",
        "s",
        [
            (
                "sum by (namespace) (increase(zopilot_operator_gpu_seconds_total[$__range]))",
                "{{namespace}}",
            )
        ],
        kind="bargauge",
        width=6,
    ),
    Panel(
        "Cost per namespace",
        "USD of finished attempts in the selected time range (price per GPU-second).",
        "currencyUSD",
        [
            (
                "sum by (namespace) (increase(zopilot_operator_cost_usd_total[$__range]))",
                "{{namespace}}",
            )
        ],
        kind="bargauge",
        width=6,
    ),
    Panel(
        "Operator errors",
        "Failed Prometheus queries and handler errors per second.",
        "ops",
        [
            (
                f"sum by (reason) (rate(zopilot_operator_prometheus_query_errors_total[{RI}]))",
                "prometheus {{reason}}",
            ),
            (
                f"sum by (handler, kind) (rate(zopilot_operator_reconcile_errors_total[{RI}]))",
                "{{handler}} {{kind}}",
            ),
        ],
    ),
]

GPU_MEMORY = [
    Panel(
        "DCGM free memory per GPU",
        "DCGM_FI_DEV_FB_FREE (MiB, shown in bytes) per node and GPU.",
        "bytes",
        [(f"DCGM_FI_DEV_FB_FREE * {MIB}", "{{Hostname}}{{hostname}}{{node}} gpu {{gpu}}")],
    ),
    Panel(
        "DCGM used memory per GPU",
        "DCGM_FI_DEV_FB_USED (MiB, shown in bytes) per node and GPU.",
        "bytes",
        [(f"DCGM_FI_DEV_FB_USED * {MIB}", "{{Hostname}}{{hostname}}{{node}} gpu {{gpu}}")],
    ),
    Panel(
        "Reserved by admitted jobs",
        "requiredMiB of Admitted and Running jobs per node and GPU (the admission leader's view).",
        "bytes",
        [
            (
                "sum by (node, gpu) (zopilot_operator_gpu_memory_reserved_bytes)",
                "{{node}} gpu {{gpu}}",
            )
        ],
        stack=True,
    ),
    Panel(
        "Reservations DCGM does not show",
        "Per node: settled reservations minus DCGM used memory. Lasting values: a leak.",
        "bytes",
        [
            (
                "max by (node) (zopilot_operator_reservation_unmatched_bytes)",
                "{{node}}",
            )
        ],
    ),
    Panel(
        "DCGM sample age",
        "Seconds since each GPU's newest framebuffer sample; admission distrusts old ones.",
        "s",
        [
            (
                "time() - timestamp(DCGM_FI_DEV_FB_FREE)",
                "{{Hostname}}{{hostname}}{{node}} gpu {{gpu}}",
            )
        ],
    ),
    Panel(
        "Smallest queued need",
        "GPU memory the smallest queued job needs (0: nothing queued).",
        "bytes",
        [("max(zopilot_operator_queued_smallest_required_bytes)", "smallest queued job")],
    ),
]

WORKER = [
    Panel(
        "Documents per second",
        "Documents processed per second by outcome (jobs and the HTTP service).",
        "ops",
        [
            (
                f"sum by (outcome) (rate(zopilot_worker_documents_total[{RI}]))",
                "{{outcome}}",
            )
        ],
        stack=True,
    ),
    Panel(
        "Pages per second",
        "Pages extracted per second: text layer, OCR, or pending OCR.",
        "ops",
        [(f"sum by (method) (rate(zopilot_worker_pages_total[{RI}]))", "{{method}}")],
        stack=True,
    ),
    Panel(
        "Extraction latency",
        "POST /extract latency (p50, p95).",
        "s",
        quantiles("zopilot_worker_request_duration_seconds", '{endpoint="/extract"}'),
    ),
    Panel(
        "Classification latency",
        "POST /classify latency (p50, p95).",
        "s",
        quantiles("zopilot_worker_request_duration_seconds", '{endpoint="/classify"}'),
    ),
    Panel(
        "503 responses",
        "Requests answered 503 per second (queue full, GPU busy, not ready), by endpoint.",
        "reqps",
        [
            (
                "sum by (endpoint) (rate("
                f'zopilot_worker_request_duration_seconds_count{{status="503"}}[{RI}]))',
                "{{endpoint}}",
            )
        ],
    ),
    Panel(
        "Queue depth",
        "Requests admitted and waiting for a slot, and requests running, by endpoint.",
        "short",
        [
            ("sum by (endpoint) (zopilot_worker_queue_depth)", "{{endpoint}} waiting"),
            ("sum by (endpoint) (zopilot_worker_requests_in_flight)", "{{endpoint}} running"),
        ],
    ),
    Panel(
        "Job documents",
        "run-job pods: documents of running jobs by state (total, done, failed).",
        "short",
        [("sum by (state) (zopilot_worker_job_documents)", "{{state}}")],
    ),
]

DASHBOARDS = {
    "overview": ("ZopilotGPU / Overview", OVERVIEW),
    "gpu-memory": ("ZopilotGPU / GPU memory", GPU_MEMORY),
    "worker": ("ZopilotGPU / Worker", WORKER),
}


def panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "datasource": DATASOURCE,
            "expr": expr,
            "legendFormat": legend,
            "refId": chr(ord("A") + i),
        }
        for i, (expr, legend) in enumerate(panel.targets)
    ]
    custom: dict[str, Any] = {}
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "fillOpacity": 10, "showPoints": "never"}
        if panel.stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, **panel.options},
        "targets": targets,
    }


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    laid: list[dict[str, Any]] = []
    x = y = 0
    for pid, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        laid.append(panel_json(panel, pid, x, y))
        x += panel.width
    return {
        "uid": f"zopilot-{uid}",
        "title": title,
        "tags": ["zopilot"],
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "panels": laid,
    }


def render() -> dict[Path, str]:
    return {
        OUT / f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = ap.parse_args(argv)
    wanted = render()
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p} is out of date: run {HOW}", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
