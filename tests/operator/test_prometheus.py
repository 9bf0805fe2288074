"""The Prometheus edge against a mocked HTTP API (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from zopilot_operator.errors import MetricsUnavailable
from zopilot_operator.gpus import GpuSample
from zopilot_operator.prometheus import FRAMEBUFFER_QUERY, TIMESTAMP_QUERY, query_gpu_memory
from zopilot_operator.reasons import Reason
from zopilot_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(prometheus_url="http://prom.example:9090/")
EVAL_TIME = 1_772_366_500.0  # what an instant query stamps every value with
SCRAPED = 1_772_366_470.123  # when the exporter's sample was scraped


def series(name: str | None, value: str, **labels: str) -> dict[str, Any]:
    metric = {"gpu": "0", "UUID": "GPU-a", "modelName": "NVIDIA GeForce RTX 4090", **labels}
    if name:
        metric["__name__"] = name
    return {"metric": metric, "value": [EVAL_TIME, value]}


def vector(result: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def answer(framebuffer: list[dict[str, Any]], stamps: list[dict[str, Any]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        query = request.url.params["query"]
        body = {FRAMEBUFFER_QUERY: vector(framebuffer), TIMESTAMP_QUERY: vector(stamps)}[query]
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


async def run(transport: httpx.MockTransport) -> list[GpuSample]:
    async with httpx.AsyncClient(transport=transport) as client:
        return await query_gpu_memory(SETTINGS, client)


def gpu_series(node_label: str, node: str, uuid: str, free: str, used: str) -> list[dict[str, Any]]:
    labels = {node_label: node, "UUID": uuid}
    return [
        series("DCGM_FI_DEV_FB_FREE", free, **labels),
        series("DCGM_FI_DEV_FB_USED", used, **labels),
        series("DCGM_FI_DEV_FB_RESERVED", "300", **labels),
    ]


async def test_samples_with_both_hostname_spellings_and_scrape_time() -> None:
    framebuffer = gpu_series("Hostname", "gpu-a", "GPU-a", "20000", "4264") + gpu_series(
        "hostname", "gpu-b", "GPU-b", "1000", "23264"
    )
    stamps = [
        series(None, str(SCRAPED), Hostname="gpu-a", UUID="GPU-a"),
        series(None, str(SCRAPED - 60), hostname="gpu-b", UUID="GPU-b"),
    ]
    samples = await run(answer(framebuffer, stamps))
    assert samples == [
        GpuSample(
            "gpu-a",
            "0",
            "GPU-a",
            "NVIDIA GeForce RTX 4090",
            20000,
            4264,
            300,
            datetime.fromtimestamp(SCRAPED, UTC),
        ),
        GpuSample(
            "gpu-b",
            "0",
            "GPU-b",
            "NVIDIA GeForce RTX 4090",
            1000,
            23264,
            300,
            datetime.fromtimestamp(SCRAPED - 60, UTC),
        ),
    ]
    assert samples[0].total_mib == 24564


async def test_other_products_nan_and_unstamped_series_are_left_out() -> None:
    framebuffer = [
        series("DCGM_FI_DEV_FB_FREE", "20000", Hostname="gpu-a"),
        series("DCGM_FI_DEV_FB_FREE", "80000", Hostname="a100", modelName="NVIDIA A100-SXM4-80GB"),
        series("DCGM_FI_DEV_FB_FREE", "NaN", Hostname="gpu-nan"),
        series("DCGM_FI_DEV_FB_FREE", "5000", Hostname="gpu-unstamped"),
        series("DCGM_FI_DEV_FB_FREE", "5000"),  # no Hostname at all
    ]
    stamps = [series(None, str(SCRAPED), Hostname=h) for h in ("gpu-a", "a100", "gpu-nan")]
    samples = await run(answer(framebuffer, stamps))
    assert [(s.node, s.free_mib, s.used_mib, s.reserved_mib) for s in samples] == [
        ("gpu-a", 20000, None, None)
    ]


def failing(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def time_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize(
    ("transport", "reason", "fragment"),
    [
        pytest.param(
            failing(refuse),
            Reason.METRICS_UNAVAILABLE,
            "Prometheus at http://prom.example:9090/ unreachable: ConnectError",
            id="refused",
        ),
        pytest.param(
            failing(time_out), Reason.METRICS_UNAVAILABLE, "unreachable: ReadTimeout", id="timeout"
        ),
        pytest.param(
            failing(lambda r: httpx.Response(503, text="overloaded")),
            Reason.METRICS_UNAVAILABLE,
            "answered HTTP 503",
            id="http-503",
        ),
        pytest.param(
            failing(lambda r: httpx.Response(200, text="<html>")),
            Reason.METRICS_UNAVAILABLE,
            "unusable answer",
            id="not-json",
        ),
        pytest.param(
            failing(lambda r: httpx.Response(200, json={"status": "error", "error": "bad query"})),
            Reason.METRICS_UNAVAILABLE,
            "status error: bad query",
            id="query-error",
        ),
        pytest.param(
            failing(
                lambda r: httpx.Response(
                    200, json={"status": "success", "data": {"resultType": "matrix", "result": []}}
                )
            ),
            Reason.METRICS_UNAVAILABLE,
            "resultType matrix",
            id="not-a-vector",
        ),
        pytest.param(
            answer([], []),
            Reason.METRICS_UNAVAILABLE,
            "Prometheus has no DCGM_FI_DEV_FB_FREE series",
            id="empty",
        ),
        pytest.param(
            answer(
                [
                    series(
                        "DCGM_FI_DEV_FB_FREE", "1", Hostname="x", modelName="NVIDIA A100-SXM4-80GB"
                    )
                ],
                [series(None, str(SCRAPED), Hostname="x")],
            ),
            Reason.NO_MATCHING_GPU,
            "no NVIDIA GeForce RTX 4090 GPUs report metrics (seen: NVIDIA A100-SXM4-80GB)",
            id="other-product",
        ),
    ],
)
async def test_failures_become_metrics_unavailable(
    transport: httpx.MockTransport, reason: str, fragment: str
) -> None:
    with pytest.raises(MetricsUnavailable) as caught:
        await run(transport)
    assert caught.value.reason == reason
    assert fragment in caught.value.message


async def test_query_text() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["query"])
        return httpx.Response(200, content=json.dumps(vector([])))

    with pytest.raises(MetricsUnavailable):
        await run(httpx.MockTransport(handle))
    assert set(seen) == {
        '{__name__=~"DCGM_FI_DEV_FB_FREE|DCGM_FI_DEV_FB_USED|DCGM_FI_DEV_FB_RESERVED"}',
        "timestamp(DCGM_FI_DEV_FB_FREE)",
    }
