"""What the routes share: settings, engine, metrics, limiters, readiness (on ``app.state``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from zopilot_worker.metrics import WorkerMetrics
from zopilot_worker.pipeline import Engine
from zopilot_worker.service.limits import EndpointLimiter, UploadLimiter
from zopilot_worker.service.readiness import DoctorCheck, Readiness
from zopilot_worker.settings import WorkerSettings


@dataclass
class ServiceState:
    settings: WorkerSettings
    engine: Engine
    metrics: WorkerMetrics
    extract_limiter: EndpointLimiter
    classify_limiter: EndpointLimiter
    upload_limiter: UploadLimiter
    readiness: Readiness
    doctor: DoctorCheck | None


def get_state(request: Request) -> ServiceState:
    """FastAPI dependency: the state of the app serving this request."""
    state: ServiceState = request.app.state.zopilot
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]
