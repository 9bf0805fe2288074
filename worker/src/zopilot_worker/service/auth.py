"""Optional bearer-token authentication (``ZOPILOT_WORKER_API_TOKEN``).

A pure ASGI middleware. When a token is configured every path needs
``Authorization: Bearer <token>`` except :data:`OPEN_PATHS`: the probes, which
kubelets call without credentials, and /metrics, which Prometheus scrapes.
Deny by default, so a route added later is protected without anyone
remembering to. That includes /docs, /redoc and /openapi.json: the API's
description is part of the API (fetch it with the token). The comparison is
``hmac.compare_digest`` over bytes: its time does not depend on how much of a
guess is right. Refusals are 401 with ``WWW-Authenticate: Bearer`` (RFC 6750)
and the usual JSON error body.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from zopilot_worker.errors import Unauthorized

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
SCHEME = b"bearer"


class BearerAuthMiddleware:
    def __init__(self, app: ASGIApp, *, token: str, on_error: Callable[[Exception], Any]) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self.app = app
        self._token = token.encode()
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = bearer_token(scope)
        if presented is not None and hmac.compare_digest(presented, self._token):
            await self.app(scope, receive, send)
            return
        if presented is None:
            error = Unauthorized(
                "this worker needs an API token: send 'Authorization: Bearer <token>' "
                "(the value of ZOPILOT_WORKER_API_TOKEN)",
                www_authenticate='Bearer realm="zopilot-worker"',
            )
        else:
            error = Unauthorized(
                "the bearer token is not this worker's API token",
                www_authenticate='Bearer realm="zopilot-worker", error="invalid_token"',
            )
        await self.on_error(error)(scope, receive, send)


def bearer_token(scope: Scope) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == SCHEME and token.strip():
                return bytes(token.strip())
            return None
    return None
