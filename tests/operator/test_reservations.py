"""Claims from job status, when the metrics show them, and effective free memory."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from zopilot_operator.gpus import Gpu, GpuNode
from zopilot_operator.reservations import (
    Claim,
    claim_from_job,
    claims_from_jobs,
    gpu_free_mib,
    node_free_mib,
    visible_in,
)
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import T0, JobBuilder, at

SETTINGS = OperatorSettings(reservation_settle_s=300)


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        pytest.param(
            JobBuilder("j").admitted("gpu-a", 10240, uuid="GPU-1").obj(),
            Claim("default/j", "gpu-a", "0", "GPU-1", 10240, T0, None),
            id="admitted",
        ),
        pytest.param(
            JobBuilder("j").admitted("gpu-a", 10240).running(at(5)).obj(),
            Claim("default/j", "gpu-a", "0", "", 10240, T0, at(5)),
            id="running",
        ),
        pytest.param(JobBuilder("j").queued(10240).obj(), None, id="queued"),
        pytest.param(
            JobBuilder("j").admitted("gpu-a", 10240).phase("Succeeded").obj(), None, id="finished"
        ),
        pytest.param(
            JobBuilder("j").admitted("gpu-a", 10240).phase("Failed").obj(), None, id="failed"
        ),
        pytest.param(JobBuilder("j").phase("Admitted").obj(), None, id="no-admission"),
        pytest.param(
            JobBuilder("j")
            .admitted("gpu-a", 10240)
            .status(admission={"node": "gpu-a", "requiredMiB": "lots"})
            .obj(),
            None,
            id="garbled-admission",
        ),
    ],
)
def test_claim_from_job(job: dict[str, Any], expected: Claim | None) -> None:
    assert claim_from_job(job) == expected


def test_claims_from_jobs_skips_non_claims() -> None:
    jobs = [
        JobBuilder("a").admitted("n", 1).obj(),
        JobBuilder("b").queued(1).obj(),
        JobBuilder("c").admitted("n", 2).running(T0).obj(),
    ]
    assert [c.key for c in claims_from_jobs(jobs)] == ["default/a", "default/c"]


def claim(required: int, started: datetime | None = None) -> Claim:
    return Claim("default/x", "n", "0", "", required, T0, started)


@pytest.mark.parametrize(
    ("started", "sample_time", "visible"),
    [
        (None, at(1000), False),
        (at(0), None, False),
        (at(0), at(299), False),
        (at(0), at(300), True),
        (at(0), at(-10), False),  # a sample from before the worker started
    ],
)
def test_visible_in(started: datetime | None, sample_time: datetime | None, visible: bool) -> None:
    assert visible_in(claim(100, started), sample_time, SETTINGS) is visible


GPU = Gpu("0", "u", capacity_mib=24000, free_mib=20000, sample_time=at(400))


@pytest.mark.parametrize(
    ("gpu", "claims", "free"),
    [
        pytest.param(GPU, [], 20000, id="metrics-only: 4000 used by others"),
        pytest.param(GPU, [claim(5000)], 15000, id="pending-claim-reserved"),
        # Settled claim: the sample includes it; bookkeeping 24000-5000=19000 is higher.
        pytest.param(GPU, [claim(5000, at(0))], 19000, id="settled-claim-bookkept"),
        pytest.param(
            Gpu("0", "u", 24000, 23000, at(400)), [claim(5000, at(0))], 19000, id="plan-is-peak"
        ),
        pytest.param(
            Gpu("0", "", 24000, None, None), [claim(5000), claim(3000)], 16000, id="blind"
        ),
        pytest.param(GPU, [claim(30000)], -10000, id="overcommitted"),
    ],
)
def test_gpu_free_mib(gpu: Gpu, claims: list[Claim], free: int) -> None:
    assert gpu_free_mib(gpu, claims, SETTINGS) == free


def test_node_free_is_its_tightest_gpu() -> None:
    node = GpuNode(
        "n",
        (Gpu("0", "a", 24000, 20000, at(400)), Gpu("1", "b", 24000, 9000, at(400))),
        slots=8,
    )
    free, gpu = node_free_mib(node, [claim(1000)], SETTINGS)
    assert (free, gpu.index) == (8000, "1")
