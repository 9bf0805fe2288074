"""A stand-in worker for operator tests (SIMULATED workload, real pod lifecycle).

Admission, retries and crash-consistency are about pods occupying GPUs and
ending with exit codes, not about documents; this process plays a worker whose
behaviour a test scripts through a control directory, so those tests neither
wait for model loads nor depend on the pipeline. The real worker runs in the
end-to-end tests and the demo.

Control file ``<control>/<namespace>__<job>.json`` (read at start, optional):
``{"attempts": {"1": {"exit": 75}, "2": {"exit": 0}}, "hold": true}``;
``"exit"`` is the exit code, ``"oom"`` true makes the process SIGKILL itself
(the dev pod runner reports that as OOMKilled), ``"hold"`` keeps it running
until ``<control>/<namespace>__<job>.release`` exists; ``"progress"``:
``{"total": 5, "done": 3, "failed": 0}`` is served as the real job runner's
``zopilot_worker_job_documents`` on ``$ZOPILOT_WORKER_HOST:$ZOPILOT_WORKER_METRICS_PORT``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def paths(control: Path, namespace: str, job: str) -> dict[str, Path]:
    """The control and release files of one job."""
    stem = f"{namespace}__{job}"
    return {"control": control / f"{stem}.json", "release": control / f"{stem}.release"}


def command(control: Path) -> list[str]:
    """The worker command an operator should run to use this stand-in."""
    return [sys.executable, "-m", "zopilot_dev.fakeworker", "--control", str(control)]


def serve_progress(counts: dict[str, int]) -> None:
    body = "".join(
        f'zopilot_worker_job_documents{{state="{k}"}} {v}\n' for k, v in counts.items()
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    host = os.environ.get("ZOPILOT_WORKER_HOST", "127.0.0.1")
    port = int(os.environ.get("ZOPILOT_WORKER_METRICS_PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--control", type=Path, required=True)
    args = ap.parse_args(argv)
    ns, job = os.environ["ZOPILOT_JOB_NAMESPACE"], os.environ["ZOPILOT_JOB_NAME"]
    attempt = os.environ.get("ZOPILOT_ATTEMPT", "1")
    base = paths(args.control, ns, job)
    try:
        control = json.loads(base["control"].read_text())
    except FileNotFoundError:
        control = {}
    step = {"exit": 0, **control.get("attempts", {}).get(attempt, {})}
    hold = step.get("hold", control.get("hold", False))
    if "progress" in control:
        serve_progress(control["progress"])
    while hold and not base["release"].exists():
        time.sleep(0.1)
    if step.get("oom"):
        os.kill(os.getpid(), signal.SIGKILL)
    code = int(step["exit"])
    summary = {
        "exitCode": code,
        "documents": 1,
        "done": 1 if code == 0 else 0,
        "failed": 0 if code == 0 else 1,
        "pages": 1,
        "byLabel": {},
        "message": step.get("message", f"fake worker attempt {attempt} exit {code}"),
    }
    Path(os.environ.get("ZOPILOT_WORKER_TERMINATION_LOG", "/dev/termination-log")).write_text(
        json.dumps(summary)
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
