"""Adapter over ``zopilot_common.planner``: the operator's only contact with it.

Turns a spec into the :class:`Plan` stored in ``status.plan`` and answers "can
this ever fit?" with the planner's own wording. If the planner's signatures
change, only this module changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zopilot_common.catalog import UnknownModelError
from zopilot_common.planner import JobMemoryPlan, does_not_fit_message, plan_for_job
from zopilot_common.spec import DocumentJobSpec

from zopilot_operator.errors import PermanentError
from zopilot_operator.reasons import Reason

SOURCE_OOM_REPLAN = "oom-replan"


@dataclass(frozen=True)
class Plan:
    """GPU memory one attempt needs (``status.plan``): MiB, where from, how derived."""

    required_mib: int
    source: str
    detail: str
    # The planner's own object, kept for its "does not fit" hints; None after a
    # round trip through status or an OOM re-plan.
    memory_plan: JobMemoryPlan | None = None

    def to_status(self) -> dict[str, Any]:
        return {"requiredMiB": self.required_mib, "source": self.source, "detail": self.detail}

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Plan | None:
        """The plan stored in a job's status, or None if there is none yet."""
        plan = status.get("plan") or {}
        required = plan.get("requiredMiB")
        if not isinstance(required, int) or required <= 0:
            return None
        return cls(required, str(plan.get("source", "")), str(plan.get("detail", "")))


def plan_job(spec: DocumentJobSpec) -> Plan:
    """Plan a job's GPU memory; PermanentError(UnknownModel) for a model not in the catalog."""
    try:
        job_plan = plan_for_job(spec)
    except UnknownModelError as exc:
        raise PermanentError(str(exc), reason=Reason.UNKNOWN_MODEL) from exc
    return Plan(job_plan.required_mib, job_plan.source, job_plan.detail, job_plan)


def does_not_fit(plan: Plan, largest_gpu_mib: int, safety_margin_mib: int) -> str | None:
    """None if the plan fits the largest GPU with the margin left, else why not and what to change.

    The margin counts: a job that leaves less than ``safety_margin_mib`` free on an
    empty GPU of the largest kind is never admitted, so it is told at once.
    """
    usable = largest_gpu_mib - safety_margin_mib
    if plan.required_mib <= usable:
        return None
    target = plan.memory_plan or JobMemoryPlan(plan.required_mib, plan.source, plan.detail)
    message = does_not_fit_message(target, usable)
    return (
        f"{message} ({largest_gpu_mib / 1024:.1f} GiB less the "
        f"{safety_margin_mib / 1024:.1f} GiB safety margin)"
    )
