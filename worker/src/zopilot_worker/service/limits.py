"""Per-endpoint concurrency limit with a bounded wait queue, and the upload limit.

A request goes through three steps. It reads its body first, holding one of
:class:`UploadLimiter`'s places (bounded; the body deadline of
``service.deadlines`` bounds how long), so slow or trickling uploads never
occupy an endpoint's places. :meth:`EndpointLimiter.admit` is then decided at
once: when ``concurrency + queue_size`` requests are already admitted it
raises :class:`~zopilot_worker.errors.Overloaded` (503 + Retry-After). An
admitted request waits (FIFO) for one of ``concurrency`` slots, inside which
its blocking work runs in this endpoint's own threads
(:meth:`EndpointLimiter.run`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from zopilot_worker.errors import Overloaded
from zopilot_worker.metrics import WorkerMetrics

P = ParamSpec("P")
T = TypeVar("T")


class UploadLimiter:
    """At most ``limit`` request bodies being read at once; the rest refused at once."""

    def __init__(self, limit: int, *, retry_after_s: int, metrics: WorkerMetrics) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._metrics = metrics
        self.reading_now = 0

    @contextmanager
    def reading(self, endpoint: str) -> Iterator[None]:
        if self.reading_now >= self.limit:
            self._metrics.rejected.labels(endpoint=endpoint, reason="uploads").inc()
            raise Overloaded(
                f"{self.limit} uploads are being received already; retry in {self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            )
        self.reading_now += 1
        try:
            yield
        finally:
            self.reading_now -= 1


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
        self._waiting = 0
        # Work whose request gave up (deadline) while its thread still runs.
        self._orphaned = 0
        # Created lazily: asyncio and anyio primitives belong to the running loop.
        self._slots: asyncio.Semaphore | None = None
        self._threads: CapacityLimiter | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._publish()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def _publish(self) -> None:
        self._metrics.in_flight.labels(endpoint=self.endpoint).set(self._running)
        self._metrics.queue_depth.labels(endpoint=self.endpoint).set(self._waiting)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place (running or queued) for the duration of the request."""
        if self._admitted + self._orphaned >= self.concurrency + self.queue_size:
            self._metrics.rejected.labels(endpoint=self.endpoint, reason="overloaded").inc()
            raise Overloaded(
                f"{self.endpoint} is busy: {self.concurrency} running and {self.queue_size} "
                f"waiting; retry in {self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def _acquire(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        self._waiting += 1
        self._publish()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self._publish()
        return self._slots

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``func`` in this endpoint's threads, inside a slot.

        Waiting for the slot can be cancelled (deadline). Running work cannot
        be stopped (a thread), so it is not abandoned: it keeps its slot until
        the thread really finishes, also when the request gave up, and the
        limit holds for the work actually running.
        """
        if self._threads is None:
            self._threads = CapacityLimiter(self.concurrency)
        slots = await self._acquire()
        call = functools.partial(func, *args, **kwargs)
        task = asyncio.ensure_future(self._work(slots, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self._orphaned += 1
                task.add_done_callback(self._orphan_done)
            raise

    async def _work(self, slots: asyncio.Semaphore, call: Callable[[], T]) -> T:
        with self._holding(slots):
            return await anyio.to_thread.run_sync(call, limiter=self._threads)

    @contextmanager
    def _holding(self, slots: asyncio.Semaphore) -> Iterator[None]:
        self._running += 1
        self._publish()
        try:
            yield
        finally:
            self._running -= 1
            self._publish()
            slots.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait (FIFO) for one of ``concurrency`` slots and hold it for the block."""
        slots = await self._acquire()
        with self._holding(slots):
            yield

    def _orphan_done(self, task: asyncio.Task[object]) -> None:
        self._orphaned -= 1
        if not task.cancelled():
            task.exception()  # retrieved: nobody awaits it any more
