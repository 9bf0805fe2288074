"""The one place that turns an exception into the HTTP error answer.

Every error body is ``{"error": {"code", "message"}, "request_id"}``.
``WorkerError`` subclasses carry their status and public message; FastAPI's
and Starlette's own errors (404, 405, validation) are mapped onto the same
shape; anything else is a 500 with a generic message, its traceback logged
with the request id and never sent to the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from zopilot_worker.errors import (
    ClientDisconnected,
    GPUMemoryUnavailable,
    NotReady,
    Overloaded,
    Unauthorized,
    WorkerError,
)
from zopilot_worker.service.context import current_request_id

log = logging.getLogger(__name__)

GENERIC_500 = "internal error; the worker logged the details under this request id"

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "document_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


class UnsupportedMediaType(WorkerError):
    """The request body's Content-Type is not one this endpoint reads."""

    code = "unsupported_media_type"
    http_status = 415


def error_response(exc: Exception, *, retry_after_s: int) -> JSONResponse:
    """Map any exception to the error answer; ``retry_after_s`` is used for retriable 503s."""
    request_id = current_request_id()
    headers: dict[str, str] = {}
    if isinstance(exc, ClientDisconnect):
        # The client hung up mid-request: nothing failed here and nobody reads
        # the answer. Counted (status 499) and logged in one line, no traceback.
        exc = ClientDisconnected("the client closed the connection before the answer")
    if isinstance(exc, WorkerError):
        status, code, message = exc.http_status, exc.code, exc.public_message
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = str(exc.retry_after_s)
        elif isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = exc.www_authenticate
        elif isinstance(exc, GPUMemoryUnavailable | NotReady) or (exc.retriable and status == 503):
            headers["Retry-After"] = str(retry_after_s)
        level = logging.ERROR if status >= 500 and not exc.retriable else logging.INFO
        log.log(level, "%s %s: %s (%s)", status, code, message, exc.detail or "no detail")
    elif isinstance(exc, RequestValidationError):
        status, code = 422, "invalid_request"
        message = "; ".join(_describe(e) for e in exc.errors()) or "invalid request"
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status, "http_error")
        message = str(exc.detail)
        headers.update(exc.headers or {})
    else:
        status, code, message = 500, "internal_error", GENERIC_500
        log.error("unexpected error (request %s)", request_id, exc_info=exc)
    body = {"error": {"code": code, "message": message}, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


def _describe(error: object) -> str:
    if not isinstance(error, dict):
        return str(error)
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{location}: {error.get('msg', 'invalid')}" if location else str(error.get("msg"))


def install_exception_handlers(app: FastAPI, *, retry_after_s: int) -> None:
    """Register :func:`error_response` for the exceptions FastAPI handles itself."""

    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, retry_after_s=retry_after_s)

    for exc_type in (WorkerError, RequestValidationError, StarletteHTTPException, ClientDisconnect):
        app.add_exception_handler(exc_type, handle)
