"""kopf handlers: the thin edge between Kubernetes events and the pure core.

* a new DocumentJob is planned and queued (or failed at once): ``lifecycle.on_created``;
* one admission loop, run only by the Lease holder, admits queued jobs from
  Prometheus's DCGM numbers: ``scheduler.admission_round``/``round_updates``.
  A round runs shortly after an event that may let a job in (a job created
  or queued, a GPU released; debounced by ``admission_debounce_s``) and at
  least every ``admission_interval_s``. The leader plans new jobs inside the
  round, so a job that fits is planned and admitted in one status write;
  writes go out ``admission_write_concurrency`` at a time;
* an admitted or running job follows its attempt's pod (create it, report
  it, retry or fail): ``lifecycle.on_attempt`` — on job events, on worker pod
  events and in a resync loop (watches can miss events; live progress).

What the handlers read comes from watch caches where they can: jobs from our
own DocumentJob watch (plus the objects our own writes return), worker pods
from our own watch with a server-side label selector (kopf's ``labels=``
filters on the client after listing every pod in the cluster). kopf runs the
process (start-up, clean-up, the liveness probe) but watches nothing itself:
its per-object workers cost more than the decisions at 1,000 jobs. A fresh
LIST refills the job cache on every interval round and whenever this instance
becomes the leader. With ``watch_namespaces`` everything is limited to those
namespaces.

No handler needs a finalizer, so none is put on jobs: a job can be deleted
even while no operator runs, and its pod goes with it (owner reference).

Every decision is made by pure functions; this module reads, applies
``Update``s and translates errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import kopf
from prometheus_client import start_http_server

from zopilot_operator import progress
from zopilot_operator import status as st
from zopilot_operator.clock import utcnow
from zopilot_operator.errors import (
    ConflictError,
    MetricsUnavailable,
    NotFoundError,
    OperatorError,
    PermanentError,
    RetriableError,
)
from zopilot_operator.jobs import (
    ResyncAction,
    job_generation,
    job_key,
    job_phase,
    phase_counts,
    queue_and_claims,
    resync_action,
)
from zopilot_operator.kube import build_event
from zopilot_operator.leader import LeaseElector
from zopilot_operator.lifecycle import (
    Event,
    Update,
    node_is_gone,
    on_attempt,
    on_created,
    on_pod_create_refused,
)
from zopilot_operator.merge import compose_patches, merge_patch
from zopilot_operator.podbuilder import attempt_pod_name
from zopilot_operator.prometheus import query_gpu_memory
from zopilot_operator.reasons import ACTIVE_PHASES, TERMINAL_PHASES, EventType, Phase, Reason
from zopilot_operator.retry import largest_node_memory_mib
from zopilot_operator.runtime import Runtime
from zopilot_operator.scheduler import admission_round, round_updates
from zopilot_operator.settings import OperatorSettings

log = logging.getLogger("zopilot.operator")

WORKER_LABELS = {"app.kubernetes.io/name": "zopilot-worker"}
EVENT_POSTERS = 4
WORKER_SELECTOR = ",".join(f"{k}={v}" for k, v in WORKER_LABELS.items())
# Fault injection for the crash-consistency test only: SIGKILL ourselves right
# after creating a worker pod, before recording it on the job.
_CRASH_AFTER_POD_CREATE = "ZOPILOT_OPERATOR_TEST_CRASH_AFTER_POD_CREATE"

_rt: Runtime | None = None
_tasks: set[asyncio.Task[Any]] = set()  # strong references to our background tasks
# Set by cleanup: the watch threads may still deliver events while the operator
# stops, and a follow started then would only fail on the closed thread pool.
_stopping = False


def rt() -> Runtime:
    if _rt is None:
        raise kopf.TemporaryError("operator is starting", delay=1)
    return _rt


# ---------------------------------------------------------------- startup
@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _rt, _stopping
    _stopping = False
    # kopf serves no resource here (the job and pod watches are ours), so it need
    # not scan CRDs or namespaces (nor be allowed to); no finalizers either: the
    # worker pod is owned by the job, so the garbage collector deletes it with the
    # job, and the job's reservation lives in its status and goes with it.
    settings.scanning.disabled = True
    settings.posting.enabled = False  # we post our own, readable events
    config = OperatorSettings()
    _rt = Runtime.create(config)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr="0.0.0.0", registry=_rt.registry)
    loop = asyncio.get_running_loop()
    # API calls run in threads (the client is synchronous): enough of them for
    # the concurrent writes and one per pod watch.
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=config.admission_write_concurrency + 8, thread_name_prefix="zopilot-api"
        )
    )
    # Watched by the liveness probe (loops_probe): a loop that ends or stalls fails it.
    admission = loop.create_task(admission_loop(_rt), name="zopilot-admission")
    resync = loop.create_task(resync_loop(_rt), name="zopilot-resync")
    _rt.loop_watch("admission", config.admission_interval_s).task = admission
    _rt.loop_watch("resync", config.job_resync_s).task = resync
    _tasks.update((admission, resync))
    _tasks.add(loop.create_task(event_poster(_rt), name="zopilot-events"))
    watched: list[str | None] = list(config.watch_namespaces) or [None]
    _rt.job_watches = len(watched)
    for namespace in watched:
        _tasks.add(loop.create_task(job_watch_loop(_rt, namespace), name="zopilot-job-watch"))
        _tasks.add(loop.create_task(pod_watch_loop(_rt, namespace), name="zopilot-pod-watch"))
    log.info("zopilot operator started as %s (prometheus %s)", _rt.identity, config.prometheus_url)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    global _stopping
    _stopping = True  # no new follow or planning task from here on
    if _rt is not None and _rt.elector is not None:
        # The next instance (a rolling update) admits at once, not a lease later.
        await _rt.elector.release()
    # Our loops and follows end here, before asyncio shuts the API threads down.
    while _tasks:
        tasks = list(_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _tasks.difference_update(tasks)
    if _rt is not None:
        await _rt.http.aclose()


# ------------------------------------------------------------------ apply
async def apply(
    r: Runtime, job: Mapping[str, Any], update: Update, resource_version: str | None = None
) -> None:
    """Carry out one Update: create/delete the pod, patch the status, emit events."""
    meta = job["metadata"]
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    now = utcnow()
    patch = dict(update.patch)
    events = list(update.events)
    if update.create_pod is not None:
        attempt = int((job.get("status") or {}).get("attempt") or 1)
        try:
            if update.create_configmap is not None:
                await r.kube.create_configmap(update.create_configmap, uid)
            pod, created = await r.kube.create_pod(update.create_pod, uid, attempt)
        except (RetriableError, PermanentError) as e:
            # Refused (quota, policy, a missing ServiceAccount, 429/5xx): say so on
            # the job and retry with backoff, or fail the attempt (lifecycle decides).
            log.warning("%s/%s: creating the worker pod was refused: %s", ns, name, e)
            refused = on_pod_create_refused(job, e, now, r.settings)
            await apply(r, job, refused, resource_version)
            return
        pod_name = pod["metadata"]["name"]
        if created:
            log.info("%s/%s: created worker pod %s (attempt %d)", ns, name, pod_name, attempt)
            if os.environ.get(_CRASH_AFTER_POD_CREATE):
                os.kill(os.getpid(), signal.SIGKILL)
            events.append(
                Event(
                    EventType.NORMAL,
                    Reason.POD_CREATED,
                    f"created worker pod {pod_name} for {_node(job)}",
                )
            )
        patch = {
            **patch,
            **st.pod_created(
                job.get("status") or {}, pod_name, now=now, generation=job_generation(job)
            ),
        }
    if update.delete_pod:
        await r.kube.delete_pod(ns, update.delete_pod)
    if patch:
        written = await r.kube.patch_job_status(ns, name, patch, resource_version=resource_version)
        if written:
            # Our write's result is newer than anything the watch has delivered;
            # the next round must count this admission even before its event.
            r.remember_job(written)
        r.metrics.observe_usage(ns, job.get("status") or {}, patch)
        if patch.get("phase") in TERMINAL_PHASES:
            r.metrics.observe_finished(str(patch["phase"]), str(patch.get("reason") or ""))
    for ev in events:
        # Posted in the background: decisions are not held up by their events.
        r.events.put_nowait(
            build_event(job, ev.type, ev.reason, ev.message, now, instance=r.identity)
        )


async def event_poster(r: Runtime) -> None:
    """Post queued events, ``EVENT_POSTERS`` at a time; one lost is not worth a retry."""

    async def post() -> None:
        while True:
            event = await r.events.get()
            await r.writes_idle.wait()  # admission's writes first
            try:
                await r.kube.emit_event(event)
            except OperatorError as e:
                log.debug("event not posted: %s", e)
            finally:
                r.events.task_done()

    await asyncio.gather(*(post() for _ in range(EVENT_POSTERS)))


def _node(job: Mapping[str, Any]) -> str:
    return str(((job.get("status") or {}).get("admission") or {}).get("node", "?"))


# ------------------------------------------------------------ job handlers
def wakes_admission(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether a job going from ``old`` to ``new`` (None: absent) may let a job in.

    A job appears or is (re)queued: it may fit now. A job leaves Admitted or
    Running (finished, failed, deleted): its GPU memory and slot are free.
    Our own admissions (Queued to Admitted) and progress updates wake nothing.
    """
    before = job_phase(old) if old is not None else None
    after = job_phase(new) if new is not None else None
    if new is not None and (after is None or (after is Phase.QUEUED and before != after)):
        return True  # not yet planned (the leader plans in its round), or newly queued
    return before in ACTIVE_PHASES and after not in ACTIVE_PHASES


# -------------------------------------------------------------- job watch
async def job_watch_loop(r: Runtime, namespace: str | None) -> None:
    """Keep ``r.jobs`` in step with the DocumentJobs (all namespaces when None) and
    react to each change (:func:`job_changed`). LIST then WATCH from the list's
    version, like the pod watch; a 410 (version expired) lists again, and jobs
    that vanished meanwhile count as deleted.

    Our own watch, not kopf's ``on.event``: kopf runs a worker task with its own
    diff and per-object memory for every job, which at 1,000 jobs cost more CPU
    and memory than the admission decisions themselves (bench/RESULTS.md, Scale)."""
    loop = asyncio.get_running_loop()
    # A thread of its own: a watch blocks its thread for minutes at a time.
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zopilot-job-watch")
    synced = False

    def on_event(kind: str, job: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(job_changed, r, kind, job)

    while True:
        try:
            listing = time.monotonic()
            jobs, version = await r.kube.list_jobs_in(namespace)
            listed = {job_key(j) for j in jobs}
            for key in [k for k in r.jobs if namespace in (None, k.split("/", 1)[0])]:
                if key not in listed:  # deleted while no watch ran
                    job_changed(r, "DELETED", r.jobs[key])
            for job in jobs:
                job_changed(r, "ADDED", job)
            r.jobs_listed_at = listing
            if not synced:
                synced = True
                r.job_watches_synced += 1
                if r.job_watches_synced >= r.job_watches:
                    r.jobs_synced.set()
            resumed: str | None = version
            while resumed is not None:
                resumed = await loop.run_in_executor(
                    executor, r.kube.watch_jobs, namespace, resumed, on_event
                )
        except asyncio.CancelledError:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        except Exception as e:  # the watch must outlive any error
            r.metrics.reconcile_errors.labels(handler="job_watch", kind=type(e).__name__).inc()
            log.warning("DocumentJob watch (%s): %s", namespace or "all namespaces", e)
            await asyncio.sleep(1.0)


def job_changed(r: Runtime, kind: str, job: dict[str, Any]) -> None:
    """One job event (on the event loop, from the watch's callback): update the cache,
    wake admission when the change may let a job in, and start what the job needs
    now, in a task: planning by a non-leader, following an active attempt."""
    key = job_key(job)
    if kind == "DELETED":
        old = r.jobs.get(key)
        if old is not None:
            log.info("%s deleted; its pod goes with it (owner reference)", key)
        r.forget(key, job)
        if wakes_admission(old, None):
            r.wake.set()
        return
    if not r.watches(str(job["metadata"]["namespace"])):
        return
    old = r.remember_job(job)
    job = r.jobs[key]
    if wakes_admission(old, job):
        r.wake.set()
    phase = job_phase(job)
    if phase is None:
        if not (r.leader_known.is_set() and r.is_leader):  # the leader plans in its round
            _spawn(_plan_unless_leader(r, job))
    elif phase in ACTIVE_PHASES:
        follow_soon(r, job["metadata"]["namespace"], job["metadata"]["name"])


def _spawn(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    if _stopping:
        coroutine.close()  # never started: nothing to clean up
        return None
    task = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


async def _plan_unless_leader(r: Runtime, job: dict[str, Any]) -> None:
    """The leader plans new jobs within its admission round; the others plan them
    here, so a job is planned while no leader runs too."""
    await r.leader_known.wait()  # who plans it depends on who leads
    if r.is_leader:
        return
    try:
        await plan_job(job)
    except ConflictError:
        pass  # changed meanwhile: its next event (or the resync) comes back to it
    except OperatorError as e:
        r.metrics.reconcile_errors.labels(handler="job_event", kind=type(e).__name__).inc()
        log.warning("%s: planning failed (the resync tries again): %s", job_key(job), e)


def follow_soon(r: Runtime, namespace: str, name: str) -> None:
    """Follow the job's attempt in a task, unless one is already waiting to: that one
    reads the job and pod caches when it starts, so it sees this change too."""
    key = f"{namespace}/{name}"
    if key in r.follow_pending:
        return
    r.follow_pending.add(key)
    _spawn(_follow(r, namespace, name))


async def _follow(r: Runtime, namespace: str, name: str) -> None:
    key = f"{namespace}/{name}"
    try:
        await r.writes_idle.wait()  # admission's writes go first (follow_attempt)
        r.follow_pending.discard(key)  # from here on, a new change needs a new task
        await follow_attempt(namespace, name)
    except ConflictError:
        pass  # the job changed meanwhile; its own event reconciles it
    except OperatorError as e:
        r.metrics.reconcile_errors.labels(handler="follow", kind=type(e).__name__).inc()
        log.warning("%s: following its attempt failed: %s", key, e)
    finally:
        r.follow_pending.discard(key)


async def plan_job(job: dict[str, Any]) -> None:
    r = rt()
    async with r.lock(job_key(job)):
        fresh = await r.kube.get_job(job["metadata"]["namespace"], job["metadata"]["name"])
        if fresh is None or job_phase(fresh) is not None:
            return
        update = on_created(fresh, await r.node_infos(), utcnow(), r.settings)
        await apply(r, fresh, update, resource_version=fresh["metadata"]["resourceVersion"])


async def follow_attempt(namespace: str, name: str) -> None:
    """Read the job and its current pod (from the watch caches, else from the API)
    and apply what on_attempt says. A stale cached job makes the write fail
    (409, it is conditional on resourceVersion) and the job's next event
    follows it again."""
    r = rt()
    key = f"{namespace}/{name}"
    # Admission's writes go first: they are what the queue waits for, and a
    # pod created a moment later costs nothing.
    await r.writes_idle.wait()
    async with r.lock(key):
        job = r.jobs.get(key) or await r.kube.get_job(namespace, name)
        if job is None or job_phase(job) not in ACTIVE_PHASES:
            return
        pod_name = attempt_pod_name(job)
        pod = r.pods.get(f"{namespace}/{pod_name}") or await r.kube.get_pod(namespace, pod_name)
        nodes = await r.nodes()
        update = on_attempt(
            job,
            pod,
            utcnow(),
            r.settings,
            await r.largest_gpu_mib(),
            largest_host_mib=largest_node_memory_mib(nodes),
            node_gone=pod is None and node_is_gone(job, nodes),
        )
        if not update.patch and pod is not None and job_phase(job) is Phase.RUNNING:
            update = await live_progress(r, job, pod)
        await apply(r, job, update, resource_version=job["metadata"]["resourceVersion"])


async def live_progress(r: Runtime, job: Mapping[str, Any], pod: Mapping[str, Any]) -> Update:
    """The running worker's document counts, as a status patch when they changed."""
    seen = await progress.read(r.http, pod)
    if seen is None:
        return Update()
    patch = st.progress(
        job.get("status") or {},
        seen.documents,
        seen.done,
        seen.failed,
        now=utcnow(),
        generation=job_generation(job),
    )
    return Update(patch)


async def resync_loop(r: Runtime) -> None:
    """Every ``job_resync_s``: plan each job without a phase and follow each active
    job once more (a missed pod event, live progress), from the watch cache (the
    admission loop refreshes it with a LIST). Our own loop rather than a kopf
    timer, because kopf puts a finalizer on every object with a timer and jobs
    then cannot be deleted while the operator is away.

    The loop never ends: whatever one round raises is logged, counted
    (``reconcile_errors{handler="resync"}``) and the next round comes; the
    liveness probe reports a loop that ended or stopped finishing rounds anyway.
    """
    watch = r.loop_watch("resync", r.settings.job_resync_s)
    while True:
        await asyncio.sleep(r.settings.job_resync_s)
        try:
            await resync_once(r)
        except Exception as e:  # never let one round end the loop
            r.metrics.reconcile_errors.labels(handler="resync", kind=type(e).__name__).inc()
            log.exception(
                "resync round failed; the next one comes in %.0f s", r.settings.job_resync_s
            )
        watch.beat()


async def resync_once(r: Runtime) -> None:
    """One resync round over the cached jobs; a failure on one job does not stop the
    others. A job without a phase is planned again (a 429/5xx while planning would
    otherwise leave it phaseless), except by the leader: its admission rounds plan
    every phaseless job themselves, and a second planner only made their writes
    conflict (409) and wait a round."""
    leader = r.leader_known.is_set() and r.is_leader
    for job in list(r.jobs.values()):
        action = resync_action(job)
        if action is None or not r.watches(job["metadata"]["namespace"]):
            continue
        if action is ResyncAction.PLAN and leader:
            continue
        try:
            if action is ResyncAction.PLAN:
                await plan_job(job)
            else:
                await follow_attempt(job["metadata"]["namespace"], job["metadata"]["name"])
        except ConflictError:
            pass  # someone else just wrote it; the next round sees the result
        except OperatorError as e:
            r.metrics.reconcile_errors.labels(handler="resync", kind=type(e).__name__).inc()
            log.warning("%s: resync failed: %s", job_key(job), e)
        except Exception as e:
            r.metrics.reconcile_errors.labels(handler="resync", kind=type(e).__name__).inc()
            log.exception("%s: resync failed unexpectedly", job_key(job))


@kopf.on.probe(id="loops")
def loops_probe(**_: Any) -> dict[str, int]:
    """Liveness (kopf's ``--liveness`` endpoint): fails once a background loop has
    ended or stopped finishing rounds, so Kubernetes restarts the operator."""
    if _rt is None:
        return {}
    problems = [p for w in _rt.loops.values() if (p := w.problem()) is not None]
    if problems:
        raise kopf.PermanentError("; ".join(problems))
    return {name: w.rounds for name, w in _rt.loops.items()}


# ------------------------------------------------------------ pod watch
async def pod_watch_loop(r: Runtime, namespace: str | None) -> None:
    """Keep ``r.pods`` in step with the worker pods (all namespaces when None) and
    follow a pod's job on each change. LIST then WATCH from the list's version,
    with a server-side label selector; a 410 (version expired) lists again."""
    loop = asyncio.get_running_loop()
    # A thread of its own: a watch blocks its thread for minutes at a time.
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zopilot-pod-watch")

    def on_event(kind: str, pod: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(worker_pod_event, r, kind, pod)

    while True:
        try:
            pods, version = await r.kube.list_worker_pods(WORKER_SELECTOR, namespace)
            r.pods = {
                k: p for k, p in r.pods.items() if namespace not in (None, k.split("/", 1)[0])
            }
            for pod in pods:
                worker_pod_event(r, "ADDED", pod)
            resumed: str | None = version
            while resumed is not None:
                resumed = await loop.run_in_executor(
                    executor, r.kube.watch_pods, WORKER_SELECTOR, namespace, resumed, on_event
                )
        except asyncio.CancelledError:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        except Exception as e:  # the watch must outlive any error
            r.metrics.reconcile_errors.labels(handler="pod_watch", kind=type(e).__name__).inc()
            log.warning("worker pod watch (%s): %s", namespace or "all namespaces", e)
            await asyncio.sleep(1.0)


def worker_pod_event(r: Runtime, kind: str, pod: dict[str, Any]) -> None:
    """Cache the pod and follow its job (in a task: this runs on the watch's callback)."""
    r.remember_pod(kind, pod)
    metadata = pod.get("metadata") or {}
    job_name = (metadata.get("labels") or {}).get("zopilot.dev/job")
    if not job_name or not r.watches(str(metadata.get("namespace"))):
        return
    follow_soon(r, str(metadata["namespace"]), str(job_name))


# --------------------------------------------------------------- admission
async def admission_loop(r: Runtime) -> None:
    elector = LeaseElector(
        r.api,
        r.settings.leader_election_namespace,
        "zopilot-operator-admission",
        r.identity,
        r.settings.leader_election_lease_s,
    )
    r.elector = elector
    last_full = renewed = float("-inf")
    watch = r.loop_watch("admission", r.settings.admission_interval_s)
    while True:
        watch.beat()
        wait_s = max(0.0, r.settings.admission_interval_s - (time.monotonic() - last_full))
        # Every third of the Lease's duration at the latest (like client-go's retry
        # period), whatever admission_interval_s says: a candidate tries the Lease
        # again, so a Lease left by an instance that stopped is taken over in about
        # one lease duration; a leader renews it even while idle, so it never lapses
        # between two rounds (and `helm test` sees it renewed).
        wait_s = min(wait_s, r.settings.leader_election_lease_s / 3)
        if r.settings.admission_on_events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.wake.wait(), timeout=wait_s)
        else:
            await asyncio.sleep(wait_s)
        woke = r.wake.is_set() and r.settings.admission_on_events
        if woke:
            await asyncio.sleep(r.settings.admission_debounce_s)  # let the burst gather
        r.wake.clear()
        try:
            was_leader = r.is_leader
            # Renew at a third of the lease (like client-go's renew deadline
            # margin), not on every event-triggered round.
            if (
                not r.is_leader
                or time.monotonic() - renewed >= r.settings.leader_election_lease_s / 3
            ):
                r.is_leader = await elector.ensure()
                renewed = time.monotonic()
            r.leader_known.set()
            r.metrics.admission_leader.set(1 if r.is_leader else 0)
            if not r.is_leader:
                if was_leader:
                    r.metrics.clear_leader_gauges()
                last_full = time.monotonic()
                continue
            if not r.jobs_synced.is_set():
                continue  # the job watch's first LIST wakes us when it is in
            # Every round decides from the watch cache (and our own writes); every
            # interval round and the first after taking over also start a LIST
            # in the background (start_relist), unless the job watch listed within
            # half an interval (it just started).
            full = not was_leader or time.monotonic() - last_full >= r.settings.admission_interval_s
            if full:
                last_full = time.monotonic()
            elif not woke:
                continue  # woken only to renew the Lease: nothing to admit
            listed_s = time.monotonic() - r.jobs_listed_at
            fresh = full and listed_s >= r.settings.admission_interval_s / 2
            await admit_once(r, fresh=fresh, still_leader=elector.fence)
        except Exception:
            r.metrics.reconcile_errors.labels(handler="admission", kind="unexpected").inc()
            log.exception("admission round failed")
            await asyncio.sleep(1.0)


async def _always() -> bool:
    return True


def start_relist(r: Runtime) -> None:
    """LIST the jobs in the background and merge them into the watch cache (a safety
    net for a missed event); a round follows if the LIST told us something new. In
    the background because a round that waited for the LIST (1-1.5 s for a few
    hundred jobs under load) held up every job that arrived meanwhile: the tail of
    creation -> admitted in the scale benchmark's live scenario."""
    if r.relisting is not None and not r.relisting.done():
        return

    async def relist() -> None:
        started = time.monotonic()
        try:
            if await r.relist_jobs():
                r.wake.set()
            r.jobs_listed_at = started
        except OperatorError as e:
            r.metrics.reconcile_errors.labels(handler="relist", kind=type(e).__name__).inc()
            log.warning("listing the jobs failed (the watch cache stands): %s", e)

    r.relisting = _spawn(relist())


async def admit_once(
    r: Runtime, fresh: bool = True, still_leader: Callable[[], Awaitable[bool]] = _always
) -> None:
    """One round: plan new jobs, decide, write, from the watch cache. ``fresh``: also
    start a LIST of the jobs (merged when it is in, :func:`start_relist`) and read the
    nodes afresh. ``still_leader`` fences every write (``leader.py``): once this
    instance cannot be sure it still holds the Lease, the round aborts."""
    started = time.monotonic()
    if fresh:
        start_relist(r)
    jobs = [j for j in r.jobs.values() if r.watches(j["metadata"]["namespace"])]
    r.metrics.set_phase_counts(phase_counts(jobs))
    queue, claims = queue_and_claims(jobs)
    r.metrics.set_reservations(claims, queue)
    if not any(job_phase(j) in (None, Phase.QUEUED) for j in jobs):
        return
    nodes = await r.nodes(fresh=fresh)
    now = utcnow()
    # New jobs are planned here, in memory, and admitted in the same round:
    # one status write carries both (conditional on the version read).
    planning: dict[str, Update] = {}
    if any(job_phase(j) is None for j in jobs):
        infos = await r.node_infos()
        planned = []
        for job in jobs:
            if job_phase(job) is None:
                update = on_created(job, infos, now, r.settings)
                planning[job_key(job)] = update
                job = {**job, "status": merge_patch(job.get("status") or {}, update.patch)}
            planned.append(job)
        jobs = planned
    samples: Any = ()
    services: list[dict[str, Any]] = []
    if any(job_phase(j) is Phase.QUEUED for j in jobs):
        # The HTTP service's GPU memory counts like a running job's (services.py).
        services = await r.service_claims()
        try:
            samples = await r.join_nodes(await query_gpu_memory(r.settings, r.http), nodes)
            r.metrics.set_unmatched(claims, samples, r.settings)
        except MetricsUnavailable as e:
            r.metrics.prometheus_query_errors.labels(reason=e.reason).inc()
            samples = e
    round_ = admission_round([*jobs, *services], nodes, samples, now, r.settings)
    r.metrics.observe_round(round_)
    updates = dict(planning)
    for key, update in round_updates(round_, jobs, now, r.settings).items():
        first = planning.get(key)
        if first is None:
            updates[key] = update
            continue
        with contextlib.suppress(ValueError):  # not one patch: planned now, admitted next round
            patch = compose_patches(first.patch, update.patch)
            updates[key] = Update(patch, first.events + update.events)
    by_key = {job_key(j): j for j in jobs}
    gate = asyncio.Semaphore(r.settings.admission_write_concurrency)

    async def write(key: str, update: Update) -> None:
        job = by_key[key]
        async with gate:
            if not await still_leader():
                log.warning("%s: not written: the Lease may have passed to another instance", key)
                return
            try:
                # Conditional on the version the decision was made from.
                await apply(r, job, update, resource_version=job["metadata"]["resourceVersion"])
            except (ConflictError, NotFoundError):
                log.info("%s changed during admission; it is reconsidered next round", key)
                r.wake.set()
            except OperatorError as e:
                log.warning("%s: admission update failed: %s", key, e)

    # Admissions first: they are what the queue waits for.
    admitted = {a.item.key for a in round_.admitted}
    order = sorted(updates, key=lambda k: k not in admitted)
    r.writes_idle.clear()
    decided = time.monotonic()
    try:
        await asyncio.gather(*(write(k, updates[k]) for k in order))
    finally:
        r.writes_idle.set()
    if updates:
        log.info(
            "round (%s): %d jobs, %d planned, %d admitted, %d waiting; decided in %.2f s, "
            "%d writes in %.2f s",
            "full" if fresh else "event",
            len(jobs),
            len(planning),
            len(round_.admitted),
            len(round_.waiting),
            decided - started,
            len(updates),
            time.monotonic() - decided,
        )
