"""Writing a job's results: ``results.jsonl`` and one Markdown (or text) file per document.

Every file is written atomically (temporary file in the same directory, then
``os.replace``), so a reader (the user, a retry of the job) never sees half a
file. results.jsonl is rewritten, throttled, as documents finish, so a job
killed halfway still leaves the results it has.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from zopilot_common.spec import DocumentJobSpec

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_CHARS = 180  # leaves room for a "-2" suffix and ".md" under the usual 255-byte limit


class OutputError(Exception):
    """The output location is invalid or not writable (a permanent job failure)."""


def resolve_output_dir(
    spec: DocumentJobSpec, override: Path | None, *, volume_root: Path
) -> Path | None:
    """``--output`` wins; else spec.output.volume under the volume root; else no files."""
    if override is not None:
        return override
    if spec.output is None or spec.output.volume is None:
        return None
    volume = spec.output.volume
    relative = PurePosixPath(volume.path or ".")
    if relative.is_absolute() or ".." in relative.parts or "/" in volume.claim_name:
        raise OutputError(
            f"spec.output.volume.path {volume.path!r} must be relative to the claim, without '..'"
        )
    claim: str = volume.claim_name
    return volume_root / claim / relative


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:MAX_NAME_CHARS]
    return cleaned or "document"


class ResultWriter:
    """Collects result records and document files under ``directory`` (None: write nothing)."""

    def __init__(self, directory: Path | None, *, flush_interval_s: float = 2.0) -> None:
        self.directory = directory
        self._records: list[dict[str, Any]] = []
        self._names: set[str] = set()
        self._flush_interval_s = flush_interval_s
        self._last_flush = 0.0
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                probe = directory / f".zopilot-write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise OutputError(f"the output directory is not writable: {exc.strerror}") from None

    @property
    def records(self) -> list[dict[str, Any]]:
        return self._records

    def _unique(self, name: str, suffix: str) -> str:
        base = safe_name(name)
        candidate, n = f"{base}{suffix}", 1
        while candidate in self._names:
            n += 1
            candidate = f"{base}-{n}{suffix}"
        self._names.add(candidate)
        return candidate

    def write_document(self, name: str, content: str, *, suffix: str = ".md") -> str | None:
        """Write one document's output; returns its path relative to the output directory."""
        if self.directory is None:
            return None
        filename = self._unique(name, suffix)
        atomic_write(self.directory / filename, content.encode("utf-8"))
        return filename

    def add(self, record: dict[str, Any]) -> None:
        self._records.append(record)
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        if self.directory is None:
            return
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._records)
        atomic_write(self.directory / RESULTS_FILE, lines.encode("utf-8"))
        self._last_flush = time.monotonic()

    def finish(self, summary: dict[str, Any]) -> None:
        self.flush()
        if self.directory is not None:
            text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
            atomic_write(self.directory / SUMMARY_FILE, text.encode("utf-8"))
