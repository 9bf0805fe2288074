"""The free-memory GPU index makes the same decisions as a linear best-fit scan.

``reference_decide`` is the admission loop as it was before the index: for
every job, scan every node. Random tables (node sizes, GPU counts, slots,
free memory, claims, priorities, starving jobs) must give the same placements,
the same free memory at placement, the same waiting reasons and the same held
nodes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from datetime import datetime

import pytest
from zopilot_operator.admission import (
    AdmissionRound,
    QueueItem,
    _node_states,
    _NodeState,
    decide,
    queue_order,
)
from zopilot_operator.gpus import Inventory, build_inventory, node_info
from zopilot_operator.reasons import Reason
from zopilot_operator.reservations import Claim
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import NodeBuilder, at, sample

NOW = at(2000)
Outcome = tuple[dict[str, tuple[str, int]], dict[str, str], dict[str, str]]


def reference_decide(
    queue: Sequence[QueueItem],
    inventory: Inventory,
    claims: Sequence[Claim],
    now: datetime,
    settings: OperatorSettings,
) -> Outcome:
    """The linear scan: (placements name -> (node, free before), reasons, holds name -> node)."""
    margin = settings.safety_margin_mib
    states = _node_states(inventory, claims, settings)
    placed: dict[str, tuple[str, int]] = {}
    reasons: dict[str, str] = {}
    holds: dict[str, str] = {}
    for item in sorted(queue, key=queue_order):
        if item.eligible_at > now:
            continue
        fits = [
            s
            for s in states
            if s.held_for is None and s.slots_left > 0 and s.free_mib - item.required_mib >= margin
        ]
        if fits:
            best = min(fits, key=lambda s: (s.free_mib - item.required_mib, s.node.name))
            placed[item.name] = (best.node.name, best.free_mib)
            best.free_mib -= item.required_mib
            best.slots_left -= 1
            continue
        reasons[item.name] = _reference_reason(item, states, margin)
        if (now - item.eligible_at).total_seconds() >= settings.starvation_age_s:
            candidates = [
                s
                for s in states
                if s.held_for is None and s.capacity_mib - item.required_mib >= margin
            ]
            if candidates:
                hold = min(candidates, key=lambda s: (-s.free_mib, s.node.name))
                hold.held_for = item
                holds[item.name] = hold.node.name
    return placed, reasons, holds


def _reference_reason(item: QueueItem, states: list[_NodeState], margin: int) -> str:
    if not any(s.capacity_mib - item.required_mib >= margin for s in states):
        return Reason.NO_GPU_LARGE_ENOUGH
    roomy = [s for s in states if s.free_mib - item.required_mib >= margin]
    if any(s.held_for is None for s in roomy):
        return Reason.WAITING_FOR_GPU_SLOT
    if roomy:
        return Reason.HELD_FOR_OLDER_JOB
    return Reason.WAITING_FOR_GPU_MEMORY


def outcome(round_: AdmissionRound) -> Outcome:
    placed = {a.item.name: (a.node, a.free_mib) for a in round_.admitted}
    reasons = {w.item.name: w.reason for w in round_.waiting}
    holds = {}
    for w in round_.waiting:
        m = re.search(r"so (\S+) is held for it", w.message)
        if m:
            holds[w.item.name] = m.group(1)
    return placed, reasons, holds


def random_table(
    rng: random.Random,
) -> tuple[list[QueueItem], Inventory, list[Claim], OperatorSettings]:
    settings = OperatorSettings(
        safety_margin_mib=rng.choice([0, 512, 1024]),
        starvation_age_s=900,
        metrics_max_age_s=10_000,
    )
    sizes = [8192, 16384, 24564, 49152]
    builders, samples = [], []
    for n in range(rng.randint(1, 25)):
        name = f"node-{n:02d}"
        count = rng.choice([1, 1, 1, 2])
        memory = rng.choice(sizes)
        builders.append(
            NodeBuilder(name).gpus(count=count, replicas=rng.randint(1, 4), memory_mib=memory)
        )
        for g in range(count):
            # Many equal free figures, so ties on free memory are broken by name.
            free = rng.choice([memory, memory, rng.randrange(0, memory + 1, 1024)])
            samples.append(sample(name, free, gpu=str(g), total_mib=memory, sampled_at=NOW))
    infos = [i for i in (node_info(b.obj()) for b in builders) if i is not None]
    inventory = build_inventory(samples, infos, NOW, settings)
    claims = [
        Claim(
            f"c/{k}",
            f"node-{rng.randrange(len(builders)):02d}",
            "0",
            "",
            rng.choice([2048, 4096, 8192]),
            at(0),
            None,
        )
        for k in range(rng.randint(0, 10))
    ]
    queue = [
        QueueItem(
            namespace=rng.choice(["a", "b"]),
            name=f"job-{j:03d}",
            uid=f"uid-{j}",
            priority=rng.choice([0, 0, 0, 5]),
            created_at=at(rng.randint(0, 50)),
            eligible_at=at(rng.choice([0, 500, 1500, 2100])),
            required_mib=rng.choice([1024, 2048, 4096, 8192, 10240, 20480, 30000, 60000]),
        )
        for j in range(rng.randint(0, 60))
    ]
    return queue, inventory, claims, settings


@pytest.mark.parametrize("seed", range(300))
def test_index_decides_like_the_linear_scan(seed: int) -> None:
    queue, inventory, claims, settings = random_table(random.Random(seed))
    expected = reference_decide(queue, inventory, claims, NOW, settings)
    assert outcome(decide(queue, inventory, claims, NOW, settings)) == expected


def test_random_tables_cover_every_waiting_reason_and_holds() -> None:
    """The property above is only as good as its tables: they reach every branch."""
    seen: set[str] = set()
    holds = 0
    for seed in range(300):
        queue, inventory, claims, settings = random_table(random.Random(seed))
        _, reasons, held = reference_decide(queue, inventory, claims, NOW, settings)
        seen |= set(reasons.values())
        holds += len(held)
    assert seen == {
        Reason.NO_GPU_LARGE_ENOUGH,
        Reason.WAITING_FOR_GPU_SLOT,
        Reason.HELD_FOR_OLDER_JOB,
        Reason.WAITING_FOR_GPU_MEMORY,
    }
    assert holds > 0
