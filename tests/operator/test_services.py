"""The worker HTTP service's GPU memory counts in admission like a running job's."""

from __future__ import annotations

from typing import Any

from zopilot_operator.scheduler import admission_round
from zopilot_operator.services import service_claims
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import JobBuilder, NodeBuilder, at, sample

SETTINGS = OperatorSettings()
NODES = [NodeBuilder("gpu-a").obj()]


def service_pod(
    node: str | None = "gpu-a", mib: str = "20000", phase: str = "Running", started: bool = True
) -> dict[str, Any]:
    running = {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if started else {"waiting": {}}
    return {
        "metadata": {
            "name": "rel-zopilot-worker-abc",
            "namespace": "zopilot-system",
            "annotations": {"zopilot.dev/required-mib": mib},
        },
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "containerStatuses": [{"state": running}]},
    }


def test_service_pods_become_running_claims_on_their_node() -> None:
    (claim,) = service_claims([service_pod()])
    assert claim["status"]["phase"] == "Running"
    assert claim["status"]["admission"] == {"node": "gpu-a", "gpu": "", "requiredMiB": 20000}
    assert claim["status"]["startedAt"] == "2026-01-01T00:00:00Z"


def test_unbound_finished_or_unannotated_pods_hold_nothing() -> None:
    assert service_claims([service_pod(node=None)]) == []
    assert service_claims([service_pod(phase="Failed")]) == []
    assert service_claims([service_pod(mib="lots")]) == []
    (loading,) = service_claims([service_pod(started=False)])
    assert loading["status"]["startedAt"] is None  # held while the model loads


def test_a_job_is_not_admitted_onto_memory_the_service_holds() -> None:
    job = JobBuilder("batch").queued(required_mib=8000).obj()
    # DCGM still shows the GPU nearly empty: the service's model is loading.
    samples = [sample("gpu-a", 24000, sampled_at=at(10))]
    alone = admission_round([job], NODES, samples, at(10), SETTINGS)
    assert [a.node for a in alone.admitted] == ["gpu-a"]
    shared = admission_round(
        [job, *service_claims([service_pod(started=False)])], NODES, samples, at(10), SETTINGS
    )
    assert not shared.admitted
    assert shared.waiting[0].item.name == "batch"
