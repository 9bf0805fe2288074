"""The worker HTTP service's GPU memory, as admission sees it (pure).

The chart's opt-in HTTP service (``zopilot-worker serve``) holds a GPU like a
running job does, and says how much in the pod annotation
``zopilot.dev/required-mib``. Admission must count that memory exactly like
a running job's claim, so batch jobs are never admitted onto memory the
service holds or is about to hold while its model loads. Each service pod on
a node becomes a job-shaped record (phase Running, ``status.admission`` on its
node, ``startedAt`` from its container) that ``reservations.claim_from_job``
reads like any other claim; it is never written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zopilot_operator.podbuilder import ANNOTATION_REQUIRED_MIB

SERVICE_SELECTOR = "app.kubernetes.io/name=zopilot-worker,app.kubernetes.io/component=service"


def service_claims(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Job-shaped claims of the service pods bound to a node and not finished."""
    claims = []
    for pod in pods:
        meta, spec, status = (
            pod.get("metadata") or {},
            pod.get("spec") or {},
            pod.get("status") or {},
        )
        node = spec.get("nodeName")
        if not node or status.get("phase") in ("Succeeded", "Failed"):
            continue
        try:
            required = int((meta.get("annotations") or {}).get(ANNOTATION_REQUIRED_MIB, ""))
        except ValueError:
            continue
        started = None
        for container in status.get("containerStatuses") or []:
            started = ((container.get("state") or {}).get("running") or {}).get("startedAt")
        claims.append(
            {
                "metadata": {
                    "namespace": meta.get("namespace", ""),
                    "name": f"service/{meta.get('name', '')}",
                },
                "status": {
                    "phase": "Running",
                    "admission": {"node": node, "gpu": "", "requiredMiB": required},
                    "startedAt": started,
                },
            }
        )
    return claims
