"""Readiness: startup checks (doctor, model load) run in the background.

The service starts answering /health at once; /ready answers 503 until every
check is ``ok`` or ``skipped``. Warm-up runs the doctor checks and, when
configured, loads the classifier, both in threads. A retriable failure (the
GPU-memory gate said "not now") is retried with backoff, so a worker on a
busy shared GPU becomes ready when memory frees up; a permanent failure (model
missing, NumPy ABI mismatch) stays visible in /ready's body and in the logs.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.to_thread

from zopilot_worker.errors import WorkerError
from zopilot_worker.metrics import WorkerMetrics
from zopilot_worker.pipeline import Engine

log = logging.getLogger(__name__)

CheckStateName = Literal["pending", "ok", "failed", "skipped"]
DoctorCheck = Callable[[], str | None]
"""Runs the doctor checks; returns None when all pass, else what failed (one line)."""

MAX_RETRY_DELAY_S = 60.0


def run_doctor() -> str | None:
    """The doctor checks in this process (``zopilot_worker.doctor.run_checks``).

    For a process that runs nothing else yet (``run-job`` at start): the doctor
    redirects stderr and records warnings process-wide while it works.
    """
    from zopilot_worker.doctor import run_checks

    return _failures(
        {"check": r.check, "status": r.status, "detail": r.detail} for r in run_checks()
    )


def run_doctor_isolated(timeout_s: float = 300.0) -> str | None:
    """The doctor checks in a child interpreter of the same environment (the service's default).

    Same packages, same ABI, but its process-wide stderr/warnings capture cannot
    swallow the log lines of a server that is already answering probes.
    """
    command = [sys.executable, "-m", "zopilot_worker.doctor", "--json"]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        report = json.loads(proc.stdout)
    except subprocess.TimeoutExpired:
        return f"doctor did not finish within {timeout_s:.0f} s"
    except (json.JSONDecodeError, OSError) as exc:
        return f"doctor could not run: {type(exc).__name__}"
    return _failures(report.get("checks", []))


def _failures(checks: Iterable[dict[str, str]]) -> str | None:
    failed = [c for c in checks if c.get("status") == "FAIL"]
    if not failed:
        return None
    return "; ".join(f"{c.get('check', '?')}: {c.get('detail', '') or 'failed'}" for c in failed)


@dataclass
class Check:
    state: CheckStateName = "pending"
    message: str = ""


@dataclass
class Readiness:
    checks: dict[str, Check] = field(default_factory=lambda: {"doctor": Check(), "model": Check()})

    @property
    def ready(self) -> bool:
        return all(check.state in ("ok", "skipped") for check in self.checks.values())

    def set(self, name: str, state: CheckStateName, message: str = "") -> None:
        self.checks[name] = Check(state, message)


async def warm_up(
    readiness: Readiness,
    engine: Engine,
    metrics: WorkerMetrics,
    *,
    doctor: DoctorCheck | None,
    load_model: bool,
    retry_after_s: float,
) -> None:
    """Run the startup checks; meant to run as a background task of the lifespan."""
    if doctor is None:
        readiness.set("doctor", "skipped", "disabled by configuration")
    else:
        try:
            failure = await anyio.to_thread.run_sync(doctor, abandon_on_cancel=True)
        except Exception as exc:
            log.exception("doctor checks crashed")
            failure = f"doctor checks crashed: {type(exc).__name__}"
        if failure:
            log.error("doctor checks failed: %s", failure)
            readiness.set("doctor", "failed", failure)
        else:
            readiness.set("doctor", "ok")
    if not load_model:
        readiness.set("model", "skipped", f"{engine.model_name} loads on the first /classify")
    else:
        await _load_with_retries(readiness, engine, retry_after_s)
    metrics.ready.set(1 if readiness.ready else 0)


async def _load_with_retries(readiness: Readiness, engine: Engine, retry_after_s: float) -> None:
    delay = retry_after_s
    while True:
        readiness.set("model", "pending", f"loading {engine.model_name}")
        try:
            await anyio.to_thread.run_sync(engine.load_models, abandon_on_cancel=True)
        except WorkerError as exc:
            if not exc.retriable:
                log.error("loading %s failed: %s", engine.model_name, exc.detail or exc)
                readiness.set("model", "failed", exc.public_message)
                return
            log.warning("loading %s deferred: %s", engine.model_name, exc.public_message)
            readiness.set("model", "pending", f"{exc.public_message}; retrying in {delay:.0f} s")
            await anyio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)
            continue
        except Exception as exc:
            log.exception("loading %s crashed", engine.model_name)
            readiness.set("model", "failed", f"model load crashed: {type(exc).__name__}")
            return
        readiness.set("model", "ok", f"{engine.model_name} loaded")
        return
