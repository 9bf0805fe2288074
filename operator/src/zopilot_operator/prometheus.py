"""GPU memory from Prometheus (the DCGM exporter's metrics): the one module that queries it.

Two instant queries per round:

* the framebuffer series ``DCGM_FI_DEV_FB_FREE``/``_USED``/``_RESERVED`` (MiB), and
* ``timestamp(DCGM_FI_DEV_FB_FREE)``: when each FREE sample was scraped. An
  instant query stamps every value with the *evaluation* time and still returns
  a series up to 5 minutes after its last sample (Prometheus' lookback delta),
  so only ``timestamp()`` tells how old a figure really is.

Series are joined on (node, gpu, UUID). The node is the first of
``settings.dcgm_node_labels`` a series carries (``Hostname``, ``hostname``,
``node``, ``nodename``, ``kubernetes_node`` by default). dcgm-exporter's
``Hostname``/``hostname`` holds the exporter *pod's* name unless it runs with
hostNetwork, so :func:`join_nodes` maps a value that names no node through the
exporter pods' ``spec.nodeName`` (the caller lists them). Only GPUs whose
``modelName`` is ``settings.gpu_product`` are returned. Every failure becomes
:class:`MetricsUnavailable` with a reason code and a message for the jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from zopilot_operator.errors import MetricsUnavailable
from zopilot_operator.gpus import GpuSample, normalize_product
from zopilot_operator.reasons import Reason
from zopilot_operator.settings import OperatorSettings

FREE = "DCGM_FI_DEV_FB_FREE"
USED = "DCGM_FI_DEV_FB_USED"
RESERVED = "DCGM_FI_DEV_FB_RESERVED"
FRAMEBUFFER_QUERY = f'{{__name__=~"{FREE}|{USED}|{RESERVED}"}}'
TIMESTAMP_QUERY = f"timestamp({FREE})"

__all__ = ["MetricsUnavailable", "join_nodes", "query_gpu_memory"]

_Key = tuple[str, str, str]


async def _instant(
    client: httpx.AsyncClient, settings: OperatorSettings, query: str
) -> list[Mapping[str, Any]]:
    """The result vector of one instant query, or MetricsUnavailable."""
    url = settings.prometheus_url.rstrip("/") + "/api/v1/query"
    try:
        response = await client.get(
            url, params={"query": query}, timeout=settings.prometheus_timeout_s
        )
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(
            f"Prometheus at {settings.prometheus_url} unreachable: {type(exc).__name__}: {exc}"
        ) from exc
    if response.status_code != 200:
        raise MetricsUnavailable(
            f"Prometheus answered HTTP {response.status_code} to {query}: {response.text[:200]}"
        )
    try:
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"status {body.get('status')}: {body.get('error', '')}")
        data = body["data"]
        if data.get("resultType") != "vector":
            raise ValueError(f"resultType {data.get('resultType')}, expected vector")
        result = data["result"]
        if not isinstance(result, list):
            raise ValueError("result is not a list")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MetricsUnavailable(f"Prometheus gave an unusable answer to {query}: {exc}") from exc
    return result


def _key(labels: Mapping[str, str], node_labels: Sequence[str]) -> _Key | None:
    node = next((labels[k] for k in node_labels if labels.get(k)), None)
    if node is None:
        return None
    return (node, str(labels.get("gpu", "")), str(labels.get("UUID", "")))


def _number(series: Mapping[str, Any]) -> float | None:
    try:
        value = float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


async def query_gpu_memory(
    settings: OperatorSettings, client: httpx.AsyncClient
) -> list[GpuSample]:
    """Framebuffer samples of every ``settings.gpu_product`` GPU Prometheus knows.

    Raises MetricsUnavailable: reason MetricsUnavailable for transport, HTTP,
    format or empty-result problems; NoMatchingGPU when GPUs report but none
    of the configured product.
    """
    framebuffer, stamps = await asyncio.gather(
        _instant(client, settings, FRAMEBUFFER_QUERY),
        _instant(client, settings, TIMESTAMP_QUERY),
    )

    values: dict[_Key, dict[str, float]] = {}
    models: dict[_Key, str] = {}
    for series in framebuffer:
        labels = series.get("metric") or {}
        key, number = _key(labels, settings.dcgm_node_labels), _number(series)
        if key is None or number is None:
            continue
        values.setdefault(key, {})[str(labels.get("__name__"))] = number
        models[key] = str(labels.get("modelName", ""))
    times: dict[_Key, float] = {}
    for series in stamps:
        key = _key(series.get("metric") or {}, settings.dcgm_node_labels)
        number = _number(series)
        if key is not None and number is not None:
            # Two scrape jobs may export the same GPU: keep the newest sample.
            times[key] = max(number, times.get(key, number))

    if not any(FREE in v for v in values.values()):
        raise MetricsUnavailable(
            f"Prometheus has no {FREE} series with a node label "
            f"({', '.join(settings.dcgm_node_labels)}): is the DCGM exporter running and scraped?"
        )
    wanted = normalize_product(settings.gpu_product)
    samples = []
    for key, figures in sorted(values.items()):
        if FREE not in figures or key not in times:
            continue  # without its own timestamp a figure cannot be trusted
        if normalize_product(models[key]) != wanted:
            continue
        used, reserved = figures.get(USED), figures.get(RESERVED)
        samples.append(
            GpuSample(
                node=key[0],
                gpu=key[1],
                uuid=key[2],
                model_name=models[key],
                free_mib=int(figures[FREE]),
                used_mib=None if used is None else int(used),
                reserved_mib=None if reserved is None else int(reserved),
                sample_time=datetime.fromtimestamp(times[key], UTC),
            )
        )
    if not samples:
        seen = sorted({m for m in models.values() if m}) or ["no modelName label"]
        raise MetricsUnavailable(
            f"no {settings.gpu_product} GPUs report metrics (seen: {', '.join(seen)})",
            reason=Reason.NO_MATCHING_GPU,
        )
    return samples


def join_nodes(
    samples: Sequence[GpuSample], node_names: Collection[str], pod_nodes: Mapping[str, str]
) -> list[GpuSample]:
    """Samples whose node label names no node, re-labelled with the node of the
    exporter pod it names (``pod_nodes``: exporter pod name -> spec.nodeName).

    Pure. A sample that names a node, or no known pod, is left as it is. When
    two samples describe the same GPU (its UUID; node and index where DCGM gives
    none) — e.g. series from before and after a relabeling change, both within
    Prometheus' lookback — only the newest is kept, whatever it names: an old
    series cannot make the GPU look stale, nor lend it a node its current
    series no longer joins (fail closed until the exporter pod is found).
    """
    newest: dict[tuple[str, ...], GpuSample] = {}
    for sample in samples:
        node = sample.node
        if node not in node_names and pod_nodes.get(node):
            sample = dataclasses.replace(sample, node=pod_nodes[node])
        key = (sample.uuid,) if sample.uuid else (sample.node, sample.gpu)
        if key not in newest or sample.sample_time > newest[key].sample_time:
            newest[key] = sample
    return sorted(newest.values(), key=lambda s: (s.node, s.gpu, s.uuid))
