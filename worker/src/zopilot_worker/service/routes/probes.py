"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from zopilot_worker.service.schemas import CheckState, HealthResponse, ReadyResponse
from zopilot_worker.service.state import StateDep

router = APIRouter(tags=["probes"])


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Liveness: 200 while the process serves requests",
)
async def health() -> HealthResponse:
    # Deliberately checks nothing: a liveness probe that fails on a busy GPU or
    # a slow model load would make Kubernetes restart a healthy worker.
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: 200 once startup checks passed and the model is loaded",
    responses={503: {"model": ReadyResponse, "description": "Not ready yet (or a check failed)."}},
)
async def ready(state: StateDep) -> JSONResponse:
    body = ReadyResponse(
        ready=state.readiness.ready,
        model=state.engine.model_name,
        model_loaded=state.engine.classifier_loaded,
        checks={
            name: CheckState(state=check.state, message=check.message)
            for name, check in state.readiness.checks.items()
        },
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this worker",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
