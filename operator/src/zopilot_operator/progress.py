"""Live progress of a running attempt, read from its worker's /metrics.

The worker's job runner exports ``zopilot_worker_job_documents{state=total|
done|failed}`` while it works. The operator reads it from the pod (pod IP +
the ``metrics`` container port) on each resync, so ``kubectl get`` shows
"7/10" during long jobs. The worker needs no API permissions for this, and a
failed read only leaves the last figure in place: progress is best effort,
the termination message at the end is authoritative.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

METRIC = "zopilot_worker_job_documents"


@dataclass(frozen=True)
class Progress:
    documents: int
    done: int
    failed: int


def parse(text: str) -> Progress | None:
    """The job's document counts from a Prometheus text exposition, or None."""
    values: dict[str, int] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name != METRIC:
                continue
            for s in family.samples:
                values[s.labels.get("state", "")] = int(s.value)
    except (ValueError, TypeError):
        return None
    if "total" not in values:
        return None
    return Progress(values["total"], values.get("done", 0), values.get("failed", 0))


def metrics_url(pod: Mapping[str, Any]) -> str | None:
    """http://<podIP>:<metrics port>/metrics of a running worker pod, or None.

    An IPv6 pod IP goes in brackets (``http://[fd00::5]:8080/metrics``); a podIP
    that is no IP address at all gives None.
    """
    ip = (pod.get("status") or {}).get("podIP")
    containers = (pod.get("spec") or {}).get("containers") or []
    ports = [p for c in containers for p in c.get("ports") or [] if p.get("name") == "metrics"]
    if not ip or not ports:
        return None
    try:
        address = ipaddress.ip_address(str(ip))
    except ValueError:
        return None
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{host}:{ports[0]['containerPort']}/metrics"


async def read(
    client: httpx.AsyncClient, pod: Mapping[str, Any], timeout_s: float = 2.0
) -> Progress | None:
    url = metrics_url(pod)
    if url is None:
        return None
    try:
        r = await client.get(url, timeout=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL):
        return None
    return parse(r.text) if r.status_code == 200 else None
