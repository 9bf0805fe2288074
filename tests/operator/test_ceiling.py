"""A plan no GPU can ever offer fails as NeverFits; no hold outlives the chance to be
honoured (issue 9). Pure: DCGM numbers are simulated, with the driver's reserved
memory that the node label's size includes but free memory never shows."""

from __future__ import annotations

from typing import Any

from zopilot_operator.ceiling import largest_offer_mib
from zopilot_operator.errors import MetricsUnavailable
from zopilot_operator.gpus import node_info
from zopilot_operator.reservations import claim_from_job
from zopilot_operator.scheduler import admission_round, round_updates
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import RTX_4090_MIB, JobBuilder, NodeBuilder, at, merge_patch, sample

SETTINGS = OperatorSettings()
RESERVED = 500  # MiB the driver keeps: in the label's 24564, never in FREE
NODES = [NodeBuilder("gpu-a").obj(), NodeBuilder("gpu-b").obj()]
INFOS = [i for i in (node_info(n) for n in NODES) if i]
# The OOM re-plan's cap: the label's size less the margin (retry.py).
CAPPED_PLAN = RTX_4090_MIB - SETTINGS.safety_margin_mib


def idle(now_s: float) -> list[Any]:
    return [
        sample(n, RTX_4090_MIB - RESERVED, reserved_mib=RESERVED, sampled_at=at(now_s))
        for n in ("gpu-a", "gpu-b")
    ]


def test_the_offer_is_the_usable_memory_not_the_label() -> None:
    assert largest_offer_mib(INFOS, idle(0), SETTINGS) == RTX_4090_MIB - RESERVED
    # A node without samples: its label less the smallest reservation seen elsewhere.
    assert largest_offer_mib(INFOS, idle(0)[:1], SETTINGS) == RTX_4090_MIB - RESERVED
    # No metrics at all: the label, as planning assumes.
    assert largest_offer_mib(INFOS, MetricsUnavailable("down"), SETTINGS) == RTX_4090_MIB


def test_a_replanned_job_between_label_and_usable_memory_fails_as_never_fits() -> None:
    job = JobBuilder("grown").queued(CAPPED_PLAN).status(attempt=2).obj()
    late = SETTINGS.starvation_age_s + 60  # long past the starvation age
    round_ = admission_round([job], NODES, idle(late), at(late), SETTINGS)
    assert round_.admitted == () and round_.waiting == ()
    update = round_updates(round_, [job], at(late), SETTINGS)["default/grown"]
    status = merge_patch(job["status"], update.patch)
    assert (status["phase"], status["reason"]) == ("Failed", "NeverFits")
    assert status["message"] == (
        "needs 23.0 GiB + 1.0 GiB margin, but no GPU can ever offer more than 23.5 GiB "
        "(its memory less what the driver reserves)"
    )
    assert claim_from_job({**job, "status": status}) is None


def test_a_starving_job_that_can_fit_holds_a_node_that_can_honour_it() -> None:
    # Fits an idle GPU (23540 - 2 GiB + margin <= 24064) but both GPUs are busy.
    need = CAPPED_PLAN - 2048
    job = JobBuilder("big").queued(need).obj()
    late = SETTINGS.starvation_age_s + 60
    busy = [sample(n, 4096, reserved_mib=RESERVED, sampled_at=at(late)) for n in ("gpu-a", "gpu-b")]
    round_ = admission_round([job], NODES, busy, at(late), SETTINGS)
    assert round_.never_fit == ()
    (waiting,) = round_.waiting
    assert "is held for it" in waiting.message
