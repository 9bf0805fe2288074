"""The simulated nodes' manifests (pure): two pools told apart by taints."""

from __future__ import annotations

from zopilot_dev import nodes, realnodes


def test_simulated_gpu_nodes_are_tainted_and_cpu_nodes_are_not() -> None:
    gpu = nodes.gpu_node(nodes.gpu_node_name(0), replicas=4)
    cpu = nodes.cpu_node(nodes.cpu_node_name(0))
    assert gpu["spec"]["taints"] == [
        {"key": "zopilot.dev/simulated", "value": "true", "effect": "NoSchedule"}
    ]
    assert "taints" not in cpu["spec"]
    # The real nodes' taint is another key: an operator tolerating one pool never
    # admits onto the other.
    assert realnodes.REAL_NODE_TAINT["key"] != nodes.SIMULATED_TAINT["key"]
    assert gpu["metadata"]["labels"][nodes.SIMULATED_LABEL] == "true"
