"""Per-request context: the request id (X-Request-ID in and out) and latency metrics.

``RequestContextMiddleware`` is a pure ASGI middleware (no body buffering,
unlike ``BaseHTTPMiddleware``) around the whole app. It takes a well-formed
incoming X-Request-ID or makes one, exposes it to logs through a contextvar,
echoes it on every answer, times the request into the latency histogram by
route template (never the raw path: that would be unbounded label values),
and turns an exception nothing else handled into the JSON 500.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zopilot_worker.metrics import WorkerMetrics, method_label

REQUEST_ID_HEADER = "x-request-id"
# Accept a caller's id only if it is short and log-safe (no spaces, quotes, newlines).
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

log = logging.getLogger(__name__)


def current_request_id() -> str:
    return _request_id.get()


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: WorkerMetrics,
        on_error: Callable[[Exception], Any],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = _request_id.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if response_started:
                # Too late for an error body; the client sees a cut-off response.
                log.exception("error after the response started")
                raise
            response = self.on_error(exc)
            await response(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.request_duration.labels(
                endpoint=endpoint,
                method=method_label(scope.get("method", "")),
                status=str(status),
            ).observe(time.perf_counter() - started)
            _request_id.reset(token)


def _incoming_request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None
