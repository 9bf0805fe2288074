"""kopf handlers: the thin edge between Kubernetes events and the pure core.

* a new DocumentJob is planned and queued (or failed at once): ``lifecycle.on_created``;
* one admission loop, run only by the Lease holder, admits queued jobs from
  Prometheus's DCGM numbers: ``scheduler.admission_round``/``round_updates``;
* an admitted or running job follows its attempt's pod (create it, report
  it, retry or fail): ``lifecycle.on_attempt`` — on job events, on worker pod
  events and in a resync loop (watches can miss events; live progress).

No handler needs a finalizer, so none is put on jobs: a job can be deleted
even while no operator runs, and its pod goes with it (owner reference).

Every decision is made by pure functions; this module reads, applies
``Update``s and translates errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from prometheus_client import start_http_server
from zopilot_common.spec import GROUP, PLURAL, VERSION

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
    resync_action,
)
from zopilot_operator.kube import build_event, to_kopf_error
from zopilot_operator.leader import LeaseElector
from zopilot_operator.lifecycle import (
    Event,
    Update,
    node_is_gone,
    on_attempt,
    on_created,
    on_pod_create_refused,
)
from zopilot_operator.podbuilder import attempt_pod_name
from zopilot_operator.prometheus import query_gpu_memory
from zopilot_operator.reasons import ACTIVE_PHASES, EventType, Phase, Reason
from zopilot_operator.retry import largest_node_memory_mib
from zopilot_operator.runtime import Runtime
from zopilot_operator.scheduler import admission_round, round_updates
from zopilot_operator.settings import OperatorSettings

log = logging.getLogger("zopilot.operator")

WORKER_LABELS = {"app.kubernetes.io/name": "zopilot-worker"}
# Fault injection for the crash-consistency test only: SIGKILL ourselves right
# after creating a worker pod, before recording it on the job.
_CRASH_AFTER_POD_CREATE = "ZOPILOT_OPERATOR_TEST_CRASH_AFTER_POD_CREATE"

_rt: Runtime | None = None


def rt() -> Runtime:
    if _rt is None:
        raise kopf.TemporaryError("operator is starting", delay=1)
    return _rt


# ---------------------------------------------------------------- startup
@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _rt
    # Progress and diff-base in our own annotations; no finalizers: the worker
    # pod is owned by the job, so the garbage collector deletes it with the job,
    # and the job's reservation lives in its status and goes with it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="zopilot.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="zopilot.dev", key="last-handled-configuration"
    )
    settings.posting.enabled = False  # we post our own, readable events
    settings.watching.server_timeout = 120
    config = OperatorSettings()
    _rt = Runtime.create(config)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr="0.0.0.0", registry=_rt.registry)
    loop = asyncio.get_running_loop()
    _rt.watch("admission", config.admission_interval_s).task = loop.create_task(
        admission_loop(_rt), name="zopilot-admission"
    )
    _rt.watch("resync", config.job_resync_s).task = loop.create_task(
        resync_loop(_rt), name="zopilot-resync"
    )
    log.info("zopilot operator started as %s (prometheus %s)", _rt.identity, config.prometheus_url)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
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
        await r.kube.patch_job_status(ns, name, patch, resource_version=resource_version)
    for ev in events:
        with contextlib.suppress(OperatorError):  # an event lost is not worth a retry
            await r.kube.emit_event(
                build_event(job, ev.type, ev.reason, ev.message, now, instance=r.identity)
            )


def _node(job: Mapping[str, Any]) -> str:
    return str(((job.get("status") or {}).get("admission") or {}).get("node", "?"))


# ------------------------------------------------------------ job handlers
@kopf.on.event(GROUP, VERSION, PLURAL)
async def job_event(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    if event.get("type") == "DELETED":
        log.info("%s deleted; its pod goes with it (owner reference)", job_key(body))
        if _rt is not None:
            _rt.forget(job_key(body))
        return
    job = dict(body)
    phase = job_phase(job)
    try:
        if phase is None:
            await plan_job(job)
        elif phase in ACTIVE_PHASES:
            await follow_attempt(job["metadata"]["namespace"], job["metadata"]["name"])
    except OperatorError as e:
        rt().metrics.reconcile_errors.labels(handler="job_event", kind=type(e).__name__).inc()
        raise to_kopf_error(e) from e


async def plan_job(job: dict[str, Any]) -> None:
    r = rt()
    async with r.lock(job_key(job)):
        fresh = await r.kube.get_job(job["metadata"]["namespace"], job["metadata"]["name"])
        if fresh is None or job_phase(fresh) is not None:
            return
        update = on_created(fresh, await r.node_infos(), utcnow(), r.settings)
        await apply(r, fresh, update, resource_version=fresh["metadata"]["resourceVersion"])


async def follow_attempt(namespace: str, name: str) -> None:
    """Read the job and its current pod fresh, and apply what on_attempt says."""
    r = rt()
    async with r.lock(f"{namespace}/{name}"):
        job = await r.kube.get_job(namespace, name)
        if job is None or job_phase(job) not in ACTIVE_PHASES:
            return
        pod = await r.kube.get_pod(namespace, attempt_pod_name(job))
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
    job once more (a missed pod event, live progress). One list call per round;
    our own loop rather than a kopf timer, because kopf puts a finalizer on every
    object with a timer and jobs then cannot be deleted while the operator is away.

    The loop never ends: whatever one round raises is logged, counted
    (``reconcile_errors{handler="resync"}``) and the next round comes; the
    liveness probe reports a loop that ended or stopped finishing rounds anyway.
    """
    watch = r.watch("resync", r.settings.job_resync_s)
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
    """One resync round over all jobs; a failure on one job does not stop the others."""
    try:
        jobs = await r.kube.list_jobs()
    except OperatorError as e:
        log.warning("resync: listing jobs failed: %s", e)
        return
    for job in jobs:
        action = resync_action(job)
        if action is None:
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
    problems = [p for w in _rt.watches.values() if (p := w.problem()) is not None]
    if problems:
        raise kopf.PermanentError("; ".join(problems))
    return {name: w.rounds for name, w in _rt.watches.items()}


# ------------------------------------------------------------ pod handlers
@kopf.on.event("", "v1", "pods", labels=WORKER_LABELS)
async def worker_pod_event(body: kopf.Body, **_: Any) -> None:
    labels = body.get("metadata", {}).get("labels", {})
    job_name = labels.get("zopilot.dev/job")
    if not job_name:
        return
    try:
        await follow_attempt(body["metadata"]["namespace"], job_name)
    except ConflictError:
        pass  # the job changed meanwhile; its own event reconciles it
    except OperatorError as e:
        rt().metrics.reconcile_errors.labels(handler="pod_event", kind=type(e).__name__).inc()
        raise to_kopf_error(e) from e


# --------------------------------------------------------------- admission
async def admission_loop(r: Runtime) -> None:
    elector = LeaseElector(
        r.api,
        r.settings.leader_election_namespace,
        "zopilot-operator-admission",
        r.identity,
        r.settings.leader_election_lease_s,
    )
    while True:
        started = time.monotonic()
        try:
            if await elector.ensure():
                await admit_once(r, still_leader=elector.fence)
        except Exception:
            r.metrics.reconcile_errors.labels(handler="admission", kind="unexpected").inc()
            log.exception("admission round failed")
        r.watch("admission", r.settings.admission_interval_s).beat()
        await asyncio.sleep(
            max(0.05, r.settings.admission_interval_s - (time.monotonic() - started))
        )


async def _always() -> bool:
    return True


async def admit_once(r: Runtime, still_leader: Callable[[], Awaitable[bool]] = _always) -> None:
    """One admission round. ``still_leader`` fences every write (``leader.py``): once
    this instance cannot be sure it still holds the Lease, the round aborts."""
    jobs = await r.kube.list_jobs()
    r.metrics.set_phase_counts(phase_counts(jobs))
    if not any(job_phase(j) is Phase.QUEUED for j in jobs):
        return
    nodes = await r.nodes(fresh=True)
    samples: Any
    try:
        samples = await query_gpu_memory(r.settings, r.http)
    except MetricsUnavailable as e:
        r.metrics.prometheus_query_errors.labels(reason=e.reason).inc()
        samples = e
    now = utcnow()
    round_ = admission_round(jobs, nodes, samples, now, r.settings)
    r.metrics.observe_round(round_)
    by_key = {job_key(j): j for j in jobs}
    for key, update in round_updates(round_, jobs, now, r.settings).items():
        if not await still_leader():
            log.warning("admission round aborted: the Lease may have passed to another instance")
            return
        job = by_key[key]
        try:
            # Conditional on the version the decision was made from.
            await apply(r, job, update, resource_version=job["metadata"]["resourceVersion"])
        except (ConflictError, NotFoundError):
            log.info("%s changed during admission; it is reconsidered next round", key)
        except OperatorError as e:
            log.warning("%s: admission update failed: %s", key, e)
