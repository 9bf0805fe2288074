"""Kubernetes-style conditions on a status (pure).

Semantics as in ``metav1.Condition``: ``lastTransitionTime`` changes only when
``status`` flips; ``reason``/``message``/``observedGeneration`` may change
without a transition. Functions return new lists: status patches are JSON merge
patches, which replace a list whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from zopilot_operator.clock import format_time

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def find_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def condition_status(status: Mapping[str, Any], type_: str) -> str:
    """``True``/``False``/``Unknown`` of a condition on a job's status (Unknown if absent)."""
    condition = find_condition(status.get("conditions"), type_)
    return str(condition.get("status", UNKNOWN)) if condition else UNKNOWN


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """A copy of ``conditions`` with ``type_`` set; other conditions and order unchanged."""
    value = (TRUE if status else FALSE) if isinstance(status, bool) else status
    previous = find_condition(conditions, type_)
    transition = (
        previous["lastTransitionTime"]
        if previous and previous.get("status") == value and previous.get("lastTransitionTime")
        else format_time(now)
    )
    updated: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    out = [dict(c) for c in conditions or ()]
    for i, condition in enumerate(out):
        if condition.get("type") == type_:
            out[i] = updated
            return out
    out.append(updated)
    return out
