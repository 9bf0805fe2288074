"""One admission round: queued jobs + GPU inventory + claims -> decisions (pure).

Policy:

* **Order.** Priority descending, then arrival (``metadata.creationTimestamp``,
  one-second resolution; a retried job keeps its place), then namespace/name
  for determinism. Jobs in retry backoff (``eligible_at`` in the future) sit
  the round out.
* **Fit.** A job fits a node when the node's effective free memory (its
  tightest GPU, claims subtracted: see ``reservations.py``) minus the job's
  ``required_mib`` leaves at least ``safety_margin_mib``, and a pod slot
  (allocatable ``nvidia.com/gpu`` minus claims on the node) is left.
* **Best fit.** Among fitting nodes, the one left with the least free memory
  (ties: node name), which keeps large holes for large jobs. Nodes are indexed
  by free memory (:class:`GpuIndex`, sorted lists and bisection), so a round
  costs O(jobs x log nodes), not jobs x nodes. A job whose last pod the
  scheduler could not place (``avoid_node``) goes to any other fitting node
  first, and to that one only if nothing else fits.
* **Multi-GPU nodes.** The device plugin picks the physical GPU, so a node is
  admitted against as if all its claims sat on its tightest GPU. Safe, but it
  packs a multi-GPU node like one GPU: prefer one GPU per node (or MIG).
* **Backfill.** A job that does not fit does not stop later, smaller jobs.
* **No starvation.** A job that has been eligible for ``starvation_age_s`` and
  still does not fit *holds* one node: the one closest to fitting it (most free
  memory among nodes large enough). No later job is placed there, so the node
  drains until the held job fits. Backfill continues on the other nodes.
  Holding one node rather than stopping all backfill keeps the cluster busy
  while still guaranteeing progress; across priorities, higher priority wins
  by design (a held node may still go to a job ahead in the order). Holds are
  recomputed every round from the API's state, never stored: a held node only
  drains, so it keeps the most free memory until the job fits or another node
  overtakes it (which is then held instead).
* **Stable messages.** A waiting job's message names what it lacks, never a
  figure that moves while it waits (an age, the best free memory right now),
  so a round over unchanged jobs writes nothing.
* **Fail closed.** A blocked inventory (no, stale or unmatched metrics) admits
  nothing and gives every job the blocking reason.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from zopilot_operator.gpus import GpuNode, Inventory, NodeInfo, largest_gpu_mib
from zopilot_operator.planning import Plan, does_not_fit
from zopilot_operator.reasons import Reason
from zopilot_operator.reservations import Claim, node_free_mib
from zopilot_operator.settings import OperatorSettings


def gib(mib: int) -> str:
    """MiB as "17.9 GiB" for messages."""
    return f"{mib / 1024:.1f} GiB"


@dataclass(frozen=True)
class QueueItem:
    """A queued job as admission sees it."""

    namespace: str
    name: str
    uid: str
    priority: int
    created_at: datetime  # arrival; ordering
    eligible_at: datetime  # status.queuedAt: entered (or, in backoff, will enter) the queue
    required_mib: int
    avoid_node: str = ""  # where the scheduler could not place its last pod: prefer others

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def queue_order(item: QueueItem) -> tuple[int, datetime, str, str]:
    return (-item.priority, item.created_at, item.namespace, item.name)


@dataclass(frozen=True)
class Admission:
    """Admit ``item`` onto ``node``; ``free_mib`` is the node's effective free memory before it."""

    item: QueueItem
    node: str
    gpu: str
    uuid: str
    required_mib: int
    free_mib: int
    gpus_on_node: int
    decided_at: datetime

    @property
    def message(self) -> str:
        where = f"{self.node} gpu {self.gpu}"
        if self.gpus_on_node > 1:
            where = f"{self.node} (tightest of its {self.gpus_on_node} GPUs: gpu {self.gpu})"
        return f"needs {gib(self.required_mib)}; {where} had {gib(self.free_mib)} free"


@dataclass(frozen=True)
class Waiting:
    """``item`` stays queued this round; ``reason`` is a :class:`Reason` value."""

    item: QueueItem
    reason: str
    message: str


@dataclass(frozen=True)
class AdmissionRound:
    admitted: tuple[Admission, ...]
    waiting: tuple[Waiting, ...]
    deferred: tuple[QueueItem, ...]  # in retry backoff; their status stays as it is
    notes: tuple[str, ...] = ()
    never_fit: tuple[Waiting, ...] = ()  # no GPU can ever offer the plan: fail as NeverFits


@dataclass
class _NodeState:
    node: GpuNode
    free_mib: int
    gpu: str
    uuid: str
    slots_left: int
    capacity_mib: int  # smallest GPU of the node: the most a job can ever get here
    held_for: QueueItem | None = None


def _node_states(
    inventory: Inventory, claims: Sequence[Claim], settings: OperatorSettings
) -> list[_NodeState]:
    by_node: dict[str, list[Claim]] = defaultdict(list)
    for claim in claims:
        by_node[claim.node].append(claim)
    states = []
    for node in sorted(inventory.nodes, key=lambda n: n.name):
        if not node.gpus:
            continue
        node_claims = by_node.get(node.name, [])
        free, gpu = node_free_mib(node, node_claims, settings)
        states.append(
            _NodeState(
                node=node,
                free_mib=free,
                gpu=gpu.index,
                uuid=gpu.uuid,
                slots_left=node.slots - len(node_claims),
                capacity_mib=min(g.capacity_mib for g in node.gpus),
            )
        )
    return states


class GpuIndex:
    """The nodes of one round, indexed by effective free memory.

    * ``open``: nodes that may take a job (not held, a slot left), sorted by
      (free, name): best fit is the first entry with free >= need (bisect).
    * ``unheld``: every node not held, sorted by (-free, name): the node a
      starving job holds is the first one large enough.
    * ``full``: nodes not held without a slot left, sorted by (free, name), and
      ``held``: the held nodes (one per starving job), so a job's waiting
      reason is a comparison, not a scan.

    Decisions are exactly those of a linear scan over all nodes (the property
    test in ``tests/operator/test_gpu_index.py`` checks this on random tables).
    """

    def __init__(self, states: Sequence[_NodeState]) -> None:
        self.by_name = {s.node.name: s for s in states}
        self.open: list[tuple[int, str]] = sorted(
            (s.free_mib, s.node.name) for s in states if s.slots_left > 0
        )
        self.unheld: list[tuple[int, str]] = sorted((-s.free_mib, s.node.name) for s in states)
        self.full: list[tuple[int, str]] = sorted(
            (s.free_mib, s.node.name) for s in states if s.slots_left <= 0
        )
        self.held: list[_NodeState] = []
        self.largest_capacity = max((s.capacity_mib for s in states), default=0)

    def best_fit(self, need_mib: int, avoid: str | None = None) -> _NodeState | None:
        """The open node left with the least free memory after taking ``need_mib``;
        ``avoid`` only when no other node fits (one step past it in the sorted list)."""
        i = bisect_left(self.open, (need_mib, ""))
        if i + 1 < len(self.open) and self.open[i][1] == avoid:
            return self.by_name[self.open[i + 1][1]]
        return self.by_name[self.open[i][1]] if i < len(self.open) else None

    def _drop(self, state: _NodeState) -> None:
        key = (state.free_mib, state.node.name)
        if state.slots_left > 0:
            del self.open[bisect_left(self.open, key)]
        else:
            del self.full[bisect_left(self.full, key)]
        del self.unheld[bisect_left(self.unheld, (-state.free_mib, state.node.name))]

    def place(self, state: _NodeState, required_mib: int) -> None:
        self._drop(state)
        state.free_mib -= required_mib
        state.slots_left -= 1
        insort(self.open if state.slots_left > 0 else self.full, (state.free_mib, state.node.name))
        insort(self.unheld, (-state.free_mib, state.node.name))

    def hold_for(self, item: QueueItem, need_mib: int) -> _NodeState | None:
        """Hold the unheld node with the most free memory among those large enough."""
        for _, name in self.unheld:
            state = self.by_name[name]
            if state.capacity_mib >= need_mib:
                self._drop(state)
                state.held_for = item
                self.held.append(state)
                return state
        return None

    def why_waiting(self, item: QueueItem, margin: int) -> Waiting:
        """Why ``item`` fits no open node. Stable: no figure that changes while it waits."""
        need_mib = item.required_mib + margin
        need = f"needs {gib(item.required_mib)} + {gib(margin)} margin"
        if self.largest_capacity < need_mib:
            return Waiting(
                item,
                Reason.NO_GPU_LARGE_ENOUGH,
                f"{need}; largest usable GPU has {gib(self.largest_capacity)}",
            )
        if self.full and self.full[-1][0] >= need_mib:
            return Waiting(
                item,
                Reason.WAITING_FOR_GPU_SLOT,
                f"{need}; a GPU has that much memory free but all its nvidia.com/gpu slots "
                "are taken",
            )
        holds = sorted((s for s in self.held if s.free_mib >= need_mib), key=lambda s: s.node.name)
        if holds:
            names = ", ".join(
                f"{s.node.name} for {s.held_for.key}" for s in holds[:3] if s.held_for
            )
            more = f" and {len(holds) - 3} more" if len(holds) > 3 else ""
            return Waiting(item, Reason.HELD_FOR_OLDER_JOB, f"{need}; held: {names}{more}")
        return Waiting(
            item,
            Reason.WAITING_FOR_GPU_MEMORY,
            f"{need}; no GPU has that much free now (largest usable GPU has "
            f"{gib(self.largest_capacity)})",
        )


def decide(
    queue: Sequence[QueueItem],
    inventory: Inventory,
    claims: Sequence[Claim],
    now: datetime,
    settings: OperatorSettings,
) -> AdmissionRound:
    """Admit what fits, in order, with best fit, backfill and starvation holds (see module doc)."""
    ordered = sorted(queue, key=queue_order)
    deferred = tuple(i for i in ordered if i.eligible_at > now)
    eligible = [i for i in ordered if i.eligible_at <= now]
    if inventory.blocked is not None:
        reason, message = inventory.blocked.reason, inventory.blocked.message
        blocked = tuple(Waiting(i, reason, message) for i in eligible)
        return AdmissionRound((), blocked, deferred, inventory.notes)

    margin = settings.safety_margin_mib
    index = GpuIndex(_node_states(inventory, claims, settings))
    admitted: list[Admission] = []
    waiting: list[Waiting] = []
    for item in eligible:
        best = index.best_fit(item.required_mib + margin, avoid=item.avoid_node)
        if best is not None:
            admitted.append(
                Admission(
                    item=item,
                    node=best.node.name,
                    gpu=best.gpu,
                    uuid=best.uuid,
                    required_mib=item.required_mib,
                    free_mib=best.free_mib,
                    gpus_on_node=len(best.node.gpus),
                    decided_at=now,
                )
            )
            # Placing r MiB lowers both bounds of every GPU on the node by r
            # (booked and, until visible, reserved), so the node's free drops by r.
            index.place(best, item.required_mib)
            continue
        verdict = index.why_waiting(item, margin)
        if (now - item.eligible_at).total_seconds() >= settings.starvation_age_s:
            hold = index.hold_for(item, item.required_mib + margin)
            if hold is not None:
                verdict = Waiting(
                    item,
                    verdict.reason,
                    f"{verdict.message}; waiting longer than {settings.starvation_age_s:.0f} s, "
                    f"so {hold.node.name} is held for it (no backfill there)",
                )
        waiting.append(verdict)
    return AdmissionRound(tuple(admitted), tuple(waiting), deferred, inventory.notes)


def never_fits(plan: Plan, nodes: Sequence[NodeInfo], settings: OperatorSettings) -> str | None:
    """Why ``plan`` can never be admitted on these nodes (fail the job at once), or None.

    None also when no node offers the GPU product at all: the job then waits
    with NoMatchingGPU instead of failing, since nodes may join later.
    """
    largest = largest_gpu_mib(nodes, settings)
    if largest is None:
        return None
    return does_not_fit(plan, largest, settings.safety_margin_mib)
