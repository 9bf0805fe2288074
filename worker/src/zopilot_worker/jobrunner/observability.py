"""The small HTTP app ``run-job`` serves while it works: /health and /metrics."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from zopilot_worker.metrics import WorkerMetrics


def create_job_app(metrics: WorkerMetrics) -> FastAPI:
    app = FastAPI(title="ZopilotGPU worker (run-job)", docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
