"""``run-job`` from start to exit code: doctor, spec, model, documents, results, summary.

Every way out goes through :func:`run_job`'s end: the summary is written to
the termination-message file, printed as the last JSON line on stdout, and the
exit code (see :mod:`zopilot_worker.jobrunner.exitcodes`) returned.

That includes SIGTERM (the job's deadline, its deletion, a node drain) and
SIGINT: the handler raises :class:`JobTerminated` in the main thread, which
stops the document loop, saves the results so far, writes the summary
(exit 75: a retry resumes where this attempt stopped) and, when
``exit_on_signal`` (the CLI), ends the process at once with ``os._exit``
instead of waiting for extractions still running in threads, which the
kubelet's grace period would not wait for.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from zopilot_common.spec import Task

from zopilot_worker.errors import WorkerError
from zopilot_worker.jobrunner.exitcodes import (
    EXIT_PERMANENT,
    EXIT_RETRIABLE,
    exit_code_for,
    exit_code_for_error,
)
from zopilot_worker.jobrunner.fetch import Fetcher, resolve_documents
from zopilot_worker.jobrunner.observability import create_job_app
from zopilot_worker.jobrunner.output import (
    OutputError,
    ResultWriter,
    resolve_output_dir,
    spec_fingerprint,
)
from zopilot_worker.jobrunner.report import (
    ProgressReporter,
    build_summary,
    write_termination_message,
)
from zopilot_worker.jobrunner.runner import JobResult, JobRunner
from zopilot_worker.jobrunner.specfile import InvalidSpec, load_spec
from zopilot_worker.metrics import WorkerMetrics
from zopilot_worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunJobOptions:
    spec_path: Path | None = None
    output: Path | None = None
    termination_log: Path | None = None  # None: settings.termination_log
    progress_file: Path | None = None
    metrics_port: int | None = None  # None: settings.metrics_port; 0: no server
    skip_doctor: bool = False
    # After a SIGTERM/SIGINT summary, end the process with os._exit (see the module doc).
    exit_on_signal: bool = True


class JobStopped(Exception):
    """Ends the job before or instead of processing; carries the exit code (and the
    summary, when one was already built with the counts so far)."""

    def __init__(
        self,
        exit_code: int,
        message: str,
        *,
        summary: dict[str, Any] | None = None,
        terminated: bool = False,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message
        self.summary = summary
        self.terminated = terminated


class JobTerminated(BaseException):
    """Raised in the main thread by the SIGTERM/SIGINT handler.

    A BaseException, like KeyboardInterrupt: per-document ``except Exception``
    handlers must not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name


def _handle_termination() -> Callable[[], None]:
    """Install the handler (main thread only); returns what restores the previous ones."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if fired:  # a second signal: let the first one's summary be written
            return
        fired.append(signum)
        raise JobTerminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _terminated_message(stop: JobTerminated, done: int | None, documents: int | None) -> str:
    where = (
        f"after {done} of {documents} documents"
        if done is not None and documents is not None
        else "before processing began"
    )
    return (
        f"terminated by {stop.signal_name} {where}; the results so far are saved and a "
        "retry resumes from them"
    )


def run_job(
    options: RunJobOptions,
    settings: WorkerSettings | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    stdout: TextIO | None = None,
) -> int:
    settings = settings or WorkerSettings()
    stream = stdout or sys.stdout
    metrics = WorkerMetrics()
    port = settings.metrics_port if options.metrics_port is None else options.metrics_port
    restore_signals = _handle_termination()
    terminated = False
    server = None
    try:
        try:
            server = _start_metrics_server(metrics, settings.host, port)
            summary = _run(options, settings, metrics, environ, stream)
        except JobStopped as stop:
            print(f"zopilot-worker run-job: {stop.message}", file=sys.stderr, flush=True)
            summary = stop.summary or _stopped_summary(stop.exit_code, stop.message)
            terminated = stop.terminated
        except JobTerminated as stop:
            summary = _stopped_summary(EXIT_RETRIABLE, _terminated_message(stop, None, None))
            terminated = True
        except Exception as exc:
            # A bug, not a condition a retry would change: permanent, with the log as evidence.
            log.exception("run-job crashed")
            summary = _stopped_summary(EXIT_PERMANENT, f"internal error: {type(exc).__name__}")
        finally:
            if server is not None:
                server.stop()
        write_termination_message(options.termination_log or settings.termination_log, summary)
        event = json.dumps(
            {"event": "summary", **summary}, separators=(",", ":"), ensure_ascii=False
        )
        print(event, file=stream, flush=True)
    finally:
        restore_signals()
    code: int = summary["exitCode"]
    if terminated and options.exit_on_signal:
        log.warning("run-job: %s; exiting with %d", summary.get("message", ""), code)
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    return code


def _stopped_summary(exit_code: int, message: str) -> dict[str, Any]:
    return build_summary(
        exit_code=exit_code,
        documents=0,
        done=0,
        failed=0,
        pages=0,
        by_label=Counter(),
        output_path=None,
        failures=[],
        message=message,
    )


def _start_metrics_server(metrics: WorkerMetrics, host: str, port: int) -> Any:
    if port == 0:
        return None
    from zopilot_worker.service.server import BackgroundServer

    try:
        return BackgroundServer(create_job_app(metrics), host=host, port=port).start()
    except OSError as exc:
        # Observability must not cost the job: run on without /metrics.
        log.error("cannot serve /metrics on %s:%d: %s; continuing without", host, port, exc)
        return None


def _run(
    options: RunJobOptions,
    settings: WorkerSettings,
    metrics: WorkerMetrics,
    environ: Mapping[str, str],
    stream: TextIO,
) -> dict[str, Any]:
    if not options.skip_doctor:
        from zopilot_worker.service.readiness import run_doctor

        failure = run_doctor()
        if failure:
            raise JobStopped(
                EXIT_PERMANENT,
                f"worker doctor failed ({failure}); the image's NumPy/compiled extensions "
                "do not match, rebuild it (see `zopilot-worker doctor`)",
            )
    try:
        spec = load_spec(options.spec_path, environ)
        output_dir = resolve_output_dir(spec, options.output, volume_root=settings.volume_root)
        writer = ResultWriter(output_dir, fingerprint=spec_fingerprint(spec))
    except (InvalidSpec, OutputError) as exc:
        raise JobStopped(EXIT_PERMANENT, str(exc)) from None

    if settings.required_mib:
        # Before anything touches the GPU: the plan the operator admitted is the limit.
        from zopilot_worker.gate import cap_process_memory

        cap_process_memory(settings.required_mib)

    from zopilot_worker.pipeline import create_engine

    classify = spec.classify if Task.CLASSIFY in spec.tasks else None
    engine = create_engine(
        settings,
        metrics=metrics,
        model_name=classify.model if classify else None,
        quantization=classify.quantization if classify else None,
    )
    fetcher = Fetcher.from_settings(settings)
    runner: JobRunner | None = None
    try:
        if classify is not None:
            # Load before fetching anything: a model that cannot load fails the job in seconds.
            try:
                engine.load_models()
            except WorkerError as exc:
                code = exit_code_for_error(exc.retriable, exc.code)
                raise JobStopped(code, exc.public_message) from None
        refs = resolve_documents(
            list(spec.documents),
            configmap_root=settings.configmap_root,
            volume_root=settings.volume_root,
        )
        reporter = ProgressReporter(
            len(refs), metrics=metrics, progress_file=options.progress_file, stream=stream
        )
        runner = JobRunner(
            spec, engine, fetcher, writer, reporter, concurrency=settings.extract_concurrency
        )
        result = runner.run(refs)
    except JobTerminated as stop:
        partial = runner.result if runner is not None else None
        if partial is None:
            raise
        message = _terminated_message(stop, partial.done + partial.failed, partial.documents)
        summary = _summary(EXIT_RETRIABLE, partial, output_dir, message)
        writer.finish(summary)
        raise JobStopped(EXIT_RETRIABLE, message, summary=summary, terminated=True) from None
    finally:
        fetcher.close()
        engine.close()

    if result.fatal is not None:
        exit_code = exit_code_for_error(result.fatal.retriable, result.fatal.code)
        message = f"stopped after {result.done + result.failed} of {result.documents} documents: "
        message += result.fatal.public_message
    else:
        exit_code = exit_code_for(
            documents=result.documents,
            done=result.done,
            failed_permanent=result.failed_permanent,
            failed_retriable=result.failed_retriable,
        )
        message = _outcome_message(exit_code, result.failed_retriable, result.documents)
    summary = _summary(exit_code, result, output_dir, message)
    writer.finish(summary)
    return summary


def _summary(
    exit_code: int, result: JobResult, output_dir: Path | None, message: str
) -> dict[str, Any]:
    return build_summary(
        exit_code=exit_code,
        documents=result.documents,
        done=result.done,
        failed=result.failed,
        pages=result.pages,
        by_label=result.by_label,
        output_path=str(output_dir) if output_dir is not None else None,
        failures=result.failures,
        message=message,
        resumed=result.resumed,
    )


def _outcome_message(exit_code: int, failed_retriable: int, documents: int) -> str:
    if exit_code == EXIT_RETRIABLE:
        return f"{failed_retriable} document(s) failed for a temporary reason; retry the job"
    if exit_code == EXIT_PERMANENT:
        return f"all {documents} document(s) failed permanently"
    return ""
