"""After a failed attempt: retry with backoff (re-planned after an OOM) or fail (pure).

Attempts are 1-based; a job has ``1 + spec.retries`` of them, not counting
disrupted ones. Attempt n that fails retriably is retried after
``retry_backoff_base_s * 2^(n-1)`` seconds (n counting only attempts that used a
retry), capped at ``retry_backoff_max_s``. Two kinds of out-of-memory are kept
apart:

* **GPU** (CUDA OOM, worker exit 76): re-planned with ``requiredMiB *
  oom_memory_growth_factor``, capped at what the largest GPU offers after the
  safety margin; if it cannot grow, the job fails with the numbers.
* **Host** (container reason ``OOMKilled``: the kernel's OOM killer, host RAM):
  the worker pod's memory request grows by the same factor (``hostMemoryMiB`` in
  the status, so it survives restarts), capped at the largest GPU node's
  allocatable memory; if it cannot grow, the job fails saying so.

A **disruption** (eviction, drain, preemption, node shutdown or gone) and a pod
the scheduler cannot place where admission put it are retried without using up
``spec.retries`` (at most :data:`MAX_DISRUPTIONS` times, so
every job ends). A permanent failure, or the last attempt, fails the job with
the attempt's own reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from zopilot_common.spec import parse_quantity_bytes

from zopilot_operator.admission import gib
from zopilot_operator.gpus import GPU_RESOURCE
from zopilot_operator.outcome import Failure, PodOutcome
from zopilot_operator.planning import SOURCE_OOM_REPLAN, Plan
from zopilot_operator.reasons import Reason
from zopilot_operator.settings import OperatorSettings

MAX_DISRUPTIONS = 10


@dataclass(frozen=True)
class NextStep:
    """After a failed attempt: retry (``attempt`` with ``plan`` at ``eligible_at``) or fail.

    ``host_memory_mib``: the worker pod's memory request for the next attempt (None:
    unchanged); ``disruptions``: disrupted attempts so far, this one included."""

    retry: bool
    reason: str
    message: str
    attempt: int
    plan: Plan
    delay_s: float = 0.0
    eligible_at: datetime | None = None
    host_memory_mib: int | None = None
    disruptions: int = 0


def backoff_s(attempt: int, settings: OperatorSettings) -> float:
    """Delay before retrying after failed ``attempt`` (1-based): base * 2^(attempt-1), capped."""
    exponent = min(max(attempt - 1, 0), 32)  # 2^32 * base is past any sane cap already
    return float(min(settings.retry_backoff_base_s * 2**exponent, settings.retry_backoff_max_s))


def default_host_memory_mib(settings: OperatorSettings) -> int | None:
    """The worker pod's configured memory request in MiB (None if it is no memory quantity)."""
    try:
        return -(-parse_quantity_bytes(settings.worker_memory_request) // (1024 * 1024))
    except ValueError:
        return None


def largest_node_memory_mib(nodes: Iterable[Mapping[str, Any]]) -> int | None:
    """Allocatable memory (MiB) of the largest node with GPUs (allocatable nvidia.com/gpu)."""
    sizes = []
    for node in nodes:
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        if str(allocatable.get(GPU_RESOURCE, "0")) in ("", "0"):
            continue
        try:
            sizes.append(parse_quantity_bytes(str(allocatable.get("memory", ""))) // (1024 * 1024))
        except ValueError:
            continue
    return max(sizes, default=None)


def next_step(
    outcome: PodOutcome,
    *,
    attempt: int,
    retries: int,
    plan: Plan,
    largest_gpu_mib: int | None,
    now: datetime,
    settings: OperatorSettings,
    disruptions: int = 0,
    host_memory_mib: int | None = None,
    largest_host_mib: int | None = None,
) -> NextStep:
    """Decide what follows a failed ``outcome`` of ``attempt`` (1-based) given ``spec.retries``.

    ``disruptions``: earlier attempts that were disrupted (not counted against
    ``retries``); ``host_memory_mib``: this attempt's memory request (None: the
    configured ``worker_memory_request``); ``largest_host_mib``: the largest GPU
    node's allocatable memory (None: unknown, growth uncapped).
    """
    failed = f"attempt {attempt} failed: {outcome.reason}: {outcome.message}"
    if outcome.failure is Failure.PERMANENT:
        return NextStep(False, outcome.reason, failed, attempt, plan)
    host = host_memory_mib
    not_counted = (Failure.DISRUPTED, Failure.UNSCHEDULABLE)
    if outcome.failure in not_counted and disruptions < MAX_DISRUPTIONS:
        # Unschedulable: admission chose wrong; admit again at once, elsewhere.
        delay = 0.0 if outcome.failure is Failure.UNSCHEDULABLE else settings.retry_backoff_base_s
        return NextStep(
            True,
            Reason.RETRY_BACKOFF,
            f"{failed}; attempt {attempt + 1} in {delay:.0f} s "
            "(not the job's fault: it does not use up spec.retries)",
            attempt + 1,
            plan,
            delay,
            now + timedelta(seconds=delay),
            host,
            disruptions + 1,
        )
    if outcome.failure is Failure.OUT_OF_MEMORY:
        grown = math.ceil(plan.required_mib * settings.oom_memory_growth_factor)
        cap = None if largest_gpu_mib is None else largest_gpu_mib - settings.safety_margin_mib
        new_mib = grown if cap is None else min(grown, cap)
        if new_mib <= plan.required_mib:
            message = (
                f"{failed}; needs more than {gib(plan.required_mib)} but the largest GPU "
                f"offers {gib(largest_gpu_mib or 0)} less the {gib(settings.safety_margin_mib)} "
                "safety margin"
            )
            return NextStep(False, outcome.reason, message, attempt, plan)
        capped = f", capped at {gib(new_mib)}" if new_mib < grown else ""
        plan = Plan(
            new_mib,
            SOURCE_OOM_REPLAN,
            f"attempt {attempt} ran out of memory ({outcome.reason}) at {gib(plan.required_mib)}; "
            f"re-planned x{settings.oom_memory_growth_factor:g} = {gib(grown)}{capped}",
        )
    if outcome.failure is Failure.HOST_OUT_OF_MEMORY:
        current = host if host is not None else default_host_memory_mib(settings)
        if current is None:
            message = (
                f"{failed}; out of host memory, and worker_memory_request "
                f"({settings.worker_memory_request}) is no quantity to grow"
            )
            return NextStep(False, outcome.reason, message, attempt, plan)
        grown = math.ceil(current * settings.oom_memory_growth_factor)
        host = grown if largest_host_mib is None else min(grown, largest_host_mib)
        if host <= current:
            message = (
                f"{failed}; out of host memory at a {gib(current)} memory request, and the "
                f"largest GPU node has {gib(largest_host_mib or 0)} allocatable"
            )
            return NextStep(False, outcome.reason, message, attempt, plan)
        failed += f"; memory request raised to {gib(host)} (was {gib(current)})"
    total = 1 + retries
    counted = attempt - disruptions
    if counted >= total:
        return NextStep(
            False,
            outcome.reason,
            f"{failed}; no retries left ({counted} of {total} attempts)",
            attempt,
            plan,
        )
    delay = backoff_s(counted, settings)
    return NextStep(
        True,
        Reason.RETRY_BACKOFF,
        f"{failed}; attempt {counted + 1} of {total} in {delay:.0f} s",
        attempt + 1,
        plan,
        delay,
        now + timedelta(seconds=delay),
        host,
        disruptions,
    )
