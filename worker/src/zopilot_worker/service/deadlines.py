"""Deadlines for slow clients: one for reading the request body, one for the whole request.

A pure ASGI middleware. The body deadline runs from the request's arrival
until its last body chunk: each ``receive()`` waits at most for what is left
of it, then :class:`~zopilot_worker.errors.RequestBodyTimeout` (408) is raised
where the route reads the body. A client trickling a byte now and then is cut
off just like one that stopped. Routes read the body before they take a place
in an endpoint's queue (``service.limits``), so until then a slow client holds
only a connection and one bounded upload place.

The request deadline covers everything up to the answer (body, queue, work).
When it passes before the answer started, the request is cancelled and gets
504 ``deadline_exceeded``; work already running in a thread cannot be
stopped and finishes in the background, keeping its slot (see
``EndpointLimiter.run``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zopilot_worker.errors import RequestBodyTimeout, RequestDeadlineExceeded


class DeadlineMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        body_timeout_s: float,
        request_timeout_s: float,
        on_error: Callable[[Exception], Any],
    ) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.request_timeout_s = request_timeout_s
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_deadline = anyio.current_time() + self.body_timeout_s
        body_done = False
        response_started = False

        async def receive_body() -> Message:
            nonlocal body_done
            if body_done:  # e.g. waiting for http.disconnect after the body
                return await receive()
            with anyio.move_on_after(body_deadline - anyio.current_time()):
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body_done = True
                return message
            raise RequestBodyTimeout(
                f"the request body did not arrive within {self.body_timeout_s:g} s; send it "
                "faster or in a smaller document (limit: ZOPILOT_WORKER_BODY_TIMEOUT_S)"
            )

        async def send_tracked(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        with anyio.move_on_after(self.request_timeout_s) as deadline:
            await self.app(scope, receive_body, send_tracked)
        if deadline.cancelled_caught and not response_started:
            error = RequestDeadlineExceeded(
                f"no answer within {self.request_timeout_s:g} s (queue and work included); "
                "retry later or submit a DocumentJob (limit: ZOPILOT_WORKER_REQUEST_TIMEOUT_S)"
            )
            await self.on_error(error)(scope, receive, send)
