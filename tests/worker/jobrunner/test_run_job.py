"""The job runner in-process: URL sources, failures per document, retriable stops, metrics."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from zopilot_worker.jobrunner import (
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_RETRIABLE,
    RunJobOptions,
    run_job,
)
from zopilot_worker.settings import WorkerSettings
from zopilot_worker.testing.documents import make_corrupt_pdf, make_docx, make_text_pdf

Results = Callable[[Path], list[dict[str, Any]]]


def _run(
    spec: dict[str, Any],
    settings: WorkerSettings,
    tmp_path: Path,
    *,
    stdout: io.StringIO | None = None,
    **options: Any,
) -> tuple[int, dict[str, Any], Path]:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    output = tmp_path / "out"
    code = run_job(
        RunJobOptions(spec_path=spec_path, output=output, skip_doctor=True, **options),
        settings,
        stdout=stdout or io.StringIO(),
    )
    summary = json.loads(Path(settings.termination_log).read_text())
    assert summary["exitCode"] == code
    return code, summary, output


def test_url_sources_from_a_loopback_server(
    tmp_path: Path,
    file_server: Any,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    results_reader: Results,
) -> None:
    make_docx(file_server.directory / "contract.docx", "AGREEMENT", ["Term: 12 months."])
    (file_server.directory / "invoice.pdf").write_bytes(make_text_pdf(["INVOICE INV-9"]))
    spec = spec_builder(
        [
            {"url": f"{file_server.url}/files/contract.docx"},
            {"url": f"{file_server.url}/files/invoice.pdf?token=secret-signature"},
        ],
        tasks=("extract",),
    )
    code, summary, output = _run(spec, job_settings(), tmp_path)
    assert code == EXIT_OK
    assert (summary["done"], summary["failed"]) == (2, 0)
    results = results_reader(output)
    assert [r["name"] for r in results] == ["contract.docx", "invoice.pdf"]
    assert "INV-9" in (output / results[1]["markdown_path"]).read_text()
    assert results[0]["label"] is None  # extract only
    # The query string (a presigned URL's credentials) never reaches results or status.
    assert "secret-signature" not in (output / "results.jsonl").read_text()
    assert "secret-signature" not in json.dumps(summary)


def test_url_answering_503_gives_the_retriable_exit_code(
    tmp_path: Path,
    file_server: Any,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    results_reader: Results,
) -> None:
    (file_server.directory / "ok.txt").write_text("A receipt, paid by card.")
    spec = spec_builder(
        [
            {"url": f"{file_server.url}/status/503/flaky.pdf"},
            {"url": f"{file_server.url}/files/ok.txt"},
        ],
        tasks=("extract",),
    )
    code, summary, output = _run(spec, job_settings(fetch_attempts=3), tmp_path)
    assert code == EXIT_RETRIABLE
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert summary["failures"][0]["code"] == "fetch_failed"
    assert "503" in summary["failures"][0]["message"]
    # Retried: three attempts at the flaky URL, then the other documents still ran.
    assert file_server.requests.count("/status/503/flaky.pdf") == 3
    failed, ok = results_reader(output)
    assert failed["error"]["retriable"] is True
    assert ok["error"] is None


def test_url_answering_404_is_a_recorded_permanent_failure(
    tmp_path: Path,
    file_server: Any,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
) -> None:
    (file_server.directory / "ok.txt").write_text("A receipt, paid by card.")
    spec = spec_builder(
        [{"url": f"{file_server.url}/files/gone.pdf"}, {"url": f"{file_server.url}/files/ok.txt"}],
        tasks=("extract",),
    )
    code, summary, _ = _run(spec, job_settings(), tmp_path)
    assert code == EXIT_OK
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert file_server.requests.count("/files/gone.pdf") == 1  # a 404 is not retried


def test_bad_documents_are_recorded_and_the_job_goes_on(
    tmp_path: Path,
    model_root: Path,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    results_reader: Results,
) -> None:
    inbox = tmp_path / "volumes" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "a-broken.pdf").write_bytes(make_corrupt_pdf())
    (inbox / "b-empty.txt").write_bytes(b"")
    (inbox / "c-invoice.txt").write_text("INVOICE INV-1, amount due 100 EUR")
    spec = spec_builder([{"volume": {"claimName": "inbox", "path": "*"}}])
    code, summary, output = _run(spec, job_settings(model_root=model_root), tmp_path)
    assert code == EXIT_OK
    assert (summary["documents"], summary["done"], summary["failed"]) == (3, 1, 2)
    assert [f["code"] for f in summary["failures"]] == ["corrupt_document", "empty_document"]
    broken, empty, invoice = results_reader(output)
    assert broken["error"]["code"] == "corrupt_document" and broken["label"] is None
    assert empty["error"]["code"] == "empty_document"
    assert invoice["error"] is None and invoice["label"] in summary["byLabel"]


def test_all_documents_failing_permanently_exits_2(
    tmp_path: Path,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
) -> None:
    inbox = tmp_path / "volumes" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "broken.pdf").write_bytes(make_corrupt_pdf())
    spec = spec_builder(
        [
            {"volume": {"claimName": "inbox", "path": "*.pdf"}},
            {"volume": {"claimName": "inbox", "path": "nothing-here/*.pdf"}},
        ],
        tasks=("extract",),
    )
    code, summary, _ = _run(spec, job_settings(), tmp_path)
    assert code == EXIT_PERMANENT
    assert summary["failed"] == 2
    assert "no file matches" in summary["failures"][1]["message"]


def test_unknown_model_exits_2_and_names_the_known_ones(
    tmp_path: Path,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
) -> None:
    spec = spec_builder([{"url": "http://127.0.0.1:9/a.pdf"}], model="gpt-17")
    code, summary, _ = _run(spec, job_settings(), tmp_path)
    assert code == EXIT_PERMANENT
    assert "gpt-17" in summary["message"] and "tiny-mixtral" in summary["message"]


def test_model_missing_from_the_volume_exits_2(
    tmp_path: Path,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
) -> None:
    spec = spec_builder([{"url": "http://127.0.0.1:9/a.pdf"}])
    code, summary, _ = _run(spec, job_settings(), tmp_path)  # model_root has no tiny-mixtral
    assert code == EXIT_PERMANENT
    assert "tiny-mixtral" in summary["message"]


def test_gpu_memory_gate_refusal_exits_75(
    tmp_path: Path,
    model_root: Path,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import zopilot_worker.pipeline as pipeline

    # Pretend a GPU with 1 MiB free: the gate must refuse before anything loads.
    monkeypatch.setattr(pipeline, "cuda_memory_probe", lambda: lambda: (1 << 20, 24 << 30))
    spec = spec_builder([{"url": "http://127.0.0.1:9/a.pdf"}])
    code, summary, _ = _run(spec, job_settings(model_root=model_root), tmp_path)
    assert code == EXIT_RETRIABLE
    assert "GPU memory" in summary["message"]


def test_doctor_failure_exits_2_before_anything_runs(
    tmp_path: Path,
    file_server: Any,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import zopilot_worker.service.readiness as readiness

    monkeypatch.setattr(
        readiness, "run_doctor", lambda: "scipy.special: built against NumPy 1.x: sph_legendre_p"
    )
    spec = spec_builder([{"url": f"{file_server.url}/files/a.txt"}], tasks=("extract",))
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    settings = job_settings()
    code = run_job(RunJobOptions(spec_path=spec_path), settings, stdout=io.StringIO())
    assert code == EXIT_PERMANENT
    summary = json.loads(Path(settings.termination_log).read_text())
    assert "doctor failed" in summary["message"] and "NumPy 1.x" in summary["message"]
    assert file_server.requests == []  # failed fast: nothing fetched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ScrapingStream(io.StringIO):
    """stdout for the job that scrapes its /metrics and /health at the first progress line."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.scraped: dict[str, httpx.Response] = {}

    def write(self, text: str) -> int:
        if '"event":"progress"' in text and not self.scraped:
            base = f"http://127.0.0.1:{self.port}"
            self.scraped["metrics"] = httpx.get(f"{base}/metrics", timeout=10)
            self.scraped["health"] = httpx.get(f"{base}/health", timeout=10)
        return super().write(text)


def test_metrics_and_health_are_served_while_the_job_runs(
    tmp_path: Path,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
) -> None:
    inbox = tmp_path / "volumes" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "a.txt").write_text("hello")
    port = _free_port()
    stream = ScrapingStream(port)
    spec = spec_builder([{"volume": {"claimName": "inbox", "path": "a.txt"}}], tasks=("extract",))
    code, _, _ = _run(spec, job_settings(), tmp_path, stdout=stream, metrics_port=port)
    assert code == EXIT_OK
    assert stream.scraped["health"].json() == {"status": "ok"}
    assert 'zopilot_worker_job_documents{state="total"} 1.0' in stream.scraped["metrics"].text
    with pytest.raises(httpx.TransportError):  # stopped with the job
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_malformed_and_refused_urls_fail_only_their_documents(
    tmp_path: Path,
    file_server: Any,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    results_reader: Results,
) -> None:
    """Port 99999 and a broken IPv6 literal used to end the whole job as an internal error."""
    (file_server.directory / "ok.txt").write_text("A receipt, paid by card.")
    spec = spec_builder(
        [
            {"url": "https://files.example:99999/a.pdf"},
            {"url": "https://[::1/b.pdf"},
            {"url": "http://169.254.169.254/latest/meta-data/"},
            {"url": f"{file_server.url}/files/ok.txt"},
        ],
        tasks=("extract",),
    )
    code, summary, output = _run(spec, job_settings(fetch_attempts=3), tmp_path)
    assert code == EXIT_OK
    assert (summary["documents"], summary["done"], summary["failed"]) == (4, 1, 3)
    codes = [f["code"] for f in summary["failures"]]
    assert codes == ["fetch_failed", "fetch_failed", "fetch_refused"]
    assert "Port out of range" in summary["failures"][0]["message"]
    assert "Invalid IPv6 URL" in summary["failures"][1]["message"]
    assert "metadata" in summary["failures"][2]["message"]
    *failed, ok = results_reader(output)
    assert all(r["error"]["retriable"] is False for r in failed)
    assert ok["error"] is None
    assert file_server.requests == ["/files/ok.txt"]
