"""The operator's background loops never die silently (issue 9): a failed round is
logged and counted and the next one comes; the liveness probe reports a loop that
ended or stopped finishing rounds."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import kopf
import pytest
from kubernetes.client import ApiClient
from prometheus_client import CollectorRegistry
from zopilot_operator import handlers
from zopilot_operator.loops import STALL_MIN_S, LoopWatch
from zopilot_operator.metrics import OperatorMetrics
from zopilot_operator.runtime import Runtime
from zopilot_operator.settings import OperatorSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_watch_reports_a_stalled_loop() -> None:
    clock = Clock()
    watch = LoopWatch("resync", 10.0, clock=clock)
    assert watch.problem() is None
    clock.now += STALL_MIN_S - 1
    assert watch.problem() is None
    watch.beat()
    clock.now += STALL_MIN_S + 1
    assert watch.problem() == f"the resync loop finished no round for {STALL_MIN_S + 1:.0f} s"


async def test_a_watch_reports_a_loop_that_ended() -> None:
    async def dies() -> None:
        raise ValueError("Invalid IPv6 URL")

    watch = LoopWatch("resync", 10.0)
    watch.task = asyncio.create_task(dies())
    await asyncio.wait([watch.task])
    assert watch.problem() == "the resync loop has ended: ValueError: Invalid IPv6 URL"


class FlakyKube:
    """The one part of the Kubernetes edge the resync round calls for a job without
    a phase (planning reads it fresh): its first GET raises what no handler
    expects (as an IPv6 progress URL once did); later the job is gone."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("Invalid IPv6 URL")
        return None


async def test_the_resync_loop_survives_an_unexpected_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FlakyKube()
    registry = CollectorRegistry()
    async with httpx.AsyncClient() as http:
        r = Runtime(
            OperatorSettings(job_resync_s=0.01),
            kube,  # type: ignore[arg-type]
            ApiClient(),
            http,
            registry,
            OperatorMetrics(registry),
        )
        r.remember_job({"metadata": {"namespace": "ns", "name": "j", "uid": "u"}})
        monkeypatch.setattr(handlers, "_rt", r)
        task = asyncio.create_task(handlers.resync_loop(r))
        r.loop_watch("resync", 0.01).task = task
        try:
            await wait_async(lambda: kube.calls >= 3)
            assert not task.done(), "the resync loop ended"
            assert r.loops["resync"].problem() is None
            errors = registry.get_sample_value(
                "zopilot_operator_reconcile_errors_total",
                {"handler": "resync", "kind": "ValueError"},
            )
            assert errors == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_the_liveness_probe_fails_for_a_dead_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    async def dies() -> None:
        raise ValueError("boom")

    registry = CollectorRegistry()
    async with httpx.AsyncClient() as http:
        r = Runtime(
            OperatorSettings(),
            None,
            ApiClient(),
            http,
            registry,
            OperatorMetrics(registry),  # type: ignore[arg-type]
        )
        monkeypatch.setattr(handlers, "_rt", r)
        r.loop_watch("admission", 10.0)
        assert handlers.loops_probe() == {"admission": 0}
        task = r.loop_watch("resync", 10.0).task = asyncio.create_task(dies())
        await asyncio.wait([task])
        with pytest.raises(kopf.PermanentError, match="the resync loop has ended: ValueError"):
            handlers.loops_probe()


async def wait_async(condition: Any, timeout_s: float = 30.0) -> None:
    """Yield to the event loop until ``condition()`` holds (the loop under test runs meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class CountingElector:
    """A LeaseElector that always wins and counts its renewals."""

    renewals = 0

    def __init__(self, *_: object) -> None:
        pass

    async def ensure(self) -> bool:
        CountingElector.renewals += 1
        return True

    async def fence(self) -> bool:
        return True


async def test_an_idle_leader_renews_its_lease_without_admitting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an admission interval far longer than the Lease, the leader still renews
    every third of the Lease, and those wake-ups run no admission round."""
    rounds: list[bool] = []

    async def admit_once(r: Runtime, *, fresh: bool, still_leader: object) -> None:
        rounds.append(fresh)

    monkeypatch.setattr(handlers, "LeaseElector", CountingElector)
    monkeypatch.setattr(handlers, "admit_once", admit_once)
    CountingElector.renewals = 0
    registry = CollectorRegistry()
    settings = OperatorSettings(admission_interval_s=3600, leader_election_lease_s=0.15)
    async with httpx.AsyncClient() as http:
        r = Runtime(settings, None, ApiClient(), http, registry, OperatorMetrics(registry))  # type: ignore[arg-type]
        r.jobs_synced.set()  # what the job watch does after its first LIST
        task = asyncio.create_task(handlers.admission_loop(r))
        try:
            await wait_async(lambda: CountingElector.renewals >= 4)
            assert rounds == [True]  # the first round as leader; none since
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
