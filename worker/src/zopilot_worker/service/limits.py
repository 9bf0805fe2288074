"""Per-endpoint concurrency limit with a bounded wait queue.

Admission and execution are two steps. :meth:`EndpointLimiter.admit` is
decided at once, before the request body is read: when ``concurrency +
queue_size`` requests are already admitted it raises
:class:`~zopilot_worker.errors.Overloaded` (503 + Retry-After), so a full
worker never buffers another 50 MiB upload. An admitted request then reads its
body and waits in :meth:`EndpointLimiter.slot` for one of ``concurrency``
slots, inside which its blocking work runs in this endpoint's own threads
(:meth:`EndpointLimiter.run`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from zopilot_worker.errors import Overloaded
from zopilot_worker.metrics import WorkerMetrics

P = ParamSpec("P")
T = TypeVar("T")


class EndpointLimiter:
    """At most ``concurrency`` running and ``queue_size`` waiting; the rest refused at once."""

    def __init__(
        self,
        endpoint: str,
        *,
        concurrency: int,
        queue_size: int,
        retry_after_s: int,
        metrics: WorkerMetrics,
    ) -> None:
        if concurrency < 1 or queue_size < 0:
            raise ValueError("concurrency must be >= 1 and queue_size >= 0")
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.retry_after_s = retry_after_s
        self._metrics = metrics
        self._admitted = 0
        self._running = 0
        # Created lazily: asyncio and anyio primitives belong to the running loop.
        self._slots: asyncio.Semaphore | None = None
        self._threads: CapacityLimiter | None = None
        self._publish()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._admitted - self._running

    def _publish(self) -> None:
        self._metrics.in_flight.labels(endpoint=self.endpoint).set(self._running)
        self._metrics.queue_depth.labels(endpoint=self.endpoint).set(self.waiting)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place (running or queued) for the duration of the request."""
        if self._admitted >= self.concurrency + self.queue_size:
            self._metrics.rejected.labels(endpoint=self.endpoint, reason="overloaded").inc()
            raise Overloaded(
                f"{self.endpoint} is busy: {self.concurrency} running and {self.queue_size} "
                f"waiting; retry in {self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            )
        self._admitted += 1
        self._publish()
        try:
            yield
        finally:
            self._admitted -= 1
            self._publish()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait (FIFO) for one of ``concurrency`` slots."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            self._running += 1
            self._publish()
            try:
                yield
            finally:
                self._running -= 1
                self._publish()

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``func`` in this endpoint's threads, inside a slot.

        Not abandoned on cancellation: if the client goes away the slot stays
        taken until the thread really finishes, so the limit holds for the
        work actually running, not for the requests still connected.
        """
        if self._threads is None:
            self._threads = CapacityLimiter(self.concurrency)
        async with self.slot():
            return await anyio.to_thread.run_sync(
                functools.partial(func, *args, **kwargs), limiter=self._threads
            )
