"""The FastAPI app factory and its lifespan.

``create_app`` wires settings, engine (from the factory unless injected),
metrics (a fresh registry per app), limiters, readiness, middleware and
routes; the lifespan starts warm-up (doctor checks, model load) in the
background and closes the engine on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from zopilot_worker.metrics import WorkerMetrics
from zopilot_worker.pipeline import Engine, create_engine
from zopilot_worker.service.auth import OPEN_PATHS, BearerAuthMiddleware
from zopilot_worker.service.context import RequestContextMiddleware
from zopilot_worker.service.deadlines import DeadlineMiddleware
from zopilot_worker.service.error_handling import error_response, install_exception_handlers
from zopilot_worker.service.limits import EndpointLimiter, UploadLimiter
from zopilot_worker.service.readiness import (
    DoctorCheck,
    Readiness,
    run_doctor_isolated,
    warm_up,
)
from zopilot_worker.service.routes import classify, extract, probes
from zopilot_worker.service.schemas import OPENAPI_EXTRA_SCHEMAS
from zopilot_worker.service.state import ServiceState
from zopilot_worker.settings import WorkerSettings

TITLE = "ZopilotGPU worker"
VERSION = "0.1.0"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.zopilot
    warm = asyncio.create_task(
        warm_up(
            state.readiness,
            state.engine,
            state.metrics,
            doctor=state.doctor,
            load_model=state.settings.load_model_on_start,
            retry_after_s=state.settings.retry_after_s,
        ),
        name="zopilot-warm-up",
    )
    try:
        yield
    finally:
        warm.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warm
        await anyio.to_thread.run_sync(state.engine.close)


def create_app(
    settings: WorkerSettings | None = None,
    *,
    engine: Engine | None = None,
    metrics: WorkerMetrics | None = None,
    doctor: DoctorCheck | None = run_doctor_isolated,
) -> FastAPI:
    """Build the service. ``doctor`` is ignored when settings.run_doctor_on_start is off."""
    settings = settings or WorkerSettings()
    metrics = metrics or WorkerMetrics()
    engine = engine or create_engine(settings, metrics=metrics)
    state = ServiceState(
        settings=settings,
        engine=engine,
        metrics=metrics,
        extract_limiter=EndpointLimiter(
            "/extract",
            concurrency=settings.extract_concurrency,
            queue_size=settings.extract_queue_size,
            retry_after_s=settings.retry_after_s,
            metrics=metrics,
        ),
        classify_limiter=EndpointLimiter(
            "/classify",
            concurrency=settings.classify_concurrency,
            queue_size=settings.classify_queue_size,
            retry_after_s=settings.retry_after_s,
            metrics=metrics,
        ),
        upload_limiter=UploadLimiter(
            settings.max_concurrent_uploads, retry_after_s=settings.retry_after_s, metrics=metrics
        ),
        readiness=Readiness(),
        doctor=doctor if settings.run_doctor_on_start else None,
    )
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description="Document extraction (docstrange) and classification (Mixtral family) "
        "on a GPU worker. Every error is JSON `{error: {code, message}, request_id}`.",
        lifespan=lifespan,
    )
    app.state.zopilot = state
    install_exception_handlers(app, retry_after_s=settings.retry_after_s)
    on_error = functools.partial(error_response, retry_after_s=settings.retry_after_s)
    # Added innermost first: request context (ids, metrics) -> deadlines -> auth -> routes.
    if settings.api_token is not None:
        app.add_middleware(
            BearerAuthMiddleware, token=settings.api_token.get_secret_value(), on_error=on_error
        )
    app.add_middleware(
        DeadlineMiddleware,
        body_timeout_s=settings.body_timeout_s,
        request_timeout_s=settings.request_timeout_s,
        on_error=on_error,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics, on_error=on_error)
    for module in (probes, extract, classify):
        app.include_router(module.router)
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the multipart/JSON body schemas the routes reference."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in OPENAPI_EXTRA_SCHEMAS:
            components[model.__name__] = model.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
        if app.state.zopilot.settings.api_token is not None:
            _declare_bearer_auth(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _declare_bearer_auth(schema: dict[str, Any]) -> None:
    """State in the document which operations need the bearer token, and their 401."""
    schema["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    for path, item in schema["paths"].items():
        if path in OPEN_PATHS:
            continue
        for operation in item.values():
            operation["security"] = [{"bearerAuth": []}]
            operation.setdefault("responses", {})["401"] = {
                "description": "No or a wrong bearer token (unauthorized); see WWW-Authenticate.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                },
            }
