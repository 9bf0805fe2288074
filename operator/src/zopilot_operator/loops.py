"""Liveness of the operator's own background loops (resync, admission).

kopf runs our loops as plain asyncio tasks: if one ended (an exception nobody
caught) or stopped finishing rounds (a call that never returns), the process
would look healthy while jobs silently stop moving. Each loop beats a
:class:`LoopWatch` after every round; the liveness probe (kopf's ``/healthz``,
``handlers.loops_probe``) fails when a watch reports a problem, so Kubernetes
restarts the operator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A round may legitimately take long (thousands of jobs, a slow API server):
# only this many intervals, and never less than STALL_MIN_S, count as stalled.
STALL_ROUNDS = 20
STALL_MIN_S = 600.0


@dataclass
class LoopWatch:
    """One loop's task and when it last finished a round (monotonic seconds)."""

    name: str
    interval_s: float
    clock: Callable[[], float] = time.monotonic
    task: asyncio.Task[None] | None = None
    last_round: float = field(default=0.0)
    rounds: int = 0

    def __post_init__(self) -> None:
        self.last_round = self.clock()

    @property
    def stall_after_s(self) -> float:
        return max(self.interval_s * STALL_ROUNDS, STALL_MIN_S)

    def beat(self) -> None:
        """A round finished (successfully or not: the loop is alive and goes on)."""
        self.last_round = self.clock()
        self.rounds += 1

    def problem(self) -> str | None:
        """Why this loop is not alive, or None."""
        if self.task is not None and self.task.done():
            error = None if self.task.cancelled() else self.task.exception()
            why = f": {type(error).__name__}: {error}" if error else ""
            return f"the {self.name} loop has ended{why}"
        idle = self.clock() - self.last_round
        if idle > self.stall_after_s:
            return f"the {self.name} loop finished no round for {idle:.0f} s"
        return None
