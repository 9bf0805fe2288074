"""``zopilot-worker``: the worker image's entry point.

    zopilot-worker serve     the HTTP service (FastAPI + uvicorn)
    zopilot-worker run-job   one DocumentJob attempt (exit codes: jobrunner.exitcodes)
    zopilot-worker doctor    the NumPy 2 / compiled-extension self-check

Settings come from ``ZOPILOT_WORKER_*`` variables (see ``settings.py``);
command-line flags override them. Subcommand modules are imported only after
the hub has been pinned offline (importing ``settings`` does that), so
transformers can never see an online hub.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zopilot_common.spec import Quantization

from zopilot_worker.settings import WorkerSettings, enforce_offline_hub


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by serve and run-job; each overrides its ZOPILOT_WORKER_* variable."""
    group = parser.add_argument_group("settings (override ZOPILOT_WORKER_* variables)")
    group.add_argument("--model-root", type=Path, help="directory with one folder per model")
    group.add_argument(
        "--quantization", choices=[q.value for q in Quantization], help="weight quantization"
    )
    group.add_argument("--device", help='torch device, e.g. "cuda" or "cpu"')
    group.add_argument("--ocr-model-dir", type=Path, help="local OCR model directory")
    group.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log level"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zopilot-worker", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="bind address (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080)")
    serve.add_argument("--model", dest="classify_model", help="catalog name of the model")
    serve.add_argument(
        "--no-load-model",
        dest="load_model_on_start",
        action="store_false",
        default=None,
        help="load the model on the first /classify instead of at startup",
    )
    serve.add_argument(
        "--skip-doctor",
        dest="run_doctor_on_start",
        action="store_false",
        default=None,
        help="do not run the doctor checks at startup",
    )
    _settings_flags(serve)

    job = commands.add_parser("run-job", help="run one DocumentJob attempt")
    job.add_argument("--spec", type=Path, help="spec JSON file (default: $ZOPILOT_JOB_SPEC)")
    job.add_argument("--output", type=Path, help="output directory (default: spec.output)")
    job.add_argument(
        "--termination-log",
        type=Path,
        help="summary file (default: $ZOPILOT_WORKER_TERMINATION_LOG or /dev/termination-log)",
    )
    job.add_argument("--progress-file", type=Path, help="file kept updated with progress JSON")
    job.add_argument(
        "--metrics-port", type=int, help="port for /metrics and /health; 0 disables (8080)"
    )
    job.add_argument("--skip-doctor", action="store_true", help="skip the doctor checks")
    _settings_flags(job)

    # Listed for --help only: main() hands `doctor ...` to the doctor's own parser untouched.
    commands.add_parser(
        "doctor", help="check NumPy and compiled extensions (--json, --require-cuda)"
    )
    return parser


def _settings(args: argparse.Namespace) -> WorkerSettings:
    names = (
        "host",
        "port",
        "classify_model",
        "load_model_on_start",
        "run_doctor_on_start",
        "model_root",
        "quantization",
        "device",
        "ocr_model_dir",
        "log_level",
    )
    overrides: dict[str, Any] = {
        name: getattr(args, name) for name in names if getattr(args, name, None) is not None
    }
    return WorkerSettings(**overrides)


def configure_logging(level: str) -> None:
    """Plain-text logs on stderr (stdout belongs to run-job's JSON events), with request ids."""
    from zopilot_worker.service.context import RequestIdLogFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdLogFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    enforce_offline_hub()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["doctor"]:
        from zopilot_worker.doctor import main as doctor_main

        return doctor_main(arguments[1:])
    args = build_parser().parse_args(arguments)

    settings = _settings(args)
    configure_logging(settings.log_level)
    if args.command == "serve":
        from zopilot_worker.service.server import serve

        return serve(settings)

    from zopilot_worker.jobrunner import RunJobOptions, run_job

    options = RunJobOptions(
        spec_path=args.spec,
        output=args.output,
        # None: settings.termination_log, i.e. $ZOPILOT_WORKER_TERMINATION_LOG or the default.
        termination_log=args.termination_log,
        progress_file=args.progress_file,
        metrics_port=args.metrics_port,
        skip_doctor=args.skip_doctor,
    )
    return run_job(options, settings)


if __name__ == "__main__":
    sys.exit(main())
