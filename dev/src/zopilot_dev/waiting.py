"""Wait-for-condition helpers over kubectl, for tests and the demo."""

from __future__ import annotations

import json
from typing import Any

from .cluster import LocalCluster
from .procs import wait_for


def get_job(c: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(c.kubectl("get", "documentjob", name, "-n", ns, "-o", "json").stdout))


def job_status(c: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return dict(get_job(c, ns, name).get("status") or {})


def wait_job(
    c: LocalCluster,
    ns: str,
    name: str,
    *,
    phase: str | None = None,
    reason: str | None = None,
    timeout_s: float = 90,
) -> dict[str, Any]:
    """Wait until the job's status has ``phase`` and/or ``reason``; return that status."""
    seen: dict[str, Any] = {}

    def ok() -> bool:
        seen.clear()
        seen.update(job_status(c, ns, name))
        return (phase is None or seen.get("phase") == phase) and (
            reason is None or seen.get("reason") == reason
        )

    if not wait_for(ok, timeout_s=timeout_s, interval_s=0.25):
        raise AssertionError(
            f"{ns}/{name}: wanted phase={phase} reason={reason} within "
            f"{timeout_s} s; last status: {json.dumps(seen, indent=1)}"
        )
    return seen


def event_reasons(c: LocalCluster, ns: str, name: str) -> list[str]:
    out = c.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=DocumentJob",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "json",
    ).stdout
    return [e["reason"] for e in json.loads(out)["items"]]


def worker_pods(c: LocalCluster, ns: str, job: str) -> list[dict[str, Any]]:
    out = c.kubectl("get", "pods", "-n", ns, "-l", f"zopilot.dev/job={job}", "-o", "json").stdout
    return list(json.loads(out)["items"])
