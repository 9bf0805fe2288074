"""Slow and vanishing clients against a real uvicorn server, over real sockets.

Twenty clients trickling their uploads a byte at a time must not take the
places of everyone else: bodies are read before a request takes a place, under
a body deadline that answers 408. A request that outlives the whole-request
deadline gets 504 while its running work keeps its slot. A client that hangs up
is neither a 500 nor a traceback in the log.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families
from zopilot_worker.pipeline import create_engine
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings

pytestmark = pytest.mark.slow

TEXT = b"Invoice 7: amount due 12.50 EUR, payable within 30 days."
BOUNDARY = "zopilot-test-boundary"


def _multipart(data: bytes, filename: str = "doc.txt") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _connect(base_url: str) -> socket.socket:
    parts = urlsplit(base_url)
    return socket.create_connection((parts.hostname, parts.port), timeout=60)


def _headers(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


class Trickler(threading.Thread):
    """Sends a multipart upload one byte per ``interval_s`` until the server answers."""

    def __init__(self, base_url: str, stop: threading.Event, interval_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.stop = stop
        self.interval_s = interval_s
        self.status: int | None = None
        self.sent = 0

    def run(self) -> None:
        body = _multipart(TEXT * 1000)
        with _connect(self.base_url) as sock:
            sock.sendall(_headers("/extract", len(body)))
            while not self.stop.is_set() and self.sent < len(body):
                readable, _, _ = select.select([sock], [], [], self.interval_s)
                if readable:
                    response = sock.recv(65536)
                    self.status = _status(response) if response else None
                    return
                try:
                    sock.sendall(body[self.sent : self.sent + 1])
                except OSError:  # the server answered and closed meanwhile
                    break
                self.sent += 1
            sock.settimeout(60)
            response = sock.recv(65536)
            self.status = _status(response) if response else None


@contextmanager
def _trickling(base_url: str, count: int) -> Iterator[list[Trickler]]:
    stop = threading.Event()
    clients = [Trickler(base_url, stop) for _ in range(count)]
    for client in clients:
        client.start()
    try:
        yield clients
    finally:
        stop.set()
        for client in clients:
            client.join(90)
        assert not any(client.is_alive() for client in clients), "trickling clients left behind"


def _samples(client: Any, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == name
    }


def test_trickling_uploads_do_not_take_the_places_of_others(
    make_settings: Callable[..., WorkerSettings], serve_app: Any, wait_until: Any
) -> None:
    # Every place of /extract (4 running + 16 queued) could be held by 20 slow uploads
    # if bodies were read after admission.
    settings = make_settings(extract_concurrency=4, extract_queue_size=16, body_timeout_s=20)
    app = create_app(settings, doctor=None)
    uploads = app.state.zopilot.upload_limiter
    with serve_app(app) as client, _trickling(str(client.base_url), 20) as slow:
        wait_until(lambda: uploads.reading_now == 20, what="20 uploads trickling")
        fast = client.post("/extract", files={"file": ("fast.txt", TEXT, "text/plain")})
        assert fast.status_code == 200, fast.text
        assert "Invoice 7" in fast.json()["markdown"]
        # The slow ones were still being received while the fast one was served.
        assert uploads.reading_now == 20
        assert all(s.status is None for s in slow)
        assert app.state.zopilot.extract_limiter.running == 0
        # Then the body deadline cuts every one of them off with 408.
        for s in slow:
            s.join(90)
    assert [s.status for s in slow] == [408] * 20


def test_body_deadline_answers_408_with_a_reason(
    make_settings: Callable[..., WorkerSettings], serve_app: Any
) -> None:
    app = create_app(make_settings(body_timeout_s=1), doctor=None)
    with serve_app(app) as client, _connect(str(client.base_url)) as sock:
        body = _multipart(TEXT)
        sock.sendall(_headers("/extract", len(body)) + body[:10])  # ...and then nothing
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
        assert _status(response) == 408
        assert b"request_body_timeout" in response
        assert b"ZOPILOT_WORKER_BODY_TIMEOUT_S" in response


class HeldEngine:
    """The real engine; ``extract`` first waits for ``release`` (to hold work "running")."""

    def __init__(self, settings: WorkerSettings, release: threading.Event) -> None:
        self.inner = create_engine(settings)
        self.release = release
        self.started = threading.Event()
        self.model_name = self.inner.model_name
        self.classifier_loaded = False

    def load_models(self) -> None:
        self.inner.load_models()

    def close(self) -> None:
        self.inner.close()

    def extract(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        assert self.release.wait(120), "test never released the held call"
        return self.inner.extract(*args, **kwargs)

    def classify_text(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.classify_text(*args, **kwargs)

    def classify_document(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.classify_document(*args, **kwargs)


def test_request_deadline_answers_504_and_running_work_keeps_its_slot(
    make_settings: Callable[..., WorkerSettings], serve_app: Any, wait_until: Any
) -> None:
    settings = make_settings(request_timeout_s=1, extract_concurrency=1, extract_queue_size=1)
    release = threading.Event()
    engine = HeldEngine(settings, release)
    app = create_app(settings, engine=engine, doctor=None)
    limiter = app.state.zopilot.extract_limiter
    with serve_app(app) as client:
        try:
            response = client.post("/extract", files={"file": ("a.txt", TEXT, "text/plain")})
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "deadline_exceeded"
            # The thread cannot be stopped: it still holds the one slot.
            assert limiter.running == 1
            # A second request waits for that slot and runs out of time in the queue.
            queued = client.post("/extract", files={"file": ("b.txt", TEXT, "text/plain")})
            assert queued.status_code == 504
        finally:
            release.set()
        wait_until(lambda: limiter.running == 0, what="the orphaned work to finish")
        engine.release = threading.Event()
        engine.release.set()
        assert client.post("/extract", files={"file": ("c.txt", TEXT, "text/plain")}).is_success


def _no_tracebacks(records: list[logging.LogRecord]) -> None:
    assert not [r for r in records if r.exc_info], "a traceback was logged"
    assert not [r for r in records if r.levelno >= logging.ERROR], "an error was logged"


def test_client_gone_mid_upload_is_not_an_error(
    make_settings: Callable[..., WorkerSettings],
    serve_app: Any,
    wait_until: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(make_settings(), doctor=None)
    with serve_app(app) as client:
        caplog.set_level(logging.INFO)
        for path in ("/extract", "/classify"):
            body = _multipart(TEXT * 100)
            with _connect(str(client.base_url)) as sock:
                sock.sendall(_headers(path, len(body)) + body[:200])
                wait_until(
                    lambda: app.state.zopilot.upload_limiter.reading_now == 1,
                    what="the upload being read",
                )
            wait_until(
                lambda: app.state.zopilot.upload_limiter.reading_now == 0,
                what="the server to notice the hang-up",
            )
        durations = _samples(client, "zopilot_worker_request_duration_seconds_count")
    statuses = {dict(labels)["status"] for labels in durations}
    assert "500" not in statuses
    assert durations[(("endpoint", "/extract"), ("method", "POST"), ("status", "499"))] == 1
    assert durations[(("endpoint", "/classify"), ("method", "POST"), ("status", "499"))] == 1
    _no_tracebacks(caplog.records)


def test_client_gone_while_its_work_runs_is_not_an_error(
    make_settings: Callable[..., WorkerSettings],
    serve_app: Any,
    wait_until: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()
    release = threading.Event()
    engine = HeldEngine(settings, release)
    app = create_app(settings, engine=engine, doctor=None)
    limiter = app.state.zopilot.extract_limiter
    with serve_app(app) as client, ThreadPoolExecutor(1) as pool:
        caplog.set_level(logging.INFO)
        body = _multipart(TEXT)
        with _connect(str(client.base_url)) as sock:
            sock.sendall(_headers("/extract", len(body)) + body)
            assert engine.started.wait(60)
        # The client is gone; the work finishes and its answer goes nowhere.
        release.set()
        wait_until(lambda: limiter.running == 0, what="the work to finish")
        assert pool.submit(client.get, "/health").result(60).status_code == 200
        durations = _samples(client, "zopilot_worker_request_duration_seconds_count")
    assert "500" not in {dict(labels)["status"] for labels in durations}
    _no_tracebacks(caplog.records)
