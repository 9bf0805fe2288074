"""Running the app with uvicorn: in the foreground (``serve``) or in a background thread.

``BackgroundServer`` binds its socket before it starts (port 0 picks a free
one, without the find-then-bind race), runs uvicorn in a daemon thread and
waits until uvicorn reports it is serving. The job runner uses it for
/metrics and /health while it works; tests use it to run the real server.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from zopilot_worker.settings import WorkerSettings


def serve(settings: WorkerSettings) -> int:
    """Run the HTTP service until SIGTERM/SIGINT; returns the process exit code."""
    from zopilot_worker.service.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the process's logging setup (request ids in every line)
        log_level=settings.log_level,
        # Kubernetes sends SIGTERM, then SIGKILL after 30 s by default: finish in-flight work.
        timeout_graceful_shutdown=25,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


class BackgroundServer:
    """uvicorn serving ``app`` on ``host:port`` in a daemon thread."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
        )
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, log_level=log_level, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        # uvicorn sets `started` once the lifespan startup ran and the socket listens.
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn exited during startup; see the log above")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start within {timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
