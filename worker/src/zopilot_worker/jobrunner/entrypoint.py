"""``run-job`` from start to exit code: doctor, spec, model, documents, results, summary.

Every way out goes through :func:`run_job`'s end: the summary is written to
the termination-message file, printed as the last JSON line on stdout, and the
exit code (see :mod:`zopilot_worker.jobrunner.exitcodes`) returned.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping
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
from zopilot_worker.jobrunner.output import OutputError, ResultWriter, resolve_output_dir
from zopilot_worker.jobrunner.report import (
    ProgressReporter,
    build_summary,
    write_termination_message,
)
from zopilot_worker.jobrunner.runner import JobRunner
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


class JobStopped(Exception):
    """Ends the job before or instead of processing; carries the exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


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
    server = _start_metrics_server(metrics, settings.host, port)
    try:
        try:
            summary = _run(options, settings, metrics, environ, stream)
        except JobStopped as stop:
            print(f"zopilot-worker run-job: {stop.message}", file=sys.stderr, flush=True)
            summary = _stopped_summary(stop.exit_code, stop.message)
        except Exception as exc:
            # A bug, not a condition a retry would change: permanent, with the log as evidence.
            log.exception("run-job crashed")
            summary = _stopped_summary(EXIT_PERMANENT, f"internal error: {type(exc).__name__}")
    finally:
        if server is not None:
            server.stop()
    write_termination_message(options.termination_log or settings.termination_log, summary)
    event = json.dumps({"event": "summary", **summary}, separators=(",", ":"), ensure_ascii=False)
    print(event, file=stream, flush=True)
    code: int = summary["exitCode"]
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
        writer = ResultWriter(output_dir)
    except (InvalidSpec, OutputError) as exc:
        raise JobStopped(EXIT_PERMANENT, str(exc)) from None

    from zopilot_worker.pipeline import create_engine

    classify = spec.classify if Task.CLASSIFY in spec.tasks else None
    engine = create_engine(
        settings,
        metrics=metrics,
        model_name=classify.model if classify else None,
        quantization=classify.quantization if classify else None,
    )
    fetcher = Fetcher.from_settings(settings)
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
        reporter.emit()
        runner = JobRunner(
            spec, engine, fetcher, writer, reporter, concurrency=settings.extract_concurrency
        )
        result = runner.run(refs)
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
    summary = build_summary(
        exit_code=exit_code,
        documents=result.documents,
        done=result.done,
        failed=result.failed,
        pages=result.pages,
        by_label=result.by_label,
        output_path=str(output_dir) if output_dir is not None else None,
        failures=result.failures,
        message=message,
    )
    writer.finish(summary)
    return summary


def _outcome_message(exit_code: int, failed_retriable: int, documents: int) -> str:
    if exit_code == EXIT_RETRIABLE:
        return f"{failed_retriable} document(s) failed for a temporary reason; retry the job"
    if exit_code == EXIT_PERMANENT:
        return f"all {documents} document(s) failed permanently"
    return ""
