"""Pure parts of the job runner: spec loading, sources, exit codes, the 4 KiB summary."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from zopilot_common.spec import DocumentJobSpec, DocumentSource
from zopilot_worker.errors import (
    DocumentTooLarge,
    FetchError,
    GPUMemoryUnavailable,
    GPUOutOfMemory,
    ModelNotFound,
    WorkerError,
)
from zopilot_worker.jobrunner.exitcodes import (
    EXIT_GPU_OOM,
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_RETRIABLE,
    exit_code_for,
    exit_code_for_error,
)
from zopilot_worker.jobrunner.fetch import Fetcher, redact_url, resolve_documents
from zopilot_worker.jobrunner.output import OutputError, ResultWriter, resolve_output_dir
from zopilot_worker.jobrunner.report import build_summary
from zopilot_worker.jobrunner.specfile import SPEC_ENV, InvalidSpec, load_spec

SPEC = {"documents": [{"url": "https://files.example/a.pdf"}], "tasks": ["extract"]}


@pytest.mark.parametrize(
    ("documents", "done", "permanent", "retriable", "expected"),
    [
        (3, 3, 0, 0, EXIT_OK),
        (3, 2, 1, 0, EXIT_OK),  # recorded failures do not fail the job
        (3, 0, 3, 0, EXIT_PERMANENT),  # nothing could ever succeed
        (3, 2, 0, 1, EXIT_RETRIABLE),
        (3, 0, 2, 1, EXIT_RETRIABLE),  # a retry may still help the third
        (0, 0, 0, 0, EXIT_OK),
    ],
)
def test_exit_codes(
    documents: int, done: int, permanent: int, retriable: int, expected: int
) -> None:
    assert (
        exit_code_for(
            documents=documents, done=done, failed_permanent=permanent, failed_retriable=retriable
        )
        == expected
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (GPUOutOfMemory("oom"), EXIT_GPU_OOM),  # plan too small: the operator re-plans
        (GPUMemoryUnavailable("busy"), EXIT_RETRIABLE),  # memory taken by others: retry
        (ModelNotFound("no model"), EXIT_PERMANENT),
    ],
)
def test_exit_code_of_a_job_stopping_error(error: WorkerError, expected: int) -> None:
    assert exit_code_for_error(error.retriable, error.code) == expected


def test_spec_from_env_file_and_whole_object(tmp_path: Path) -> None:
    assert load_spec(None, {SPEC_ENV: json.dumps(SPEC)}).tasks[0] == "extract"
    whole = {"apiVersion": "zopilot.dev/v1alpha1", "kind": "DocumentJob", "spec": SPEC}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(whole))
    assert isinstance(load_spec(path, {}), DocumentJobSpec)
    with pytest.raises(InvalidSpec, match="cannot read"):
        load_spec(tmp_path / "missing.json", {})


def test_spec_file_may_be_gzipped(tmp_path: Path) -> None:
    # The operator gzips specs past 1 MB into the ConfigMap it mounts as --spec.
    path = tmp_path / "spec.json"
    path.write_bytes(gzip.compress(json.dumps(SPEC).encode()))
    assert load_spec(path, {}).tasks[0] == "extract"
    path.write_bytes(gzip.compress(json.dumps(SPEC).encode())[:20])  # truncated
    with pytest.raises(InvalidSpec, match="cannot read the spec file"):
        load_spec(path, {})


def _sources(*items: dict[str, object]) -> list[DocumentSource]:
    return [DocumentSource.model_validate(item) for item in items]


def test_volume_glob_stays_inside_the_claim(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    (root / "inbox" / "march").mkdir(parents=True)
    (root / "inbox" / "march" / "a.pdf").write_bytes(b"%PDF")
    (root / "inbox" / "march" / "b.txt").write_text("b")
    (root / "secret.txt").write_text("not yours")
    (root / "inbox" / "march" / "escape.txt").symlink_to(root / "secret.txt")
    refs = resolve_documents(
        _sources(
            {"volume": {"claimName": "inbox", "path": "march/*"}},
            {"volume": {"claimName": "inbox", "path": "../secret.txt"}},
            {"volume": {"claimName": "inbox", "path": "/etc/passwd"}},
        ),
        configmap_root=tmp_path / "cm",
        volume_root=root,
    )
    ok = [r for r in refs if r.problem is None]
    assert [r.source for r in ok] == ["volume:inbox/march/a.pdf", "volume:inbox/march/b.txt"]
    refused = [r for r in refs if r.problem is not None]
    assert len(refused) == 2
    assert all("'..'" in r.problem.public_message for r in refused if r.problem)


def test_configmap_key_is_a_file_under_the_mount(tmp_path: Path) -> None:
    (tmp_path / "cm" / "inbox").mkdir(parents=True)
    (tmp_path / "cm" / "inbox" / "b.txt").write_text("hello")
    refs = resolve_documents(
        _sources(
            {"configMap": {"name": "inbox", "key": "b.txt"}},
            {"configMap": {"name": "inbox", "key": "missing.txt"}},
            {"configMap": {"name": "inbox", "key": "../../etc/passwd"}},
        ),
        configmap_root=tmp_path / "cm",
        volume_root=tmp_path / "v",
    )
    fetcher = Fetcher(max_bytes=1024, timeout_s=1)
    assert fetcher.fetch(refs[0]).data == b"hello"
    with pytest.raises(FetchError, match="not found") as missing:
        fetcher.fetch(refs[1])
    assert missing.value.retriable is False
    with pytest.raises(FetchError, match="not a valid"):
        fetcher.fetch(refs[2])
    fetcher.close()


def test_file_over_the_limit_is_refused_without_reading(tmp_path: Path) -> None:
    (tmp_path / "v" / "c").mkdir(parents=True)
    (tmp_path / "v" / "c" / "big.txt").write_bytes(b"x" * 2048)
    [ref] = resolve_documents(
        _sources({"volume": {"claimName": "c", "path": "big.txt"}}),
        configmap_root=tmp_path,
        volume_root=tmp_path / "v",
    )
    with pytest.raises(DocumentTooLarge, match="2048 bytes"):
        Fetcher(max_bytes=1024, timeout_s=1).fetch(ref)


def test_redact_url() -> None:
    assert redact_url("https://user:pw@h.example:8443/a/b.pdf?X-Sig=abc#x") == (
        "https://h.example:8443/a/b.pdf"
    )


def test_output_dir_from_spec_refuses_escapes(tmp_path: Path) -> None:
    spec = DocumentJobSpec.model_validate(
        {**SPEC, "output": {"volume": {"claimName": "results", "path": "march/"}}}
    )
    assert resolve_output_dir(spec, None, volume_root=tmp_path) == tmp_path / "results" / "march"
    assert resolve_output_dir(spec, tmp_path / "x", volume_root=tmp_path) == tmp_path / "x"
    bad = DocumentJobSpec.model_validate(
        {**SPEC, "output": {"volume": {"claimName": "results", "path": "../other"}}}
    )
    with pytest.raises(OutputError):
        resolve_output_dir(bad, None, volume_root=tmp_path)


def test_result_writer_keeps_names_unique_and_safe(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "out")
    assert writer.write_document("a.pdf", "one") == "a.pdf.md"
    assert writer.write_document("a.pdf", "two") == "a.pdf-2.md"
    assert writer.write_document("../../etc/passwd", "x") == "_.._etc_passwd.md"
    assert (tmp_path / "out" / "a.pdf-2.md").read_text() == "two"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def _size(summary: dict[str, object]) -> int:
    return len(json.dumps(summary, separators=(",", ":"), ensure_ascii=False).encode())


def test_summary_fits_4_kib_and_stays_valid_json() -> None:
    failures = [
        {
            "source": f"https://files.example/{'x' * 300}/{i}.pdf",
            "code": "corrupt_document",
            "message": "The PDF is damaged and cannot be read. " * 20,
        }
        for i in range(500)
    ]
    labels = Counter({f"label-{i:02d}-{'y' * 50}": 64 - i for i in range(64)})
    summary = build_summary(
        exit_code=0,
        documents=1000,
        done=500,
        failed=500,
        pages=12345,
        by_label=labels,
        output_path="/var/run/zopilot/volumes/results/" + "z" * 2000,
        failures=failures,
        message="m" * 3000,
    )
    assert _size(summary) <= 4096
    assert summary["truncated"] is True
    assert (summary["documents"], summary["done"], summary["failed"]) == (1000, 500, 500)
    assert summary["failures"], "the first failure reason is kept"
    assert sum(summary["byLabel"].values()) + summary.get("otherLabels", 0) == sum(labels.values())


def test_small_summary_is_untouched() -> None:
    summary = build_summary(
        exit_code=0,
        documents=2,
        done=2,
        failed=0,
        pages=3,
        by_label=Counter({"invoice": 2}),
        output_path="/out",
        failures=[],
    )
    assert "truncated" not in summary
    assert summary["byLabel"] == {"invoice": 2}


def test_an_unusable_output_path_is_a_clear_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="not a valid path"):
        ResultWriter(tmp_path / "a\x00b")
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OutputError, match="not writable"):
        ResultWriter(tmp_path / "file" / "out")
