"""Results survive retries: attempts resume, nothing written is lost, files are readable."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from zopilot_worker.jobrunner import EXIT_OK, EXIT_RETRIABLE, RunJobOptions, run_job
from zopilot_worker.jobrunner.output import RESULTS_FILE, ResultWriter, atomic_write
from zopilot_worker.settings import WorkerSettings

Results = Callable[[Path], list[dict[str, Any]]]


def _attempt(spec: dict[str, Any], settings: WorkerSettings, tmp_path: Path) -> dict[str, Any]:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    code = run_job(
        RunJobOptions(spec_path=spec_path, output=tmp_path / "out", skip_doctor=True),
        settings,
        stdout=io.StringIO(),
    )
    summary: dict[str, Any] = json.loads(Path(settings.termination_log).read_text())
    assert summary["exitCode"] == code
    return summary


def test_a_retry_resumes_and_keeps_the_first_attempts_results(
    tmp_path: Path,
    file_server: Any,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    results_reader: Results,
) -> None:
    for name, text in [("a.txt", "INVOICE 1"), ("b.txt", "RECEIPT 2"), ("c.txt", "CONTRACT 3")]:
        (file_server.directory / name).write_text(text)
    (file_server.directory / "gone.txt").unlink(missing_ok=True)
    urls = [f"{file_server.url}/files/{n}" for n in ("a.txt", "b.txt", "c.txt", "gone.txt")]
    spec = spec_builder([{"url": u} for u in urls], tasks=("extract",))
    settings = job_settings(fetch_attempts=1)

    file_server.failing.add("/files/c.txt")  # a temporary fault in attempt 1
    first = _attempt(spec, settings, tmp_path)
    assert first["exitCode"] == EXIT_RETRIABLE
    assert (first["done"], first["failed"]) == (2, 2)
    before = {r["name"]: r for r in results_reader(tmp_path / "out")}
    assert before["c.txt"]["error"]["retriable"] is True

    file_server.failing.clear()
    file_server.requests.clear()
    second = _attempt(spec, settings, tmp_path)
    assert second["exitCode"] == EXIT_OK
    assert (second["documents"], second["done"], second["failed"]) == (4, 3, 1)
    assert second["resumed"] == 3  # a, b done; gone.txt failed permanently (404)
    # Only the document that was not finished is fetched again.
    assert file_server.requests == ["/files/c.txt"]
    after = results_reader(tmp_path / "out")
    assert [r["name"] for r in after] == ["a.txt", "b.txt", "c.txt", "gone.txt"]
    by_name = {r["name"]: r for r in after}
    assert by_name["a.txt"] == before["a.txt"]  # kept as attempt 1 wrote it
    assert by_name["c.txt"]["error"] is None
    assert (tmp_path / "out" / by_name["c.txt"]["markdown_path"]).read_text().strip() == (
        "CONTRACT 3"
    )
    assert len({r["document_id"] for r in after}) == 4


def test_the_same_url_twice_is_two_documents(
    tmp_path: Path,
    file_server: Any,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    results_reader: Results,
) -> None:
    (file_server.directory / "a.txt").write_text("A")
    spec = spec_builder([{"url": f"{file_server.url}/files/a.txt"}] * 2, tasks=("extract",))
    summary = _attempt(spec, job_settings(), tmp_path)
    assert summary["done"] == 2
    assert len({r["document_id"] for r in results_reader(tmp_path / "out")}) == 2
    again = _attempt(spec, job_settings(), tmp_path)
    assert (again["done"], again["resumed"]) == (2, 2)


def _record(key: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "document_id": key,
        "job_fingerprint": "",
        "source": f"s-{key}",
        "name": key,
        "error": error,
    }


def test_a_new_attempt_never_drops_what_an_earlier_one_wrote(tmp_path: Path) -> None:
    """The old bug: attempt 2's first flush replaced attempt 1's results.jsonl."""
    first = ResultWriter(tmp_path, flush_interval_s=0)
    first.add(_record("a"))
    first.add(_record("b", {"code": "fetch_failed", "message": "503", "retriable": True}))
    # A torn last line, as a crash in a non-atomic writer would leave.
    with (tmp_path / RESULTS_FILE).open("a") as handle:
        handle.write('{"document_id": "torn", "sou')

    # Temporaries of writes that died with the attempt; and a user's file that is not ours.
    (tmp_path / f".{RESULTS_FILE}.0123456789ab.tmp").write_text("half")
    (tmp_path / ".a.pdf.md.ba9876543210.tmp").write_text("half")
    (tmp_path / ".notes.tmp").write_text("mine")

    second = ResultWriter(tmp_path, flush_interval_s=0)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == [".notes.tmp"]
    assert second.previous("a") == _record("a")
    second.add(_record("b"))  # the retried document replaces its earlier record
    lines = [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    assert lines == [_record("a"), _record("b")]


def test_a_write_that_dies_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / RESULTS_FILE
    atomic_write(target, b"attempt 1\n")

    def dies(*args: Any) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(OSError, match="vanished"):
        atomic_write(target, b"attempt 2, cut short\n")
    monkeypatch.undo()
    assert target.read_bytes() == b"attempt 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [RESULTS_FILE]  # no temp left


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)
    assert os.umask(previous) == previous


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_are_readable_by_the_group_as_the_umask_allows(
    tmp_path: Path, umask: Callable[[int], None], mask: int, mode: int
) -> None:
    umask(mask)
    writer = ResultWriter(tmp_path / "out", flush_interval_s=0)
    name = writer.write_document("a.pdf", "# A")
    writer.add(_record("a"))
    writer.finish({"exitCode": 0})
    for path in (tmp_path / "out" / str(name), tmp_path / "out" / RESULTS_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_each_file_is_fsynced_before_its_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / RESULTS_FILE, b"x\n")
    assert events == ["fsync-file", "rename", "fsync-dir"]


def test_a_different_job_in_the_same_directory_starts_afresh(
    tmp_path: Path,
    file_server: Any,
    job_settings: Callable[..., WorkerSettings],
    spec_builder: Callable[..., dict[str, Any]],
    results_reader: Results,
) -> None:
    """Resume is for attempts of one job: a new spec (here: text instead of Markdown)
    pointed at the same output directory redoes its documents and replaces the records."""
    (file_server.directory / "a.txt").write_text("A")
    spec = spec_builder([{"url": f"{file_server.url}/files/a.txt"}], tasks=("extract",))
    _attempt(spec, job_settings(), tmp_path)
    [first] = results_reader(tmp_path / "out")
    spec["extract"] = {"format": "text"}
    summary = _attempt(spec, job_settings(), tmp_path)
    assert "resumed" not in summary and summary["done"] == 1
    [second] = results_reader(tmp_path / "out")
    assert second["document_id"] == first["document_id"]
    assert second["job_fingerprint"] != first["job_fingerprint"]
    assert second["text_path"] and file_server.requests == ["/files/a.txt"] * 2
