"""Chained builders of test objects (DocumentJobs, Nodes, Pods, DCGM samples).

In the manner of Kueue's ``MakeWorkload(name, ns).Queue(q).Obj()``: unit tests
and integration tests describe only what a case is about. Pure and dependency
free, so it may ship in the package; nothing in the operator imports it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from zopilot_operator.clock import format_time
from zopilot_operator.gpus import GpuSample
from zopilot_operator.podbuilder import (
    LABEL_ATTEMPT,
    LABEL_JOB_UID,
    WORKER_CONTAINER,
    worker_pod_name,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
RTX_4090 = "NVIDIA GeForce RTX 4090"
RTX_4090_LABEL = "NVIDIA-GeForce-RTX-4090"
RTX_4090_MIB = 24564


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a JSON merge patch (RFC 7386) as the API server applies our status
    patches: None deletes a key, objects merge, anything else replaces."""
    out = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``: test clocks read as offsets."""
    return T0 + timedelta(seconds=seconds)


class _Builder:
    def __init__(self, obj: dict[str, Any]) -> None:
        self._obj = obj

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)

    @property
    def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._obj.setdefault("status", {})
        return status


class JobBuilder(_Builder):
    """``JobBuilder("a").priority(5).queued(required_mib=10240).obj()``."""

    def __init__(self, name: str, namespace: str = "default") -> None:
        super().__init__(
            {
                "apiVersion": "zopilot.dev/v1alpha1",
                "kind": "DocumentJob",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": f"uid-{namespace}-{name}",
                    "generation": 1,
                    "creationTimestamp": format_time(T0),
                },
                "spec": {
                    "documents": [{"url": "https://files.example/a.pdf"}],
                    "tasks": ["extract"],
                },
            }
        )

    def spec(self, **fields: Any) -> Self:
        self._obj["spec"].update(fields)
        return self

    def priority(self, priority: int) -> Self:
        return self.spec(priority=priority)

    def created(self, moment: datetime) -> Self:
        self._obj["metadata"]["creationTimestamp"] = format_time(moment)
        return self

    def status(self, **fields: Any) -> Self:
        self._status.update(fields)
        return self

    def queued(self, required_mib: int, since: datetime | None = None) -> Self:
        """Phase Queued with a plan; in the queue since ``since`` (default: creation)."""
        since = since or datetime.fromisoformat(
            self._obj["metadata"]["creationTimestamp"].replace("Z", "+00:00")
        )
        return self.status(
            phase="Queued",
            attempt=self._status.get("attempt", 1),
            plan={"requiredMiB": required_mib, "source": "test", "detail": "test"},
            queuedAt=format_time(since),
        )

    def admitted(
        self,
        node: str,
        required_mib: int,
        *,
        gpu: str = "0",
        uuid: str = "",
        decided_at: datetime = T0,
    ) -> Self:
        return self.status(
            phase="Admitted",
            plan={"requiredMiB": required_mib, "source": "test", "detail": "test"},
            admission={
                "node": node,
                "gpu": gpu,
                "uuid": uuid,
                "requiredMiB": required_mib,
                "freeMiB": 0,
                "decidedAt": format_time(decided_at),
            },
        )

    def running(self, since: datetime) -> Self:
        """Phase Running (call after ``admitted``), worker up since ``since``."""
        return self.status(phase="Running", startedAt=format_time(since))

    def phase(self, phase: str) -> Self:
        return self.status(phase=phase)


class NodeBuilder(_Builder):
    """``NodeBuilder("gpu-a").gpus(count=1, replicas=4).obj()``: a Ready RTX 4090 node."""

    def __init__(self, name: str) -> None:
        super().__init__(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {},
                "status": {
                    "allocatable": {"cpu": "16", "memory": "64Gi"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
        self.gpus()

    def gpus(
        self,
        count: int = 1,
        replicas: int = 4,
        memory_mib: int | None = RTX_4090_MIB,
        product: str = RTX_4090_LABEL,
    ) -> Self:
        labels = self._obj["metadata"]["labels"]
        labels["nvidia.com/gpu.product"] = product
        labels["nvidia.com/gpu.count"] = str(count)
        labels["nvidia.com/gpu.replicas"] = str(replicas)
        if memory_mib is None:
            labels.pop("nvidia.com/gpu.memory", None)
        else:
            labels["nvidia.com/gpu.memory"] = str(memory_mib)
        self._status["allocatable"]["nvidia.com/gpu"] = str(count * replicas)
        return self

    def no_gpu(self) -> Self:
        labels = self._obj["metadata"]["labels"]
        for key in [k for k in labels if k.startswith("nvidia.com/")]:
            del labels[key]
        self._status["allocatable"].pop("nvidia.com/gpu", None)
        return self

    def not_ready(self) -> Self:
        self._status["conditions"] = [{"type": "Ready", "status": "False"}]
        return self

    def cordoned(self) -> Self:
        self._obj["spec"]["unschedulable"] = True
        return self

    def taint(self, key: str, effect: str = "NoSchedule") -> Self:
        self._obj["spec"].setdefault("taints", []).append({"key": key, "effect": effect})
        return self


class PodBuilder(_Builder):
    """A worker pod's observed state: ``PodBuilder("j-a1").running(at(5)).obj()``."""

    def __init__(self, name: str = "job-a1", namespace: str = "default") -> None:
        super().__init__(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "creationTimestamp": format_time(T0),
                },
                "spec": {"activeDeadlineSeconds": 3600},
                "status": {"phase": "Pending"},
            }
        )

    @classmethod
    def of(cls, job: Mapping[str, Any], attempt: int | None = None) -> PodBuilder:
        """The worker pod of ``job``'s attempt (default: its ``status.attempt``), owned by it
        as the operator creates it (labels and controller ownerReference)."""
        meta = job["metadata"]
        n = attempt or int((job.get("status") or {}).get("attempt") or 1)
        pod = cls(worker_pod_name(meta["name"], n, meta["uid"]), meta["namespace"])
        pod._obj["metadata"]["labels"] = {LABEL_JOB_UID: meta["uid"], LABEL_ATTEMPT: str(n)}
        pod._obj["metadata"]["ownerReferences"] = [
            {"kind": "DocumentJob", "name": meta["name"], "uid": meta["uid"], "controller": True}
        ]
        return pod

    def _container(self, state: dict[str, Any]) -> Self:
        self._status["containerStatuses"] = [{"name": WORKER_CONTAINER, "state": state}]
        return self

    def created(self, moment: datetime) -> Self:
        self._obj["metadata"]["creationTimestamp"] = format_time(moment)
        return self

    def waiting(self, reason: str, message: str = "") -> Self:
        self._status["phase"] = "Pending"
        return self._container({"waiting": {"reason": reason, "message": message}})

    def unschedulable(self, message: str) -> Self:
        self._status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ]
        return self

    def running(self, started: datetime) -> Self:
        self._status["phase"] = "Running"
        return self._container({"running": {"startedAt": format_time(started)}})

    def terminated(
        self,
        exit_code: int,
        *,
        started: datetime,
        finished: datetime,
        reason: str | None = None,
        message: str | None = None,
    ) -> Self:
        self._status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        term: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": format_time(started),
            "finishedAt": format_time(finished),
        }
        if message is not None:
            term["message"] = message
        return self._container({"terminated": term})

    def pod_reason(self, reason: str, message: str = "") -> Self:
        """Pod-level failure (``DeadlineExceeded``, ``Evicted``): phase Failed."""
        self._status.update(phase="Failed", reason=reason, message=message)
        return self

    def deleting(self, moment: datetime = T0) -> Self:
        self._obj["metadata"]["deletionTimestamp"] = format_time(moment)
        return self


def sample(
    node: str,
    free_mib: int,
    *,
    gpu: str = "0",
    used_mib: int | None = None,
    sampled_at: datetime = T0,
    total_mib: int = RTX_4090_MIB,
    reserved_mib: int = 0,
) -> GpuSample:
    """A DCGM sample; ``used_mib`` defaults to ``total_mib - free_mib - reserved_mib``."""
    return GpuSample(
        node=node,
        gpu=gpu,
        uuid=f"GPU-{node}-{gpu}",
        model_name=RTX_4090,
        free_mib=free_mib,
        used_mib=total_mib - free_mib - reserved_mib if used_mib is None else used_mib,
        reserved_mib=reserved_mib,
        sample_time=sampled_at,
    )
