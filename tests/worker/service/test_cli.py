"""``zopilot-worker serve`` and ``doctor`` through the real entry point."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from zopilot_worker import cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_starts_answers_and_stops_on_sigterm(
    tmp_path: Path, wait_until: Callable[..., Any]
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOPILOT_")}
    env.update(
        ZOPILOT_WORKER_MODEL_ROOT=str(tmp_path),
        ZOPILOT_WORKER_CLASSIFY_MODEL="tiny-mixtral",
        ZOPILOT_WORKER_EXTRACT_CONCURRENCY="2",
    )
    command = [
        sys.executable, "-m", "zopilot_worker.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--no-load-model", "--skip-doctor",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s=120, interval_s=0.2, what="serve to answer /health")
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["model"] == "tiny-mixtral"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM).
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "Application startup complete" in output  # uvicorn logs through our handler


def test_doctor_subcommand_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    import zopilot_worker.doctor as doctor

    seen: list[list[str]] = []

    def fake_doctor(argv: list[str]) -> int:
        seen.append(list(argv))
        return 3

    monkeypatch.setattr(doctor, "main", fake_doctor)
    assert cli.main(["doctor", "--json", "--require-cuda"]) == 3
    assert seen == [["--json", "--require-cuda"]]


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOPILOT_WORKER_PORT", "9000")
    monkeypatch.setenv("ZOPILOT_WORKER_QUANTIZATION", "int8")
    args = cli.build_parser().parse_args(["serve", "--port", "9100", "--no-load-model"])
    settings = cli._settings(args)
    assert settings.port == 9100
    assert settings.quantization.value == "int8"  # not given on the command line: env wins
    assert settings.load_model_on_start is False


def test_unknown_flags_exit_2_with_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run-job", "--no-such-flag"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: zopilot-worker" in err and "--no-such-flag" in err
