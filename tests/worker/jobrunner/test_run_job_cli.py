"""``zopilot-worker run-job`` as the pod runs it: a real process, env settings, exit codes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from zopilot_worker.jobrunner import EXIT_OK, EXIT_PERMANENT, EXIT_RETRIABLE
from zopilot_worker.testing.documents import sample_corpus

LABELS = ["invoice", "receipt", "contract", "other"]


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ZOPILOT_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "zopilot_worker.cli", "run-job", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_volume_glob_job_end_to_end(
    tmp_path: Path, model_root: Path, spec_builder: Callable[..., dict[str, Any]]
) -> None:
    volumes = tmp_path / "volumes"
    corpus = sample_corpus(volumes / "inbox" / "march")
    (volumes / "results").mkdir()
    spec = spec_builder(
        [{"volume": {"claimName": "inbox", "path": "march/*"}}],
        output={"volume": {"claimName": "results", "path": "march-run/"}},
    )
    termination = tmp_path / "termination-log"
    progress = tmp_path / "progress.json"
    env = {
        "ZOPILOT_JOB_SPEC": json.dumps(spec),
        "ZOPILOT_WORKER_MODEL_ROOT": str(model_root),
        "ZOPILOT_WORKER_VOLUME_ROOT": str(volumes),
        "ZOPILOT_WORKER_DEVICE": "cpu",
        "ZOPILOT_WORKER_TERMINATION_LOG": str(termination),
    }
    # The real doctor runs first (in process, as in the pod): NumPy 2 stack, extensions.
    proc = _run_cli(["--metrics-port", "0", "--progress-file", str(progress)], env)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]

    output = volumes / "results" / "march-run"
    results = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert len(results) == len(corpus) == 9
    assert sorted(r["name"] for r in results) == sorted(p.name for p in corpus)
    for record in results:
        assert record["error"] is None, record
        assert record["label"] in LABELS
        assert math.isclose(sum(record["scores"].values()), 1.0, abs_tol=1e-6)
        assert record["source"].startswith("volume:inbox/march/")
        markdown = output / record["markdown_path"]
        assert markdown.is_file() and markdown.read_text().strip()
    assert {r["kind"] for r in results} == {"pdf", "docx", "xlsx", "text", "html"}

    raw = termination.read_bytes()
    assert len(raw) <= 4096
    summary = json.loads(raw)
    assert summary["exitCode"] == 0
    assert (summary["documents"], summary["done"], summary["failed"]) == (9, 9, 0)
    assert sum(summary["byLabel"].values()) == 9
    assert summary["outputPath"] == str(output)
    assert summary["pages"] >= 9

    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    progress_events = [e for e in events if e["event"] == "progress"]
    assert progress_events[0] == {"event": "progress", "done": 0, "failed": 0, "documents": 9}
    assert progress_events[-1] == {"event": "progress", "done": 9, "failed": 0, "documents": 9}
    assert [e["done"] for e in progress_events] == list(range(10))
    assert events[-1]["event"] == "summary"
    assert json.loads(progress.read_text())["done"] == 9
    assert json.loads((output / "summary.json").read_text())["done"] == 9


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"documents": [], "tasks": ["extract"]}, "spec.documents"),
        ({"documents": [{"url": "http://x/a.pdf"}], "tasks": ["classify"]}, "spec.classify"),
        (
            {
                "documents": [{"url": "http://x/a.pdf", "volume": {"claimName": "c", "path": "p"}}],
                "tasks": ["extract"],
            },
            "exactly one of",
        ),
        ({"documents": [{"url": "http://x/a.pdf"}], "tasks": ["summarize"]}, "spec.tasks"),
    ],
)
def test_invalid_spec_exits_2_with_a_clear_message(
    tmp_path: Path, spec: dict[str, Any], expected: str
) -> None:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    termination = tmp_path / "termination-log"
    proc = _run_cli(
        [
            "--spec",
            str(spec_path),
            "--metrics-port",
            "0",
            "--skip-doctor",
            "--termination-log",
            str(termination),
        ],
        {},
    )
    assert proc.returncode == EXIT_PERMANENT
    assert expected in proc.stderr
    summary = json.loads(termination.read_text())
    assert summary["exitCode"] == EXIT_PERMANENT
    assert expected in summary["message"]


def test_missing_and_malformed_spec_exit_2(tmp_path: Path) -> None:
    termination = str(tmp_path / "t")
    missing = _run_cli(
        ["--metrics-port", "0", "--skip-doctor", "--termination-log", termination], {}
    )
    assert missing.returncode == EXIT_PERMANENT
    assert "ZOPILOT_JOB_SPEC" in missing.stderr
    malformed = _run_cli(
        ["--metrics-port", "0", "--skip-doctor", "--termination-log", termination],
        {"ZOPILOT_JOB_SPEC": "{not json"},
    )
    assert malformed.returncode == EXIT_PERMANENT
    assert "not valid JSON" in malformed.stderr


def test_sigterm_writes_the_summary_and_keeps_the_results(
    tmp_path: Path, server_factory: Callable[..., Any], spec_builder: Callable[..., dict[str, Any]]
) -> None:
    """A real `run-job` process, a real SIGTERM while one document is still arriving."""
    server = server_factory(trickle_s=1.0)  # the second document never finishes in time
    (server.directory / "a.txt").write_text("INVOICE 1")
    spec = spec_builder(
        [{"url": f"{server.url}/files/a.txt"}, {"url": f"{server.url}/trickle/100000"}],
        tasks=("extract",),
    )
    termination = tmp_path / "termination-log"
    output = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOPILOT_")}
    env.update(
        {
            "ZOPILOT_JOB_SPEC": json.dumps(spec),
            "ZOPILOT_WORKER_TERMINATION_LOG": str(termination),
            "ZOPILOT_WORKER_FETCH_ALLOW_HTTP": "true",
            "ZOPILOT_WORKER_FETCH_ALLOW_PRIVATE_NETWORKS": "true",
        }
    )
    args = ["run-job", "--skip-doctor", "--metrics-port", "0", "--output", str(output)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "zopilot_worker.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        # Wait for the first document to be recorded (the condition, not a sleep).
        for line in proc.stdout:
            if line.startswith('{"event":"progress"') and json.loads(line)["done"] == 1:
                break
        else:
            pytest.fail(f"run-job ended early: {proc.wait()} {proc.stderr.read()[-3000:]}")
        assert "/trickle/100000" in server.requests
        proc.send_signal(signal.SIGTERM)
        rest, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_RETRIABLE, stderr[-3000:]
    summary = json.loads(termination.read_text())
    assert summary["exitCode"] == EXIT_RETRIABLE
    assert "terminated by SIGTERM after 1 of 2 documents" in summary["message"]
    assert (summary["documents"], summary["done"], summary["failed"]) == (2, 1, 0)
    assert json.loads(rest.splitlines()[-1])["event"] == "summary"
    results = [json.loads(x) for x in (output / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in results] == ["a.txt"]
    assert json.loads((output / "summary.json").read_text())["done"] == 1
