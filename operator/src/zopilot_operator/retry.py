"""After a failed attempt: retry with backoff (re-planned after an OOM) or fail (pure).

Attempts are 1-based; a job has ``1 + spec.retries`` of them. Attempt n that
fails retriably is retried after ``retry_backoff_base_s * 2^(n-1)`` seconds,
capped at ``retry_backoff_max_s``. An out-of-memory attempt is retried with
``requiredMiB * oom_memory_growth_factor``, capped at what the largest GPU
offers after the safety margin; if it cannot grow, the job fails with the
numbers. A permanent failure, or the last attempt, fails the job with the
attempt's own reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from zopilot_operator.admission import gib
from zopilot_operator.outcome import Failure, PodOutcome
from zopilot_operator.planning import SOURCE_OOM_REPLAN, Plan
from zopilot_operator.reasons import Reason
from zopilot_operator.settings import OperatorSettings


@dataclass(frozen=True)
class NextStep:
    """After a failed attempt: retry (``attempt`` with ``plan`` at ``eligible_at``) or fail."""

    retry: bool
    reason: str
    message: str
    attempt: int
    plan: Plan
    delay_s: float = 0.0
    eligible_at: datetime | None = None


def backoff_s(attempt: int, settings: OperatorSettings) -> float:
    """Delay before retrying after failed ``attempt`` (1-based): base * 2^(attempt-1), capped."""
    exponent = min(max(attempt - 1, 0), 32)  # 2^32 * base is past any sane cap already
    return float(min(settings.retry_backoff_base_s * 2**exponent, settings.retry_backoff_max_s))


def next_step(
    outcome: PodOutcome,
    *,
    attempt: int,
    retries: int,
    plan: Plan,
    largest_gpu_mib: int | None,
    now: datetime,
    settings: OperatorSettings,
) -> NextStep:
    """Decide what follows a failed ``outcome`` of ``attempt`` (1-based) given ``spec.retries``."""
    failed = f"attempt {attempt} failed: {outcome.reason}: {outcome.message}"
    if outcome.failure is Failure.PERMANENT:
        return NextStep(False, outcome.reason, failed, attempt, plan)
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
    total = 1 + retries
    if attempt >= total:
        return NextStep(
            False,
            outcome.reason,
            f"{failed}; no retries left ({attempt} of {total} attempts)",
            attempt,
            plan,
        )
    delay = backoff_s(attempt, settings)
    return NextStep(
        True,
        Reason.RETRY_BACKOFF,
        f"{failed}; attempt {attempt + 1} of {total} in {delay:.0f} s",
        attempt + 1,
        plan,
        delay,
        now + timedelta(seconds=delay),
    )
