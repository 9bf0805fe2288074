"""Through the real HTTP service: a crashing or stalling parser costs one request, not the worker.

The engine is the production ``DocumentEngine`` with a parsing pool whose
children crash or stall on request (``zopilot_worker.testing.parser_faults``,
chosen by the upload's file name). uvicorn serves it on 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from zopilot_worker.errors import ModelNotFound
from zopilot_worker.extract import ExtractSettings
from zopilot_worker.extract.isolation import ParsingPool, PoolLimits
from zopilot_worker.pipeline import DocumentEngine
from zopilot_worker.service import BackgroundServer, create_app
from zopilot_worker.settings import WorkerSettings
from zopilot_worker.testing.documents import make_text_pdf

PDF = make_text_pdf(["Invoice INV-7: amount due 10 EUR"])
STALL_TIMEOUT_S = 3.0


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback only (this module talks HTTP to its own server); anything else is refused."""
    connect = socket.socket.connect

    def loopback_only(self: socket.socket, address: Any, *args: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if self.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost"):
            return connect(self, address, *args)
        raise AssertionError(f"network access attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = WorkerSettings(
        model_root=tmp_path_factory.mktemp("models"),
        classify_model="tiny-mixtral",
        quantization="none",
        load_model_on_start=False,
        run_doctor_on_start=False,
    )
    pool = ParsingPool(
        ExtractSettings(),
        PoolLimits(processes=2, timeout_s=STALL_TIMEOUT_S, memory_limit_mib=3072),
        fault_hook="zopilot_worker.testing.parser_faults:by_name",
    )
    engine = DocumentEngine(settings, parsing_pool=pool)
    server = BackgroundServer(create_app(settings, engine=engine, doctor=None)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            yield http
    finally:
        server.stop()  # the lifespan closes the engine, which stops the children
        assert pool.pids == []


def _extract(client: httpx.Client, name: str, data: bytes = PDF) -> httpx.Response:
    return client.post("/extract", files={"file": (name, data, "application/pdf")})


def _still_serving(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ok = _extract(client, "ok.pdf")
    assert ok.status_code == 200, ok.text
    assert "INV-7" in ok.json()["markdown"]


@pytest.mark.parametrize(("name", "how"), [("crash.pdf", "SIGSEGV"), ("abort.pdf", "SIGABRT")])
def test_a_parser_crash_is_a_422_and_the_service_lives(
    client: httpx.Client, name: str, how: str
) -> None:
    _still_serving(client)
    response = _extract(client, name)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "parser_crashed"
    assert how in error["message"] and name in error["message"]
    _still_serving(client)


def test_a_stalled_parser_is_a_422_and_health_answers_meanwhile(client: httpx.Client) -> None:
    with ThreadPoolExecutor(1) as thread:
        stalled = thread.submit(_extract, client, "stall.pdf")
        # While one child is stuck, the service answers probes and other documents.
        _still_serving(client)
        response = stalled.result()
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "parsing_timeout"
    assert f"{STALL_TIMEOUT_S:g} s" in error["message"]
    _still_serving(client)


def test_a_crash_fails_one_document_of_a_batch(tmp_path: Path) -> None:
    """The job runner calls this same ``DocumentEngine.extract`` per document and records a
    ``WorkerError`` as that document's error: a crash is one document's error, the next
    document extracts."""
    pool = ParsingPool(
        ExtractSettings(),
        PoolLimits(processes=1, timeout_s=60, memory_limit_mib=3072),
        fault_hook="zopilot_worker.testing.parser_faults:by_name",
    )
    engine = DocumentEngine(WorkerSettings(model_root=tmp_path), parsing_pool=pool)
    try:
        results: dict[str, Any] = {}
        for name in ("crash.pdf", "ok.pdf"):
            try:
                results[name] = engine.extract(PDF, name).pages
            except Exception as exc:
                results[name] = exc
        assert getattr(results["crash.pdf"], "code", None) == "parser_crashed"
        assert results["ok.pdf"] == 1
    finally:
        engine.close()
    assert pool.pids == []


def test_load_models_starts_the_parsers_in_the_background(tmp_path: Path) -> None:
    pool = ParsingPool(ExtractSettings(), PoolLimits(processes=2, timeout_s=60, memory_limit_mib=0))
    engine = DocumentEngine(WorkerSettings(model_root=tmp_path), parsing_pool=pool)
    try:
        assert pool.pids == []  # an engine alone starts nothing
        with pytest.raises(ModelNotFound):  # no model here; the parsers start anyway
            engine.load_models()
        deadline = time.monotonic() + 300
        while len(pool.pids) < 2:
            assert time.monotonic() < deadline, "the parsing processes did not start"
            time.sleep(0.05)
    finally:
        engine.close()
    assert pool.pids == []
