"""Fixtures for the job runner tests: the tiny model, a loopback file server, spec builders."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from zopilot_worker.settings import WorkerSettings

LABELS = ["invoice", "receipt", "contract", "other"]


class FileServer:
    """A loopback HTTP(S) server: ``/files/<name>`` from ``directory``;
    ``/status/<code>/<name>`` answers that status; ``/redirect?to=<url>`` answers 302 to
    it; ``/trickle/<n>`` sends n bytes, one every ``trickle_s`` seconds; paths in
    ``failing`` answer 503. Every request
    path is recorded in ``requests``, its Host header in ``hosts``."""

    def __init__(
        self,
        directory: Path,
        *,
        ssl_context: ssl.SSLContext | None = None,
        trickle_s: float = 0.2,
    ) -> None:
        self.directory = directory
        self.requests: list[str] = []
        self.hosts: list[str] = []
        self.failing: set[str] = set()  # paths that answer 503 for now
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.hosts.append(self.headers.get("Host", ""))
                query = parse_qs(urlsplit(self.path).query)
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if self.path in server.failing:
                    self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)
                    return
                if parts[0] == "redirect":
                    self.send_response(HTTPStatus.FOUND)
                    self.send_header("Location", query["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parts[0] == "trickle" and len(parts) == 2:
                    self.send_response(HTTPStatus.OK)
                    self.send_header("Content-Length", parts[1])
                    self.end_headers()
                    stop = threading.Event()
                    for _ in range(int(parts[1])):
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:  # the client gave up: what the test wants
                            return
                        stop.wait(trickle_s)  # the pace of a hostile slow server
                    return
                if parts[0] == "files" and len(parts) == 2:
                    path = server.directory / parts[1]
                    if path.is_file():
                        body = path.read_bytes()
                        self.send_response(HTTPStatus.OK)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                if parts[0] == "status" and len(parts) >= 2:
                    self.send_error(int(parts[1]))
                    return
                self.send_error(HTTPStatus.NOT_FOUND)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    @property
    def serving(self) -> bool:
        return self._thread.is_alive()

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    directory = tmp_path / "served"
    directory.mkdir()
    with FileServer(directory) as server:
        yield server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., FileServer]]:
    """More servers, e.g. over TLS or trickling; each is shut down after the test."""
    servers: list[FileServer] = []
    with contextlib.ExitStack() as stack:

        def make(**options: Any) -> FileServer:
            directory = tmp_path / f"served-{len(servers)}"
            directory.mkdir()
            servers.append(stack.enter_context(FileServer(directory, **options)))
            return servers[-1]

        yield make
    assert all(not s.serving for s in servers), "a test server is still running"


@pytest.fixture
def job_settings(tmp_path: Path) -> Callable[..., WorkerSettings]:
    """Settings for a job in ``tmp_path``: mounts under tmp, no metrics port, fast retries."""

    def make(**overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = {
            "model_root": tmp_path / "no-models",
            "quantization": "none",
            "device": "cpu",
            "volume_root": tmp_path / "volumes",
            "configmap_root": tmp_path / "configmaps",
            "termination_log": tmp_path / "termination-log",
            "metrics_port": 0,
            "fetch_attempts": 2,
            "fetch_backoff_s": 0.0,
            "fetch_timeout_s": 10.0,
            # The test servers listen on loopback over plain http.
            "fetch_allow_http": True,
            "fetch_allow_private_networks": True,
        }
        values.update(overrides)
        return WorkerSettings(**values)

    return make


def make_spec(
    documents: list[dict[str, Any]],
    *,
    tasks: tuple[str, ...] = ("extract", "classify"),
    labels: list[str] | None = None,
    model: str = "tiny-mixtral",
    output: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A DocumentJob spec as the operator hands it over (camelCase, like the CRD)."""
    spec: dict[str, Any] = {"documents": documents, "tasks": list(tasks)}
    if "classify" in tasks:
        spec["classify"] = {
            "labels": labels or LABELS,
            "model": model,
            "quantization": "none",
        }
    if output is not None:
        spec["output"] = output
    return spec


@pytest.fixture
def spec_file(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(spec: dict[str, Any]) -> Path:
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(spec))
        return path

    return write


def read_results(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def results_reader() -> Callable[[Path], list[dict[str, Any]]]:
    return read_results


@pytest.fixture
def spec_builder() -> Callable[..., dict[str, Any]]:
    return make_spec
