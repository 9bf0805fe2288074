"""Writing a job's results: ``results.jsonl`` and one Markdown (or text) file per document.

Every file is written atomically: a temporary file in the same directory,
created with mode 0644 less the umask (group- and world-readable, unlike
``mkstemp``'s 0600, so a results volume shared with another pod or user can
be read), written, fsynced, renamed over the target, and the directory
fsynced; a reader (the user, a retry of the job) never sees half a file and a
crash never leaves an empty one.

Attempts are idempotent. results.jsonl holds one record per document, keyed
by ``document_id`` (stable across attempts, see ``DocumentRef.key``) and
stamped with ``job_fingerprint`` (a hash of the job spec). A new attempt
first reads the records an earlier attempt of the same spec left, skips the
documents they finished (done, or failed for a reason a retry cannot
change), and writes the union back: earlier records are kept, a retried
document's record replaces its earlier one. Records of a different spec (a
new job pointed at the same output directory) are replaced, as before.
results.jsonl is rewritten, throttled, as documents finish, so a job killed
halfway still leaves everything it (and every attempt before it) did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import Any

from zopilot_common.spec import DocumentJobSpec

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_CHARS = 180  # leaves room for a "-2" suffix and ".md" under the usual 255-byte limit
FILE_MODE = 0o644  # less the umask: readable by the group (and others) that share the volume
DOCUMENT_ID = "document_id"
FINGERPRINT = "job_fingerprint"
_PATH_FIELDS = ("markdown_path", "text_path")

log = logging.getLogger(__name__)


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


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a filesystem that cannot is only logged."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        log.debug("cannot open %s to fsync it: %s", directory, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.debug("cannot fsync %s: %s", directory, exc)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once, mode 0644 less the umask.

    ``durable``: fsync the file before the rename and the directory after it
    (results); False for files that only report progress.
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    fd = os.open(tmp, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def spec_fingerprint(spec: DocumentJobSpec) -> str:
    """A short hash of everything in the spec: equal for every attempt of one job."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _is_our_temp(name: str) -> bool:
    """A temporary file of :func:`atomic_write`: ``.<name>.<12 hex digits>.tmp``."""
    token = name[-16:-4]
    return (
        name.startswith(".")
        and name.endswith(".tmp")
        and len(name) > 18
        and name[-17] == "."
        and all(c in "0123456789abcdef" for c in token)
    )


def is_final(record: dict[str, Any]) -> bool:
    """Whether a recorded document needs no other attempt: done, or failed permanently."""
    error = record.get("error")
    return error is None or (isinstance(error, dict) and error.get("retriable") is False)


def safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:MAX_NAME_CHARS]
    return cleaned or "document"


class ResultWriter:
    """Collects result records and document files under ``directory`` (None: write nothing).

    Reads what earlier attempts wrote there first; see the module docstring.
    """

    def __init__(
        self, directory: Path | None, *, fingerprint: str = "", flush_interval_s: float = 2.0
    ) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        # document_id -> record, in first-seen order (records of this spec without an id are
        # kept as they were, under "unkeyed-<n>").
        self._records: dict[str, dict[str, Any]] = {}
        self._previous: dict[str, dict[str, Any]] = {}
        self._names: set[str] = set()
        self._flush_interval_s = flush_interval_s
        self._last_flush = 0.0
        self._dirty = False
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                probe = directory / f".zopilot-write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise OutputError(f"the output directory is not writable: {exc.strerror}") from None
            except ValueError as exc:  # a NUL byte in the claim or path
                raise OutputError(f"the output directory is not a valid path: {exc}") from None
            self._load_previous(directory)

    def _load_previous(self, directory: Path) -> None:
        for stale in directory.iterdir():
            if _is_our_temp(stale.name):
                stale.unlink(missing_ok=True)  # an earlier attempt died mid-write
        path = directory / RESULTS_FILE
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputError(f"cannot read the earlier {RESULTS_FILE}: {exc.strerror}") from None
        unreadable = other_job = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                unreadable += 1
                continue
            if not isinstance(record, dict):
                unreadable += 1
                continue
            if record.get(FINGERPRINT, "") != self.fingerprint:
                other_job += 1
                continue
            key = record.get(DOCUMENT_ID)
            if isinstance(key, str) and key:
                self._previous[key] = record
                self._records[key] = record
            else:
                self._records[f"unkeyed-{number}"] = record
            for field in _PATH_FIELDS:
                if isinstance(record.get(field), str):
                    self._names.add(record[field])
        if unreadable:
            log.warning("%d unreadable line(s) in the earlier %s dropped", unreadable, path)
        if other_job:
            log.warning("%d record(s) of another job spec in %s are replaced", other_job, path)
        log.info("resuming: %d record(s) from earlier attempts in %s", len(self._records), path)

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def previous(self, key: str) -> dict[str, Any] | None:
        """What an earlier attempt recorded for document ``key``, if anything."""
        return self._previous.get(key)

    def _unique(self, name: str, suffix: str) -> str:
        base = safe_name(name)
        candidate, n = f"{base}{suffix}", 1
        while candidate in self._names:
            n += 1
            candidate = f"{base}-{n}{suffix}"
        self._names.add(candidate)
        return candidate

    def write_document(
        self, name: str, content: str, *, suffix: str = ".md", key: str | None = None
    ) -> str | None:
        """Write one document's output; returns its path relative to the output directory.

        A document retried after an earlier attempt wrote its file (``key``) overwrites
        that file rather than leaving it behind under another name.
        """
        if self.directory is None:
            return None
        earlier = self._previous.get(key or "", {})
        reuse = [earlier.get(f) for f in _PATH_FIELDS]
        filename = next(
            (p for p in reuse if isinstance(p, str) and p.endswith(suffix) and "/" not in p),
            None,
        ) or self._unique(name, suffix)
        atomic_write(self.directory / filename, content.encode("utf-8"))
        return filename

    def add(self, record: dict[str, Any]) -> None:
        record.setdefault(FINGERPRINT, self.fingerprint)
        key = record.get(DOCUMENT_ID) or f"new-{len(self._records)}"
        self._records[key] = record
        self._dirty = True
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        if self.directory is None:
            return
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._records.values())
        atomic_write(self.directory / RESULTS_FILE, lines.encode("utf-8"))
        self._last_flush = time.monotonic()
        self._dirty = False

    def finish(self, summary: dict[str, Any]) -> None:
        self.flush()
        if self.directory is not None:
            text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
            atomic_write(self.directory / SUMMARY_FILE, text.encode("utf-8"))
