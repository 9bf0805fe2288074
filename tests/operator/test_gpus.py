"""GPU inventory: product names, node facts, joining DCGM samples with nodes, fail closed/open."""

from __future__ import annotations

from typing import Any

import pytest
from zopilot_operator.errors import MetricsUnavailable
from zopilot_operator.gpus import (
    GpuSample,
    NodeInfo,
    build_inventory,
    largest_gpu_mib,
    node_info,
    normalize_product,
)
from zopilot_operator.reasons import Reason
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import RTX_4090_MIB, NodeBuilder, at, sample

SETTINGS = OperatorSettings()
NOW = at(60)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"),
        ("NVIDIA-GeForce-RTX-4090", "nvidia-geforce-rtx-4090"),
        ("NVIDIA-GeForce-RTX-4090-SHARED", "nvidia-geforce-rtx-4090"),
        ("  nvidia geforce  rtx 4090 ", "nvidia-geforce-rtx-4090"),
        ("NVIDIA-A100-SXM4-80GB", "nvidia-a100-sxm4-80gb"),
    ],
)
def test_normalize_product(name: str, expected: str) -> None:
    assert normalize_product(name) == expected


def info(builder: NodeBuilder, tolerated: tuple[str, ...] = ()) -> NodeInfo:
    result = node_info(builder.obj(), tolerated)
    assert result is not None
    return result


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        pytest.param(
            NodeBuilder("a").gpus(count=1, replicas=4),
            {"shared": True, "replicas": 4, "gpu_count": 1, "allocatable_gpus": 4},
            id="time-sliced",
        ),
        pytest.param(
            NodeBuilder("a").gpus(count=2, replicas=1),
            {"shared": False, "gpu_count": 2, "allocatable_gpus": 2, "schedulable": True},
            id="exclusive-two-gpus",
        ),
        pytest.param(
            NodeBuilder("a").gpus(product="NVIDIA-GeForce-RTX-4090-SHARED", replicas=1),
            {"shared": True, "product": "NVIDIA-GeForce-RTX-4090"},
            id="shared-suffix",
        ),
        pytest.param(
            NodeBuilder("a").gpus(memory_mib=None), {"gpu_memory_mib": None}, id="no-memory-label"
        ),
        pytest.param(NodeBuilder("a").not_ready(), {"schedulable": False}, id="not-ready"),
        pytest.param(NodeBuilder("a").cordoned(), {"schedulable": False}, id="cordoned"),
        pytest.param(
            NodeBuilder("a").taint("dedicated"),
            {"schedulable": False, "untolerated_taints": ("dedicated",)},
            id="untolerated-taint",
        ),
        pytest.param(
            NodeBuilder("a").taint("nvidia.com/gpu"), {"schedulable": True}, id="gpu-taint"
        ),
        pytest.param(
            NodeBuilder("a").taint("dedicated", effect="PreferNoSchedule"),
            {"schedulable": True},
            id="soft-taint",
        ),
    ],
)
def test_node_info(builder: NodeBuilder, expected: dict[str, Any]) -> None:
    parsed = info(builder)
    assert {k: getattr(parsed, k) for k in expected} == expected


def test_node_info_counts_gpus_from_allocatable_without_count_label() -> None:
    node = NodeBuilder("a").gpus(count=2, replicas=4).obj()
    del node["metadata"]["labels"]["nvidia.com/gpu.count"]
    parsed = node_info(node)
    assert parsed is not None and parsed.gpu_count == 2


def test_configured_taints_are_tolerated() -> None:
    assert info(NodeBuilder("a").taint("kwok.x-k8s.io/node"), ("kwok.x-k8s.io/node",)).schedulable


def test_node_without_gpu_product_is_not_a_gpu_node() -> None:
    assert node_info(NodeBuilder("cpu").no_gpu().obj()) is None


def test_largest_gpu() -> None:
    nodes = [
        info(NodeBuilder("small").gpus(memory_mib=16384)),
        info(NodeBuilder("down").gpus(memory_mib=RTX_4090_MIB).not_ready()),
        info(NodeBuilder("other").gpus(memory_mib=81920, product="NVIDIA-A100-SXM4-80GB")),
    ]
    # A node down for maintenance still counts; another product does not.
    assert largest_gpu_mib(nodes, SETTINGS) == RTX_4090_MIB
    assert largest_gpu_mib(nodes[2:], SETTINGS) is None


def test_fresh_samples_become_gpus() -> None:
    inv = build_inventory(
        [sample("a", 20000, used_mib=4000, sampled_at=at(30))],
        [info(NodeBuilder("a"))],
        NOW,
        SETTINGS,
    )
    assert inv.blocked is None
    [node] = inv.nodes
    [gpu] = node.gpus
    assert (node.name, node.slots) == ("a", 4)
    assert (gpu.index, gpu.uuid, gpu.capacity_mib, gpu.free_mib, gpu.sample_time) == (
        "0",
        "GPU-a-0",
        24000,  # free + used + reserved from DCGM wins over the label
        20000,
        at(30),
    )


def test_capacity_falls_back_to_label_then_setting() -> None:
    bare = GpuSample("a", "0", "u", "NVIDIA GeForce RTX 4090", 1000, None, None, at(50))
    labelled = build_inventory(
        [bare], [info(NodeBuilder("a").gpus(memory_mib=16000))], NOW, SETTINGS
    )
    unlabelled = build_inventory(
        [bare], [info(NodeBuilder("a").gpus(memory_mib=None))], NOW, SETTINGS
    )
    assert labelled.nodes[0].gpus[0].capacity_mib == 16000
    assert unlabelled.nodes[0].gpus[0].capacity_mib == SETTINGS.gpu_memory_mib_fallback


@pytest.mark.parametrize(
    ("samples", "builders", "reason", "message"),
    [
        pytest.param(
            [sample("a", 1000, sampled_at=at(60 - 312))],
            [NodeBuilder("a")],
            Reason.METRICS_STALE,
            "every DCGM sample is older than the 90 s limit",
            id="stale",
        ),
        pytest.param(
            [sample("a", 1000, sampled_at=at(-100)), sample("b", 1000, sampled_at=at(-40))],
            [NodeBuilder("a"), NodeBuilder("b")],
            Reason.METRICS_STALE,
            "every DCGM sample is older than the 90 s limit",
            id="stale-everywhere-reports-the-newest",
        ),
        pytest.param(
            [sample("elsewhere", 1000)],
            [NodeBuilder("a")],
            Reason.NO_MATCHING_GPU,
            "no schedulable NVIDIA GeForce RTX 4090 node reports DCGM metrics (a: no DCGM metrics)",
            id="metrics-from-unknown-node-only",
        ),
        pytest.param(
            [sample("a", 1000)],
            [NodeBuilder("a").cordoned(), NodeBuilder("cpu").no_gpu()],
            Reason.NO_MATCHING_GPU,
            "no schedulable node offers NVIDIA GeForce RTX 4090 GPUs "
            "(label nvidia.com/gpu.product, allocatable nvidia.com/gpu)",
            id="no-schedulable-gpu-node",
        ),
        pytest.param(
            [sample("a", 1000, gpu="0")],
            [NodeBuilder("a").gpus(count=2)],
            Reason.NO_MATCHING_GPU,
            "no schedulable NVIDIA GeForce RTX 4090 node reports DCGM metrics "
            "(a: only 1 of 2 GPUs report DCGM metrics)",
            id="one-gpu-of-two-unobserved",
        ),
    ],
)
def test_blocked(
    samples: list[GpuSample], builders: list[NodeBuilder], reason: str, message: str
) -> None:
    nodes = [n for n in (node_info(b.obj()) for b in builders) if n]
    inv = build_inventory(samples, nodes, NOW, SETTINGS)
    assert inv.nodes == ()
    assert inv.blocked is not None
    assert (inv.blocked.reason, inv.blocked.message) == (reason, message)


def test_a_stale_node_is_left_out_while_others_are_used() -> None:
    samples = [sample("a", 1000, sampled_at=at(-200)), sample("b", 1000, sampled_at=at(50))]
    inv = build_inventory(samples, [info(NodeBuilder("a")), info(NodeBuilder("b"))], NOW, SETTINGS)
    assert [n.name for n in inv.nodes] == ["b"]
    assert inv.notes == ("a: DCGM sample 260 s old (limit 90 s)",)


def test_node_with_one_stale_gpu_is_left_out() -> None:
    samples = [
        sample("a", 1000, gpu="0", sampled_at=at(50)),
        sample("a", 1000, gpu="1", sampled_at=at(-100)),
    ]
    inv = build_inventory(samples, [info(NodeBuilder("a").gpus(count=2))], NOW, SETTINGS)
    assert inv.blocked is not None and inv.blocked.reason == Reason.METRICS_STALE


def test_sample_from_the_future_counts_as_fresh() -> None:
    inv = build_inventory(
        [sample("a", 1000, sampled_at=at(65))], [info(NodeBuilder("a"))], NOW, SETTINGS
    )
    assert inv.blocked is None


def test_metrics_unavailable_blocks_with_its_reason() -> None:
    error = MetricsUnavailable("no RTX 4090", reason=Reason.NO_MATCHING_GPU)
    inv = build_inventory(error, [info(NodeBuilder("a"))], NOW, SETTINGS)
    assert inv.blocked is not None
    assert (inv.blocked.reason, inv.blocked.message) == (Reason.NO_MATCHING_GPU, "no RTX 4090")


def test_fail_open_keeps_nodes_blind() -> None:
    settings = OperatorSettings(fail_open=True)
    nodes = [info(NodeBuilder("a").gpus(count=2)), info(NodeBuilder("b"))]
    inv = build_inventory(MetricsUnavailable("down"), nodes, NOW, settings)
    assert inv.blocked is None
    assert [(n.name, len(n.gpus)) for n in inv.nodes] == [("a", 2), ("b", 1)]
    assert all(
        g.free_mib is None and g.capacity_mib == RTX_4090_MIB for n in inv.nodes for g in n.gpus
    )
    assert inv.notes == ("fail-open, admitting without metrics: down",)


def test_fail_open_keeps_a_stale_node_blind() -> None:
    settings = OperatorSettings(fail_open=True)
    samples = [sample("a", 1000, sampled_at=at(-200))]
    inv = build_inventory(samples, [info(NodeBuilder("a"))], NOW, settings)
    assert inv.blocked is None
    assert inv.nodes[0].gpus[0].free_mib is None
