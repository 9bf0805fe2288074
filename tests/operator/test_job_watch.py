"""The operator's own DocumentJob watch (handlers.job_watch_loop / job_changed), which
replaced kopf's per-object event handler (issue 9: kopf's workers cost more CPU and
memory than the decisions at 1,000 jobs)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from kubernetes.client import ApiClient
from prometheus_client import CollectorRegistry
from zopilot_operator import handlers
from zopilot_operator.metrics import OperatorMetrics
from zopilot_operator.runtime import Runtime
from zopilot_operator.settings import OperatorSettings


def job(name: str, phase: str | None, version: int, ns: str = "ns") -> dict[str, Any]:
    out: dict[str, Any] = {
        "metadata": {
            "namespace": ns,
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
        },
        "spec": {},
    }
    if phase is not None:
        out["status"] = {"phase": phase}
    return out


async def until(condition: Callable[[], bool], rounds: int = 500) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """What job_changed started: planning (non-leaders) and follows, by job key."""
    seen: dict[str, list[str]] = {"plan": [], "follow": []}
    release = asyncio.Event()

    async def plan_job(j: dict[str, Any]) -> None:
        seen["plan"].append(f"{j['metadata']['namespace']}/{j['metadata']['name']}")

    async def follow_attempt(namespace: str, name: str) -> None:
        await release.wait()
        seen["follow"].append(f"{namespace}/{name}")

    monkeypatch.setattr(handlers, "plan_job", plan_job)
    monkeypatch.setattr(handlers, "follow_attempt", follow_attempt)
    seen["release"] = release  # type: ignore[assignment]
    yield seen


@pytest.fixture
async def runtime() -> Any:
    registry = CollectorRegistry()
    async with httpx.AsyncClient() as http:
        yield Runtime(
            OperatorSettings(),
            None,
            ApiClient(),
            http,
            registry,
            OperatorMetrics(registry),  # type: ignore[arg-type]
        )


async def test_a_new_job_wakes_admission_and_only_a_non_leader_plans_it(
    runtime: Runtime, calls: dict[str, Any]
) -> None:
    r = runtime
    r.is_leader = True
    r.leader_known.set()
    handlers.job_changed(r, "ADDED", job("a", None, 1))
    assert r.wake.is_set() and "ns/a" in r.jobs
    await asyncio.sleep(0)
    assert not handlers._tasks and calls["plan"] == []  # the leader plans in its round
    r.is_leader = False
    handlers.job_changed(r, "MODIFIED", job("b", None, 2))
    await until(lambda: calls["plan"] == ["ns/b"])


async def test_a_job_event_before_the_lease_is_known_waits_for_it(
    runtime: Runtime, calls: dict[str, Any]
) -> None:
    r = runtime
    handlers.job_changed(r, "ADDED", job("a", None, 1))
    await asyncio.sleep(0.05)
    assert calls["plan"] == []
    r.is_leader = False
    r.leader_known.set()
    await until(lambda: calls["plan"] == ["ns/a"])


async def test_a_burst_of_events_for_one_active_job_starts_one_follow(
    runtime: Runtime, calls: dict[str, Any]
) -> None:
    """Events that arrive while a follow waits to start are covered by it (it reads
    the caches when it starts); one after it started gets a follow of its own."""
    r = runtime
    r.writes_idle.clear()  # an admission round is writing: follows wait
    for version in range(1, 6):
        handlers.job_changed(r, "MODIFIED", job("a", "Running", version))
    await asyncio.sleep(0.05)
    assert r.follow_pending == {"ns/a"} and len(handlers._tasks) == 1
    assert r.jobs["ns/a"]["metadata"]["resourceVersion"] == "5"
    r.writes_idle.set()
    await until(lambda: not r.follow_pending)
    handlers.job_changed(r, "MODIFIED", job("a", "Running", 6))  # while the first runs
    calls["release"].set()
    await until(lambda: calls["follow"] == ["ns/a", "ns/a"])
    await until(lambda: not handlers._tasks)
    assert not r.follow_pending


async def test_queued_and_finished_jobs_start_nothing_and_an_old_copy_is_ignored(
    runtime: Runtime, calls: dict[str, Any]
) -> None:
    r = runtime
    r.is_leader = True
    r.leader_known.set()
    handlers.job_changed(r, "ADDED", job("q", "Queued", 7))
    handlers.job_changed(r, "ADDED", job("done", "Succeeded", 8))
    handlers.job_changed(r, "MODIFIED", job("q", None, 3))  # older than the cache
    await asyncio.sleep(0.01)
    assert not handlers._tasks
    assert r.jobs["ns/q"]["status"]["phase"] == "Queued"


async def test_deleting_a_running_job_frees_its_gpu_and_forgets_it(runtime: Runtime) -> None:
    r = runtime
    r.is_leader = True
    r.leader_known.set()
    r.jobs["ns/a"] = job("a", "Running", 4)
    r.lock("ns/a")
    handlers.job_changed(r, "DELETED", job("a", "Running", 5))
    assert r.wake.is_set()
    assert "ns/a" not in r.jobs and "ns/a" not in r._locks


class ScriptedKube:
    """LIST and WATCH of DocumentJobs as the API server answers them: the first list
    has a and b; the watch sends a change of a, then its version expires (410); the
    second list has only a (b was deleted while no watch ran)."""

    def __init__(self) -> None:
        self.lists = 0
        self.watch_started = threading.Event()
        self.stop = threading.Event()

    async def list_jobs_in(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        if self.lists == 1:
            return [job("a", "Queued", 1), job("b", "Running", 2)], "2"
        return [job("a", "Queued", 3)], "9"

    def watch_jobs(
        self,
        namespace: str | None,
        resource_version: str,
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> str | None:
        self.watch_started.set()
        if resource_version == "2":
            on_event("MODIFIED", job("a", "Queued", 3))
            return None  # 410 Gone: list again
        self.stop.wait(5)
        time.sleep(0.01)
        return resource_version


async def test_the_watch_lists_watches_and_relists_after_410(
    runtime: Runtime, calls: dict[str, Any]
) -> None:
    r = runtime
    r.is_leader = True
    r.leader_known.set()
    kube = ScriptedKube()
    r.kube = kube  # type: ignore[assignment]
    task = asyncio.create_task(handlers.job_watch_loop(r, None))
    try:
        await until(lambda: kube.lists == 2)
        await until(lambda: "ns/b" not in r.jobs)
        assert r.jobs_synced.is_set()
        assert r.jobs["ns/a"]["metadata"]["resourceVersion"] == "3"
        assert r.jobs_listed_at > float("-inf")
    finally:
        kube.stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    calls["release"].set()
    await until(lambda: not handlers._tasks)


class CountingNodes:
    """Kube.list_nodes that takes a while and counts its calls."""

    def __init__(self) -> None:
        self.lists = 0

    async def list_nodes(self) -> list[dict[str, Any]]:
        self.lists += 1
        await asyncio.sleep(0.05)
        return [{"metadata": {"name": f"n{self.lists}"}}]


async def test_jobs_followed_at_once_share_one_node_list(runtime: Runtime) -> None:
    """Hundreds of follows start together after a round of admissions; they wait for
    one LIST of the nodes instead of each listing them (which took most of the
    operator's CPU in the scale benchmark)."""
    r = runtime
    kube = CountingNodes()
    r.kube = kube  # type: ignore[assignment]
    answers = await asyncio.gather(*(r.nodes() for _ in range(200)))
    assert kube.lists == 1 and all(a == answers[0] for a in answers)
    assert await r.nodes() == answers[0] and kube.lists == 1  # cached
    assert (await r.nodes(fresh=True))[0]["metadata"]["name"] == "n2"


async def test_events_during_shutdown_start_nothing(
    runtime: Runtime, calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch threads go on delivering events while the operator stops; a follow
    started then failed on the closed thread pool ("Executor shutdown has been
    called", 65 tracebacks at the end of a scale run). Cleanup cancels what runs and
    starts nothing new."""
    r = runtime
    monkeypatch.setattr(handlers, "_rt", r)
    monkeypatch.setattr(handlers, "_stopping", False)
    r.leader_known.set()
    r.is_leader = True
    handlers.job_changed(r, "ADDED", job("running", "Running", 1))
    assert len(handlers._tasks) == 1  # a follow, waiting for `release`
    await handlers.cleanup()
    assert not handlers._tasks
    handlers.job_changed(r, "MODIFIED", job("running", "Running", 2))
    handlers.job_changed(r, "ADDED", job("admitted", "Admitted", 3))
    assert not handlers._tasks
    calls["release"].set()
    assert calls["follow"] == []


class ListingJobs:
    """Kube.list_jobs whose LIST is answered only when the test says so, at a given
    snapshot version; the watch's events arrive in between."""

    def __init__(self, items: list[dict[str, Any]], version: str) -> None:
        self.items, self.version = items, version
        self.answer = asyncio.Event()

    async def list_jobs(self) -> tuple[list[dict[str, Any]], dict[str | None, str]]:
        await self.answer.wait()
        return self.items, {None: self.version}


async def test_a_relist_keeps_what_the_watch_saw_after_its_snapshot(
    runtime: Runtime, calls: dict[str, Any]
) -> None:
    """The admission round's periodic LIST replaced the cache: jobs created while it
    was under way (their ADDED events already handled) vanished from the cache, and
    waited a whole admission interval (p99 10 s in the scale benchmark's live
    scenario). Jobs deleted meanwhile must not come back either."""
    r = runtime
    r.leader_known.set()
    r.is_leader = True
    for name, version in (("old", 3), ("deleted-before", 4), ("deleted-during", 5)):
        handlers.job_changed(r, "ADDED", job(name, "Queued", version))
    handlers.job_changed(r, "DELETED", job("deleted-before", "Queued", 6))
    # The LIST's snapshot is version 10: it has "old" (changed at 8, the cache has 3),
    # and "deleted-during"; not what the watch delivers next.
    listing = ListingJobs(
        [job("old", "Queued", 8), job("deleted-during", "Queued", 5)], version="10"
    )
    r.kube = listing  # type: ignore[assignment]
    relist = asyncio.ensure_future(r.relist_jobs())
    await asyncio.sleep(0)
    handlers.job_changed(r, "ADDED", job("new", None, 11))
    handlers.job_changed(r, "MODIFIED", job("old", "Admitted", 12))
    handlers.job_changed(r, "DELETED", job("deleted-during", "Queued", 13))
    listing.answer.set()
    await relist
    assert {k: v["metadata"]["resourceVersion"] for k, v in r.jobs.items()} == {
        "ns/old": "12",  # the watch's copy, newer than the LIST's
        "ns/new": "11",  # created after the snapshot
    }
    assert r.deleted is None  # tombstones live only while a LIST is under way
    # A later LIST that has "new" but not "old" (deleted before its snapshot) wins.
    listing.items, listing.version = [job("new", "Queued", 14)], "20"
    await r.relist_jobs()
    assert {k: v["metadata"]["resourceVersion"] for k, v in r.jobs.items()} == {"ns/new": "14"}
    calls["release"].set()
    await until(lambda: not handlers._tasks)


def test_a_relist_in_namespaced_mode_compares_each_namespace_with_its_own_list(
    runtime: Runtime,
) -> None:
    r = runtime
    r.jobs = {
        "a/made-late": job("made-late", None, 15, ns="a"),
        "b/stale": job("stale", "Queued", 15, ns="b"),
    }
    # Namespace a was listed at 10 (made-late came after); b at 20 (stale is gone).
    r.remember_jobs([], {"a": "10", "b": "20"})
    assert list(r.jobs) == ["a/made-late"]


async def test_the_resync_plans_phaseless_jobs_only_where_admission_does_not(
    runtime: Runtime, calls: dict[str, Any]
) -> None:
    """The leader plans new jobs in its admission round; its resync planning them too
    wrote them first, so the round's admissions conflicted (409) and waited a round
    (every 10 s, when the two loops met, in the scale benchmark)."""
    r = runtime
    r.jobs = {"ns/new": job("new", None, 1)}
    r.leader_known.set()
    r.is_leader = True
    await handlers.resync_once(r)
    assert calls["plan"] == []
    r.is_leader = False  # a standby plans it: no round of its own would
    await handlers.resync_once(r)
    assert calls["plan"] == ["ns/new"]


async def test_a_round_never_waits_for_the_periodic_list(
    runtime: Runtime, calls: dict[str, Any]
) -> None:
    """An interval round used to LIST the jobs before deciding (1-1.5 s for a few
    hundred jobs under load), holding up every job that arrived meanwhile. The LIST
    now runs beside the rounds; a round follows it only if it found what the watch
    had missed."""
    r = runtime
    r.jobs = {"ns/seen": job("seen", "Admitted", 5)}
    listing = ListingJobs([job("seen", "Admitted", 5), job("missed", "Queued", 6)], "10")
    r.kube = listing  # type: ignore[assignment]
    await handlers.admit_once(r, fresh=True)  # returns with the LIST still unanswered
    assert r.relisting is not None and not r.relisting.done()
    handlers.start_relist(r)  # one LIST at a time
    assert not r.wake.is_set()
    listing.answer.set()
    await r.relisting
    assert set(r.jobs) == {"ns/seen", "ns/missed"} and r.wake.is_set()
    assert r.jobs_listed_at > float("-inf")
    # A LIST that tells the cache nothing new starts no round.
    r.wake.clear()
    handlers.start_relist(r)
    await r.relisting
    assert not r.wake.is_set()
