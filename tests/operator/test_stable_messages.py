"""A round over unchanged state writes nothing: waiting messages carry no live figures.

With 1,000 queued jobs, a message that quotes a growing age ("waiting N s",
"sample N s old") or a moving free-memory figure would mean 1,000 status
PATCHes every round. Each case runs one round, applies its patches the way
the API server does (merge patch), then runs the next round later over the
same jobs, nodes and DCGM figures (re-sampled, so only time moved): it must
produce no update at all.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from zopilot_operator.reasons import Reason
from zopilot_operator.scheduler import admission_round, round_updates
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import (
    RTX_4090_MIB,
    JobBuilder,
    NodeBuilder,
    at,
    merge_patch,
    sample,
)

GIB = 1024
SETTINGS = OperatorSettings(safety_margin_mib=1024, starvation_age_s=900, metrics_max_age_s=90)
NODES = [NodeBuilder("gpu-a").gpus(replicas=2).obj(), NodeBuilder("gpu-b").gpus(replicas=4).obj()]


def jobs() -> list[dict[str, Any]]:
    # Claims not yet visible in DCGM, so each node's free memory is its
    # capacity minus its claims: gpu-a 16,372 MiB with both slots taken,
    # gpu-b 19,444 MiB with slots left.
    return [
        JobBuilder("on-a-1").admitted("gpu-a", 4 * GIB).obj(),
        JobBuilder("on-a-2").admitted("gpu-a", 4 * GIB).obj(),
        JobBuilder("on-b").admitted("gpu-b", 5 * GIB).obj(),
        JobBuilder("huge").queued(40 * GIB).obj(),  # no GPU can ever offer it: NeverFits
        # Queued since T0, rounds at 1000 s and later: starving; holds gpu-b.
        JobBuilder("starving").queued(20 * GIB).obj(),
        JobBuilder("later").queued(15 * GIB, since=at(200)).created(at(200)).obj(),  # gpu-b held
        JobBuilder("slot").queued(10 * GIB, since=at(210)).created(at(210)).obj(),  # gpu-a full
    ]


def samples(now_s: float, free_b: int = RTX_4090_MIB) -> list[Any]:
    return [
        sample("gpu-a", RTX_4090_MIB, sampled_at=at(now_s)),
        sample("gpu-b", free_b, sampled_at=at(now_s)),
    ]


def run_round(state: list[dict[str, Any]], now_s: float, metrics: Any) -> dict[str, Any]:
    round_ = admission_round(state, NODES, metrics, at(now_s), SETTINGS)
    return round_updates(round_, state, at(now_s))


def applied(state: list[dict[str, Any]], updates: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for job in state:
        job = copy.deepcopy(job)
        key = f"{job['metadata']['namespace']}/{job['metadata']['name']}"
        if key in updates:
            job["status"] = merge_patch(job.get("status") or {}, updates[key].patch)
        out.append(job)
    return out


def test_waiting_jobs_are_written_once_then_left_alone() -> None:
    state = jobs()
    first = run_round(state, 1000, samples(1000))
    reasons = {k: u.patch["reason"] for k, u in first.items()}
    assert reasons == {
        "default/huge": Reason.NEVER_FITS,
        "default/slot": Reason.WAITING_FOR_GPU_SLOT,
        "default/starving": Reason.WAITING_FOR_GPU_MEMORY,
        "default/later": Reason.HELD_FOR_OLDER_JOB,
    }
    state = applied(state, first)

    assert run_round(state, 1077, samples(1077)) == {}


def test_other_free_memory_figures_do_not_rewrite_waiting_jobs() -> None:
    """DCGM's free figure moves all the time; a job still waiting for the same
    reason is not rewritten because of it."""
    state = applied(jobs(), run_round(jobs(), 1000, samples(1000)))
    assert run_round(state, 1010, samples(1010, free_b=RTX_4090_MIB - 512)) == {}


@pytest.mark.parametrize("age_s", [100, 312])
def test_stale_metrics_are_reported_once(age_s: float) -> None:
    state = jobs()
    first = run_round(state, 1000, samples(1000 - age_s))
    # Only the job no GPU could ever hold is decided without metrics (NeverFits).
    reasons = {k: u.patch["reason"] for k, u in first.items()}
    assert reasons.pop("default/huge") == Reason.NEVER_FITS
    assert set(reasons.values()) == {Reason.METRICS_STALE}
    state = applied(state, first)
    assert run_round(state, 1060, samples(1000 - age_s)) == {}
