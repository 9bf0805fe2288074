"""The most GPU memory a job can ever be admitted with (pure).

Admission places a job where DCGM's *free* memory, less claims, leaves the safety
margin. On an idle GPU free memory is the framebuffer less what the driver
reserves (DCGM ``FB_RESERVED``, a few hundred MiB), so the node label
``nvidia.com/gpu.memory`` overstates what any job can get. A plan between the
two can never be admitted; left queued it would wait forever (and, past
``starvation_age_s``, hold a node for good). :func:`largest_offer_mib` is the
bound the admission round fails such jobs against, as NeverFits.

Per node, the offer is its tightest GPU's usable memory: FREE + USED of each
sampled GPU (everything but the reserved part), or, without samples, the
label's size less the smallest reservation seen on any GPU of the product (0
without any samples: then it is the same bound as planning's ``never_fits``).
Every node offering the product counts, Ready or not: a node down for
maintenance still decides what can ever run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from zopilot_operator.errors import MetricsUnavailable
from zopilot_operator.gpus import GpuSample, NodeInfo, usable_mib
from zopilot_operator.settings import OperatorSettings


def largest_offer_mib(
    nodes: Iterable[NodeInfo],
    metrics: Sequence[GpuSample] | MetricsUnavailable,
    settings: OperatorSettings,
) -> int | None:
    """The largest memory any node offering ``settings.gpu_product`` could ever give a
    job (before the safety margin); None when no node offers the product."""
    samples = [] if isinstance(metrics, MetricsUnavailable) else list(metrics)
    by_node: dict[str, list[GpuSample]] = defaultdict(list)
    for sample in samples:
        by_node[sample.node].append(sample)
    reservations = [s.reserved_mib for s in samples if s.reserved_mib is not None]
    typical_reserved = min(reservations, default=0)
    offers = []
    for node in nodes:
        if not node.offers(settings.gpu_product):
            continue
        label = node.gpu_memory_mib or settings.gpu_memory_mib_fallback
        sampled = [u for u in map(usable_mib, by_node.get(node.name, [])) if u is not None]
        offers.append(min(sampled) if sampled else label - typical_reserved)
    return max(offers, default=None)


def never_offered(required_mib: int, ceiling_mib: int | None, settings: OperatorSettings) -> bool:
    """Whether a plan of ``required_mib`` can never be admitted under ``ceiling_mib``."""
    return ceiling_mib is not None and ceiling_mib - required_mib < settings.safety_margin_mib
