"""Admission rounds: ordering, best fit, backfill, starvation holds, reservations, fail closed.

Unless a case says otherwise: RTX 4090 GPUs of 24564 MiB (what nvidia-smi
reports), a safety margin of 1024 MiB, fresh DCGM samples, now = T0 + 10 s.
"""

from __future__ import annotations

import random
from datetime import datetime

import pytest
from zopilot_operator.admission import AdmissionRound, QueueItem, decide, never_fits
from zopilot_operator.errors import MetricsUnavailable
from zopilot_operator.gpus import Inventory, NodeInfo, build_inventory, node_info
from zopilot_operator.planning import Plan
from zopilot_operator.reasons import Reason
from zopilot_operator.reservations import Claim
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import RTX_4090_MIB, T0, NodeBuilder, at, sample

NOW = at(10)
GIB = 1024
SETTINGS = OperatorSettings(safety_margin_mib=1024, starvation_age_s=900)


def item(
    name: str,
    required_mib: int,
    *,
    arrived: float = 0,
    priority: int = 0,
    eligible: float | None = None,
) -> QueueItem:
    return QueueItem(
        namespace="default",
        name=name,
        uid=f"uid-{name}",
        priority=priority,
        created_at=at(arrived),
        eligible_at=at(arrived if eligible is None else eligible),
        required_mib=required_mib,
    )


def inventory(
    free: dict[str, int],
    *,
    replicas: int = 4,
    settings: OperatorSettings = SETTINGS,
    sampled_at: datetime = T0,
) -> Inventory:
    """One single-GPU node per entry, with that much free memory."""
    nodes = infos(*(NodeBuilder(n).gpus(replicas=replicas) for n in free))
    samples = [sample(n, f, sampled_at=sampled_at) for n, f in free.items()]
    return build_inventory(samples, nodes, NOW, settings)


def infos(*builders: NodeBuilder) -> list[NodeInfo]:
    return [i for i in (node_info(b.obj()) for b in builders) if i is not None]


def claim(node: str, required_mib: int, started: datetime | None = None) -> Claim:
    return Claim(f"default/on-{node}-{required_mib}", node, "0", "", required_mib, T0, started)


def placements(round_: AdmissionRound) -> dict[str, str]:
    return {a.item.name: a.node for a in round_.admitted}


def reasons(round_: AdmissionRound) -> dict[str, str]:
    return {w.item.name: w.reason for w in round_.waiting}


SCENARIO = [
    item("j10", 10 * GIB, arrived=1),
    item("j12", 12 * GIB, arrived=2),
    item("j20", 20 * GIB, arrived=3),
    item("j8", 8 * GIB, arrived=4),
]


@pytest.mark.parametrize(
    "free_mib",
    [
        pytest.param(RTX_4090_MIB, id="idle-gpu-24564"),
        # A real idle 4090 shows ~300-560 MiB used by the driver.
        pytest.param(24000, id="driver-overhead-24000"),
    ],
)
def test_two_gpus_10_12_share_20_alone_8_waits(free_mib: int) -> None:
    # gpu-a: 24564 - 10240 - 12288 = 2036 >= 1024 (24000: 1472). gpu-b: 24564 - 20480
    # = 4084 left, 8192 does not fit there, nor in gpu-a's 2036.
    round_ = decide(SCENARIO, inventory({"gpu-a": free_mib, "gpu-b": free_mib}), [], NOW, SETTINGS)

    assert placements(round_) == {"j10": "gpu-a", "j12": "gpu-a", "j20": "gpu-b"}
    [waiting] = round_.waiting
    assert waiting.item.name == "j8"
    assert waiting.reason == Reason.WAITING_FOR_GPU_MEMORY
    assert waiting.message == (
        "needs 8.0 GiB + 1.0 GiB margin; no GPU has that much free now "
        "(largest usable GPU has 24.0 GiB)"
    )
    first = round_.admitted[0]
    assert (first.gpu, first.uuid, first.free_mib, first.decided_at) == (
        "0",
        "GPU-gpu-a-0",
        free_mib,
        NOW,
    )


def test_next_round_counts_admitted_jobs_not_yet_in_metrics() -> None:
    """The statuses written by round 1 are round 2's claims; DCGM has not seen them yet."""
    inv = inventory({"gpu-a": RTX_4090_MIB, "gpu-b": RTX_4090_MIB})
    first = decide(SCENARIO, inv, [], NOW, SETTINGS)
    claims = [claim(a.node, a.required_mib) for a in first.admitted]

    second = decide([SCENARIO[3]], inv, claims, NOW, SETTINGS)

    assert second.admitted == ()
    assert second.waiting[0].reason == Reason.WAITING_FOR_GPU_MEMORY


@pytest.mark.parametrize(
    ("started", "admits"),
    [
        pytest.param(None, False, id="not-started-reserved"),
        pytest.param(at(-100), False, id="started-100s-before-sample-still-reserved"),
        pytest.param(at(-300), True, id="settled-300s-visible-in-sample"),
    ],
)
def test_claim_is_reserved_until_the_sample_can_show_it(
    started: datetime | None, admits: bool
) -> None:
    # gpu-a runs a 20 GiB job; the sample (at T0) already shows its 20480 MiB used.
    inv = inventory({"gpu-a": RTX_4090_MIB - 20 * GIB})
    round_ = decide(
        [item("small", 2 * GIB)], inv, [claim("gpu-a", 20 * GIB, started)], NOW, SETTINGS
    )
    assert bool(round_.admitted) is admits


def test_memory_used_outside_the_operator_is_respected() -> None:
    round_ = decide([item("j", 10 * GIB)], inventory({"gpu-a": 9000}), [], NOW, SETTINGS)
    assert reasons(round_) == {"j": Reason.WAITING_FOR_GPU_MEMORY}


def test_bookkeeping_keeps_a_settled_jobs_peak_even_if_metrics_show_less() -> None:
    # The 20 GiB job has settled but uses only 5 GiB now; its plan is its peak.
    inv = inventory({"gpu-a": RTX_4090_MIB - 5 * GIB})
    round_ = decide(
        [item("j", 10 * GIB)], inv, [claim("gpu-a", 20 * GIB, at(-3600))], NOW, SETTINGS
    )
    assert round_.admitted == ()


def test_higher_priority_goes_first_even_if_later() -> None:
    queue = [
        item("early-low", 12 * GIB, arrived=0),
        item("late-high", 12 * GIB, arrived=5, priority=10),
    ]
    round_ = decide(queue, inventory({"gpu-a": 20 * GIB}), [], NOW, SETTINGS)
    assert placements(round_) == {"late-high": "gpu-a"}
    assert reasons(round_) == {"early-low": Reason.WAITING_FOR_GPU_MEMORY}


def test_equal_priority_in_arrival_order() -> None:
    queue = [item("second", 12 * GIB, arrived=2), item("first", 12 * GIB, arrived=1)]
    round_ = decide(queue, inventory({"gpu-a": 20 * GIB}), [], NOW, SETTINGS)
    assert placements(round_) == {"first": "gpu-a"}


def test_decision_does_not_depend_on_input_order() -> None:
    inv = inventory({"gpu-a": RTX_4090_MIB, "gpu-b": RTX_4090_MIB})
    expected = decide(SCENARIO, inv, [], NOW, SETTINGS)
    shuffled = list(SCENARIO)
    random.Random(7).shuffle(shuffled)
    assert decide(shuffled, inv, [], NOW, SETTINGS) == expected


def test_best_fit_picks_the_tightest_gpu_that_fits() -> None:
    inv = inventory({"roomy": 20 * GIB, "snug": 12 * GIB, "too-small": 10 * GIB})
    round_ = decide([item("j", 10 * GIB)], inv, [], NOW, SETTINGS)
    assert placements(round_) == {"j": "snug"}


def test_margin_is_kept() -> None:
    inv = inventory({"gpu-a": 10 * GIB + 1023})
    assert decide([item("j", 10 * GIB)], inv, [], NOW, SETTINGS).admitted == ()
    inv = inventory({"gpu-a": 10 * GIB + 1024})
    assert placements(decide([item("j", 10 * GIB)], inv, [], NOW, SETTINGS)) == {"j": "gpu-a"}


def test_backfill_admits_a_smaller_later_job_past_a_waiting_head() -> None:
    queue = [item("big", 20 * GIB, arrived=0), item("small", 8 * GIB, arrived=1)]
    round_ = decide(queue, inventory({"gpu-a": 12 * GIB}), [], NOW, SETTINGS)
    assert placements(round_) == {"small": "gpu-a"}
    assert reasons(round_) == {"big": Reason.WAITING_FOR_GPU_MEMORY}


def test_starving_head_holds_the_gpu_it_needs() -> None:
    # "big" has been eligible for 1000 s > starvation_age_s (900): gpu-a, where it is
    # closest to fitting, is held; "small" must not take it but may use gpu-b.
    now = at(1000)
    queue = [item("big", 20 * GIB, arrived=0), item("small", 8 * GIB, arrived=1)]
    inv = build_inventory(
        [sample("gpu-a", 12 * GIB, sampled_at=now), sample("gpu-b", 10 * GIB, sampled_at=now)],
        infos(NodeBuilder("gpu-a"), NodeBuilder("gpu-b")),
        now,
        SETTINGS,
    )
    round_ = decide(queue, inv, [], now, SETTINGS)
    assert placements(round_) == {"small": "gpu-b"}
    [big] = round_.waiting
    assert big.reason == Reason.WAITING_FOR_GPU_MEMORY
    assert big.message.endswith(
        "waiting longer than 900 s, so gpu-a is held for it (no backfill there)"
    )


def test_held_gpu_blocks_later_jobs_with_a_reason() -> None:
    now = at(1000)
    queue = [item("big", 20 * GIB, arrived=0), item("small", 8 * GIB, arrived=1)]
    inv = build_inventory(
        [sample("gpu-a", 12 * GIB, sampled_at=now)],
        infos(NodeBuilder("gpu-a")),
        now,
        SETTINGS,
    )
    round_ = decide(queue, inv, [], now, SETTINGS)
    assert round_.admitted == ()
    assert reasons(round_) == {
        "big": Reason.WAITING_FOR_GPU_MEMORY,
        "small": Reason.HELD_FOR_OLDER_JOB,
    }
    assert round_.waiting[1].message.endswith("held: gpu-a for default/big")


def test_higher_priority_still_passes_a_starving_job() -> None:
    now = at(1000)
    queue = [item("old", 20 * GIB, arrived=0), item("urgent", 8 * GIB, arrived=999, priority=5)]
    inv = build_inventory(
        [sample("gpu-a", 12 * GIB, sampled_at=now)],
        infos(NodeBuilder("gpu-a")),
        now,
        SETTINGS,
    )
    assert placements(decide(queue, inv, [], now, SETTINGS)) == {"urgent": "gpu-a"}


def test_stale_metrics_admit_nothing() -> None:
    inv = inventory({"gpu-a": RTX_4090_MIB}, sampled_at=at(10 - 312))
    round_ = decide(SCENARIO, inv, [], NOW, SETTINGS)
    assert round_.admitted == ()
    assert {w.reason for w in round_.waiting} == {Reason.METRICS_STALE}
    assert round_.waiting[0].message == "every DCGM sample is older than the 90 s limit"


def test_unreachable_prometheus_admits_nothing() -> None:
    nodes = infos(NodeBuilder("gpu-a"))
    inv = build_inventory(MetricsUnavailable("Prometheus unreachable"), nodes, NOW, SETTINGS)
    round_ = decide(SCENARIO, inv, [], NOW, SETTINGS)
    assert round_.admitted == ()
    assert {(w.reason, w.message) for w in round_.waiting} == {
        (Reason.METRICS_UNAVAILABLE, "Prometheus unreachable")
    }


def test_fail_open_admits_by_bookkeeping_alone() -> None:
    settings = OperatorSettings(fail_open=True)
    nodes = infos(NodeBuilder("gpu-a"))
    inv = build_inventory(MetricsUnavailable("down"), nodes, NOW, settings)
    claims = [claim("gpu-a", 12 * GIB)]
    round_ = decide(
        [item("j10", 10 * GIB), item("j2", 2 * GIB, arrived=1)], inv, claims, NOW, settings
    )
    # 24564 - 12288 - 10240 = 2036 >= 1024; then 2 GiB no longer fits.
    assert placements(round_) == {"j10": "gpu-a"}
    assert reasons(round_) == {"j2": Reason.WAITING_FOR_GPU_MEMORY}


def test_all_gpu_slots_taken() -> None:
    inv = inventory({"gpu-a": RTX_4090_MIB}, replicas=1)
    round_ = decide([item("j", 2 * GIB)], inv, [claim("gpu-a", 2 * GIB)], NOW, SETTINGS)
    assert reasons(round_) == {"j": Reason.WAITING_FOR_GPU_SLOT}


def test_slots_are_used_up_within_a_round() -> None:
    inv = inventory({"gpu-a": RTX_4090_MIB}, replicas=2)
    queue = [item(f"j{i}", 2 * GIB, arrived=i) for i in range(3)]
    round_ = decide(queue, inv, [], NOW, SETTINGS)
    assert placements(round_) == {"j0": "gpu-a", "j1": "gpu-a"}
    assert reasons(round_) == {"j2": Reason.WAITING_FOR_GPU_SLOT}


def test_multi_gpu_node_is_as_good_as_its_tightest_gpu() -> None:
    samples = [sample("duo", 20 * GIB, gpu="0"), sample("duo", 8 * GIB, gpu="1")]
    inv = build_inventory(samples, infos(NodeBuilder("duo").gpus(count=2)), NOW, SETTINGS)
    round_ = decide([item("j10", 10 * GIB), item("j4", 4 * GIB, arrived=1)], inv, [], NOW, SETTINGS)
    # j10 would fit GPU 0 but the device plugin may pick GPU 1.
    assert placements(round_) == {"j4": "duo"}
    assert round_.admitted[0].gpu == "1"
    assert (
        round_.admitted[0].message
        == "needs 4.0 GiB; duo (tightest of its 2 GPUs: gpu 1) had 8.0 GiB free"
    )


def test_multi_gpu_node_charges_every_claim_to_every_gpu() -> None:
    samples = [sample("duo", RTX_4090_MIB, gpu="0"), sample("duo", RTX_4090_MIB, gpu="1")]
    inv = build_inventory(samples, infos(NodeBuilder("duo").gpus(count=2)), NOW, SETTINGS)
    # One 12 GiB claim somewhere on the node: either GPU may hold it.
    round_ = decide([item("j", 12 * GIB)], inv, [claim("duo", 12 * GIB)], NOW, SETTINGS)
    assert round_.admitted == ()


def test_job_larger_than_any_gpu_waits_with_its_own_reason() -> None:
    round_ = decide([item("huge", 30 * GIB)], inventory({"gpu-a": RTX_4090_MIB}), [], NOW, SETTINGS)
    assert reasons(round_) == {"huge": Reason.NO_GPU_LARGE_ENOUGH}
    assert (
        round_.waiting[0].message
        == "needs 30.0 GiB + 1.0 GiB margin; largest usable GPU has 24.0 GiB"
    )


def test_jobs_in_retry_backoff_sit_the_round_out() -> None:
    later = item("retrying", 2 * GIB, eligible=60)
    round_ = decide([later], inventory({"gpu-a": RTX_4090_MIB}), [], NOW, SETTINGS)
    assert (round_.admitted, round_.waiting, round_.deferred) == ((), (), (later,))


def test_admitted_jobs_keep_their_arrival_times_for_metrics() -> None:
    round_ = decide(
        [item("j", GIB, arrived=3)], inventory({"gpu-a": RTX_4090_MIB}), [], NOW, SETTINGS
    )
    assert round_.admitted[0].item.created_at == at(3)


@pytest.mark.parametrize(
    ("required_mib", "node_memory", "expected"),
    [
        pytest.param(20 * GIB, RTX_4090_MIB, None, id="fits"),
        pytest.param(RTX_4090_MIB - 1024, RTX_4090_MIB, None, id="exactly-margin"),
        pytest.param(
            RTX_4090_MIB - 1023,
            RTX_4090_MIB,
            "needs 23.0 GiB (spec.gpuMemory); largest GPU offers 23.0 GiB; lower spec.gpuMemory"
            " (24.0 GiB less the 1.0 GiB safety margin)",
            id="margin-counts",
        ),
        pytest.param(
            48 * GIB,
            None,  # no memory label: the fallback (24564) applies
            "needs 48.0 GiB (spec.gpuMemory); largest GPU offers 23.0 GiB; lower spec.gpuMemory"
            " (24.0 GiB less the 1.0 GiB safety margin)",
            id="fallback-size",
        ),
    ],
)
def test_never_fits(required_mib: int, node_memory: int | None, expected: str | None) -> None:
    nodes = infos(NodeBuilder("gpu-a").gpus(memory_mib=node_memory))
    plan = Plan(required_mib, "spec.gpuMemory", "explicit")
    assert never_fits(plan, nodes, SETTINGS) == expected


def test_never_fits_is_silent_without_gpu_nodes() -> None:
    # Nodes may join later: the job waits (NoMatchingGPU) instead of failing.
    assert never_fits(Plan(99 * GIB, "planner", ""), [], SETTINGS) is None
