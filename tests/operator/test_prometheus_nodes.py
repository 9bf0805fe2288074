"""Joining DCGM series to nodes: configurable node labels, exporter-pod fallback (pure parts)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
from zopilot_operator.prometheus import (
    FRAMEBUFFER_QUERY,
    TIMESTAMP_QUERY,
    join_nodes,
    query_gpu_memory,
)
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import at, sample

T = 1_772_366_470.0


def _series(name: str | None, value: float, **labels: str) -> dict[str, Any]:
    metric = {"gpu": "0", "UUID": f"GPU-{labels}", "modelName": "NVIDIA GeForce RTX 4090"}
    metric.update(labels)
    if name:
        metric["__name__"] = name
    return {"metric": metric, "value": [T, str(value)]}


def _transport(*label_sets: dict[str, str]) -> httpx.MockTransport:
    framebuffer = [_series("DCGM_FI_DEV_FB_FREE", 20000, **ls) for ls in label_sets]
    stamps = [_series(None, T, **ls) for ls in label_sets]

    def handle(request: httpx.Request) -> httpx.Response:
        result = {FRAMEBUFFER_QUERY: framebuffer, TIMESTAMP_QUERY: stamps}
        vector = result[request.url.params["query"]]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": vector}}
        )

    return httpx.MockTransport(handle)


async def test_node_label_is_the_first_configured_label_present() -> None:
    settings = OperatorSettings(dcgm_node_labels=["nodename", "Hostname"])
    transport = _transport(
        {"Hostname": "dcgm-exporter-x1", "nodename": "gpu-a"},  # relabelled: nodename wins
        {"Hostname": "gpu-b"},  # hostNetwork exporter: Hostname is the node
        {"kubernetes_node": "gpu-c"},  # not a configured label: ignored
    )
    async with httpx.AsyncClient(transport=transport) as client:
        samples = await query_gpu_memory(settings, client)
    assert sorted(s.node for s in samples) == ["gpu-a", "gpu-b"]


async def test_default_labels_include_the_usual_relabelled_names() -> None:
    transport = _transport({"kubernetes_node": "gpu-c"}, {"node": "gpu-d"})
    async with httpx.AsyncClient(transport=transport) as client:
        samples = await query_gpu_memory(OperatorSettings(), client)
    assert sorted(s.node for s in samples) == ["gpu-c", "gpu-d"]


def test_join_maps_exporter_pod_names_to_their_nodes() -> None:
    samples = [sample("dcgm-exporter-6ldbb", 1000), sample("gpu-b", 2000), sample("ghost", 3)]
    joined = join_nodes(
        samples,
        node_names={"gpu-a", "gpu-b"},
        pod_nodes={"dcgm-exporter-6ldbb": "gpu-a", "gpu-b": "elsewhere"},
    )
    # A pod name becomes its node; a value that names a node stays; unknown stays.
    assert sorted(s.node for s in joined) == ["ghost", "gpu-a", "gpu-b"]
    assert next(s for s in joined if s.node == "gpu-a").free_mib == 1000


def test_join_keeps_only_the_newest_sample_of_a_gpu() -> None:
    # Before a relabeling change the GPU's series named the node; after it, the pod.
    # Both are within Prometheus' lookback: the old one must not make the GPU stale.
    old = sample("gpu-a", 500, sampled_at=at(0))
    new = replace(sample("dcgm-exporter-6ldbb", 9000, sampled_at=at(60)), uuid=old.uuid)
    joined = join_nodes([old, new], {"gpu-a"}, {"dcgm-exporter-6ldbb": "gpu-a"})
    assert [(s.node, s.free_mib) for s in joined] == [("gpu-a", 9000)]


def test_a_newer_series_of_a_gpu_supersedes_an_old_one_even_when_it_joins_no_node() -> None:
    # The exporter switched to pod names, and its pod is not found (yet): the
    # node-named series from before the switch lingers in Prometheus' lookback.
    # It must not keep the GPU admissible: the GPU's current series joins no node.
    old = sample("gpu-a", 9000, sampled_at=at(0))
    new = replace(sample("dcgm-exporter-6ldbb", 9000, sampled_at=at(20)), uuid=old.uuid)
    joined = join_nodes([old, new], {"gpu-a"}, {})
    assert [s.node for s in joined] == ["dcgm-exporter-6ldbb"]
