"""Documents are parsed in a pool of child processes, never in the service's process.

Why: parsers run on untrusted bytes. PDFium is C code that can crash; pure
Python parsers (openpyxl, python-docx, markdownify, pandas) can be driven into
pathological time or memory. In the service's process either one would take
``/health`` and every other request down with it. Here each document is
parsed by one child process (:class:`ParsingPool`), which gets

* a wall-clock limit per document (``timeout_s``): past it the child is killed
  and the caller gets :class:`~zopilot_worker.errors.ParsingTimeout`;
* an address-space limit (``RLIMIT_AS``, ``memory_limit_mib``), set inside the
  child: an allocation past it raises ``MemoryError`` there
  (:class:`~zopilot_worker.errors.ParsingMemoryExceeded`) or crashes C code;
* a crash (a signal, any exit) ends only that child:
  :class:`~zopilot_worker.errors.ParserCrashed`.

A child that died or was killed is replaced at once, so the pool keeps its
size. Each child is single-threaded and owns its own PDFium, so N children give
N documents real parallelism (PDFium is not thread-safe: in one process every
call takes one lock, see ``pdf.py``).

Children are forked from a ``forkserver``, never from the service itself:
torch and uvicorn run threads there, and ``fork`` of a threaded process can
deadlock the child. The fork server is a fresh interpreter that imports the
extraction code and its parsers once (``child_preload``), so starting or
replacing a child costs a fork, not an interpreter start and seconds of
imports. Children start lazily, on the first document (or
:meth:`ParsingPool.warm`), so ``/health`` never waits for them.

OCR stays in the service's process (one GPU model, loaded once): a child that
finds pages needing OCR asks its parent for the engine and sends it page
images; the time the parent spends on OCR is not charged to the child's limit.

Protocol over one duplex pipe per child (pickled tuples)::

    parent → child  ("extract", data, filename, content_type, ocr) | ("stop",)
    child → parent  ("done", ExtractedDocument)
                    ("failed", WorkerError class, public message, detail, attributes)
                    ("ocr_engine",)          → parent answers (engine name | None, reason)
                    ("ocr", PIL image)       → parent answers ("ok", text) | ("error", repr)
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import queue
import resource
import signal
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from zopilot_worker.errors import (
    ParserCrashed,
    ParsingMemoryExceeded,
    ParsingTimeout,
    ParsingUnavailable,
    WorkerError,
)
from zopilot_worker.extract.extractor import Extractor, OcrLoader, memory_exceeded
from zopilot_worker.extract.schema import ExtractedDocument, ExtractSettings, OcrMode

log = logging.getLogger(__name__)

MiB = 1024 * 1024

# Native libraries that start thread pools (OpenBLAS/MKL via pandas' NumPy) stay at
# one thread per child: the pool's processes are the parallelism.
_SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# How long a stopping child may take to leave on its own before it is killed.
_STOP_GRACE_S = 2.0
# How long a new child may take to report ready. The first one waits for the fork
# server's imports (seconds; a minute on a saturated node), later ones for a fork.
_START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class PoolLimits:
    """Size and per-document limits of a :class:`ParsingPool`.

    processes: child processes, i.e. documents parsed at once.
    timeout_s: wall-clock seconds one document may spend in its child (OCR in
        the parent not counted).
    memory_limit_mib: address-space limit (``RLIMIT_AS``) of each child in MiB;
        0 leaves it unlimited.
    """

    processes: int
    timeout_s: float
    memory_limit_mib: int


def default_processes() -> int:
    """One child per CPU this process may run on (cpuset-aware, unlike ``os.cpu_count``)."""
    return max(1, len(os.sched_getaffinity(0)))


# --------------------------------------------------------------------------- child side


class _ParentOcr:
    """The OCR engine as seen from a child: page images go to the parent."""

    def __init__(self, conn: Connection, name: str) -> None:
        self._conn = conn
        self.name = name

    def ocr_image(self, image: Any) -> str:
        self._conn.send(("ocr", image))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"OCR in the service process failed: {value}")
        return str(value)


def _child_main(
    conn: Connection, settings: ExtractSettings, memory_limit_bytes: int, fault_hook: str | None
) -> None:
    """Body of a parsing process: extract documents sent by the parent until told to stop."""
    for variable in _SINGLE_THREAD_ENV:
        os.environ[variable] = "1"
    # Ctrl-C in a terminal reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    hook: Callable[[str], None] | None = None
    if fault_hook is not None:
        module, _, function = fault_hook.partition(":")
        hook = getattr(importlib.import_module(module), function)

    def ask_parent_for_ocr() -> tuple[_ParentOcr | None, str]:
        conn.send(("ocr_engine",))
        name, reason = conn.recv()
        return (_ParentOcr(conn, name) if name else None), reason

    extractor = Extractor(settings, ocr_loader=ask_parent_for_ocr)
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message[0] != "extract":
            return
        _, data, filename, content_type, ocr = message
        del message
        try:
            if hook is not None:
                hook(filename)
            reply: tuple[Any, ...] = (
                "done",
                extractor.extract(data, filename, content_type, ocr=ocr),
            )
        except WorkerError as exc:
            reply = ("failed", type(exc), exc.public_message, exc.detail, _attributes(exc))
        except MemoryError:
            reply = _memory_reply(filename)
        del data
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(_memory_reply(filename))
        if reply[0] == "failed" and reply[1] is ParsingMemoryExceeded:
            return  # a heap that hit its limit is not worth keeping: the parent replaces us


def _memory_reply(filename: str) -> tuple[Any, ...]:
    error = memory_exceeded(filename)
    return ("failed", type(error), error.public_message, error.detail, {})


def _attributes(exc: WorkerError) -> dict[str, Any]:
    skip = {"public_message", "detail"}
    return {k: v for k, v in vars(exc).items() if k not in skip}


def _rebuild(
    cls: type[WorkerError], message: str, detail: str | None, attrs: dict[str, Any]
) -> WorkerError:
    """The child's error, rebuilt without calling a subclass ``__init__`` (signatures vary)."""
    exc = cls.__new__(cls)
    WorkerError.__init__(exc, message, detail=detail)
    exc.__dict__.update(attrs)
    return exc


# --------------------------------------------------------------------------- parent side


class _Child:
    """One parsing process and the parent's end of its pipe."""

    def __init__(
        self,
        context: multiprocessing.context.ForkServerContext,
        settings: ExtractSettings,
        memory_limit_bytes: int,
        fault_hook: str | None,
    ) -> None:
        self.stopped = False
        self.ready = False
        self.in_sync = True  # False while a document is out: its answer not yet read
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_child_main,
            args=(child_conn, settings, memory_limit_bytes, fault_hook),
            name="zopilot-parse",
            daemon=True,
        )
        self.process.start()
        child_conn.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return not self.stopped and self.process.is_alive()

    def stop(self, *, kill: bool) -> None:
        """End the process (politely unless ``kill``) and reap it; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        if not kill:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("stop",))
            self.process.join(_STOP_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()
        self.process.close()

    def wait_ready(self) -> None:
        """Block until the child reports ready; ParsingUnavailable if it does not."""
        if self.ready:
            return
        try:
            if self.conn.poll(_START_TIMEOUT_S) and self.conn.recv() == ("ready",):
                self.ready = True
                return
            why = f"not ready after {_START_TIMEOUT_S:g} s"
        except (EOFError, OSError, ValueError):  # ValueError: stopped meanwhile (pool closed)
            why = "stopped" if self.stopped else self.exit_description()
        raise ParsingUnavailable(
            "The worker could not start a document parser right now; retry shortly.",
            detail=f"parsing process {self.pid}: {why}",
        )

    def exit_description(self) -> str:
        """How the process ended, after it ended: "signal SIGSEGV" or "exit code 3"."""
        self.process.join(_STOP_GRACE_S)
        code = self.process.exitcode
        if code is None:
            return "no exit"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"signal {signal.Signals(-code).name}"
            return f"signal {-code}"
        return f"exit code {code}"


class ParsingPool:
    """Parses documents in child processes; blocking and thread-safe.

    ``extract`` waits for a free child (callers bound their own concurrency:
    the service's limiter, the job runner's threads), hands it the document,
    and returns its ``ExtractedDocument`` or raises a ``WorkerError``: the
    extractor's own, or one of the limits above.
    """

    def __init__(
        self,
        settings: ExtractSettings,
        limits: PoolLimits,
        *,
        ocr_loader: OcrLoader | None = None,
        fault_hook: str | None = None,
    ) -> None:
        """``ocr_loader``: the parent's OCR engine (None: OCR unavailable).

        ``fault_hook``: ``"module:function"`` a child calls with each file name
        before extracting it; tests use it to make a child crash or stall.
        There is no way to set it from the environment or a request.
        """
        if limits.processes < 1:
            raise ValueError("a parsing pool needs at least one process")
        self.settings = settings
        self.limits = limits
        self._ocr_loader = ocr_loader
        self._fault_hook = fault_hook
        self._context = multiprocessing.get_context("forkserver")
        # Effective only where this process starts the fork server; harmless otherwise.
        self._context.set_forkserver_preload(["zopilot_worker.extract.child_preload"])
        self._memory_limit = limits.memory_limit_mib * MiB
        # Free slots: a started child, or None for one not started (yet, or again).
        self._idle: queue.SimpleQueue[_Child | None] = queue.SimpleQueue()
        for _ in range(limits.processes):
            self._idle.put(None)
        self._children: set[_Child] = set()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_all, self._children, self._lock)

    # -- lifecycle ------------------------------------------------------------

    def warm(self) -> None:
        """Start every child now rather than on first use (returns once they are started)."""
        slots = [self._idle.get() for _ in range(self.limits.processes)]
        try:
            started = [s if s is not None and s.alive() else self._start() for s in slots]
            slots = list(started)
            for child in started:
                child.wait_ready()
        finally:
            for slot in slots:
                self._idle.put(slot)

    def close(self) -> None:
        """Stop every child. The pool stays usable: a later ``extract`` starts new ones."""
        _stop_all(self._children, self._lock)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live children (for tests and diagnostics)."""
        with self._lock:
            return sorted(c.pid for c in self._children if c.pid is not None and c.alive())

    def _start(self) -> _Child:
        try:
            child = _Child(self._context, self.settings, self._memory_limit, self._fault_hook)
        except OSError as exc:
            log.error("could not start a parsing process: %r", exc)
            raise ParsingUnavailable(
                "The worker could not start a document parser right now; retry shortly.",
                detail=repr(exc),
            ) from exc
        with self._lock:
            self._children.add(child)
        return child

    def _discard(self, child: _Child, *, kill: bool) -> None:
        with self._lock:
            self._children.discard(child)
        child.stop(kill=kill)

    # -- work -----------------------------------------------------------------

    def extract(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = None,
        *,
        ocr: OcrMode = "auto",
    ) -> ExtractedDocument:
        slot = self._idle.get()
        try:
            if slot is None or not slot.alive():
                if slot is not None:
                    self._discard(slot, kill=True)
                slot = None
                slot = self._start()
            child = slot
            try:
                child.wait_ready()  # not part of the document's time limit
            except ParsingUnavailable:
                slot = None
                self._discard(child, kill=True)
                raise
            return self._run(child, data, filename, content_type, ocr)
        finally:
            if slot is not None and not slot.in_sync:
                # Killed, crashed, out of memory, or interrupted mid-conversation: a child
                # whose state is unknown is never reused. Replaced at once, so the pool
                # keeps its size (or lazily, on next use, if that fails now).
                self._discard(slot, kill=True)
                slot = self._try_start()
            self._idle.put(slot)

    def _try_start(self) -> _Child | None:
        try:
            return self._start()
        except ParsingUnavailable:
            return None

    def _run(
        self, child: _Child, data: bytes, filename: str, content_type: str | None, ocr: OcrMode
    ) -> ExtractedDocument:
        conn = child.conn
        timeout = self.limits.timeout_s
        deadline = time.monotonic() + timeout
        child.in_sync = False  # until its answer to this document has arrived
        try:
            conn.send(("extract", data, filename, content_type, ocr))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not conn.poll(remaining):
                    log.warning(
                        "parsing %r passed %.0f s; killing pid %s", filename, timeout, child.pid
                    )
                    raise ParsingTimeout(
                        f"{filename!r} took longer than {timeout:g} s to parse and was stopped; "
                        "it is too large or too complex. Split it into smaller documents.",
                        detail=f"pid {child.pid}",
                    )
                message = conn.recv()
                kind = message[0]
                if kind == "done":
                    child.in_sync = True
                    document: ExtractedDocument = message[1]
                    return document
                if kind == "failed":
                    # A child that ran out of memory leaves by itself: replace it.
                    child.in_sync = message[1] is not ParsingMemoryExceeded
                    raise _rebuild(*message[1:])
                started = time.monotonic()
                conn.send(self._serve_ocr(message))
                deadline += time.monotonic() - started  # OCR time is the parent's, not the child's
        except (EOFError, OSError) as exc:
            how = child.exit_description()
            log.error("parsing process %s died on %r (%s)", child.pid, filename, how)
            raise ParserCrashed(
                f"The parser crashed on {filename!r} ({how}); the document is damaged or "
                "hostile, or needs more memory than a document is allowed. "
                "Check that it opens elsewhere, or split it.",
                detail=f"pid {child.pid}: {exc!r}",
            ) from exc

    def _serve_ocr(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        engine, reason = self._ocr_loader() if self._ocr_loader else (None, "OCR is not configured")
        if message[0] == "ocr_engine":
            return (engine.name if engine is not None else None, reason)
        if message[0] == "ocr" and engine is not None:
            try:
                return ("ok", engine.ocr_image(message[1]))
            except Exception as exc:  # reported per page by the child, like in-process OCR
                log.exception("OCR of a page image failed")
                return ("error", repr(exc))
        return ("error", f"unexpected request {message[0]!r}")


def _stop_all(children: set[_Child], lock: threading.Lock) -> None:
    with lock:
        stopping = list(children)
        children.clear()
    for child in stopping:
        with contextlib.suppress(Exception):
            child.stop(kill=False)
