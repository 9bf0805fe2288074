"""What the job tells the outside while and after it runs.

- progress: one JSON line per finished document on stdout
  (``{"event":"progress","done":k,"failed":f,"documents":n}``), the same object
  in ``--progress-file`` (atomically replaced; the local pod runner reads it),
  and the ``zopilot_worker_job_documents`` gauges;
- the summary: at most 4 KiB of JSON in the termination-message file, which
  Kubernetes puts in the pod status and the operator copies into the job's
  status. Kubernetes truncates that file at 4096 bytes, which would cut the
  JSON mid-way; so the summary is shrunk on purpose, dropping detail in order
  of value, and always stays valid JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from zopilot_worker.jobrunner.output import atomic_write
from zopilot_worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

TERMINATION_MESSAGE_LIMIT = 4096
MAX_FAILURES_LISTED = 10
_SHORT_MESSAGE = 160


def _size(summary: dict[str, Any]) -> int:
    return len(json.dumps(summary, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_summary(
    *,
    exit_code: int,
    documents: int,
    done: int,
    failed: int,
    pages: int,
    by_label: Counter[str],
    output_path: str | None,
    failures: list[dict[str, str]],
    message: str = "",
    resumed: int = 0,
    limit: int = TERMINATION_MESSAGE_LIMIT,
) -> dict[str, Any]:
    """The job summary, shrunk to fit ``limit`` bytes of compact JSON."""
    summary: dict[str, Any] = {
        "exitCode": exit_code,
        "documents": documents,
        "done": done,
        "failed": failed,
        "pages": pages,
        "byLabel": dict(by_label.most_common()),
        "outputPath": output_path,
        "failures": failures[:MAX_FAILURES_LISTED],
    }
    if resumed:
        summary["resumed"] = resumed  # of done + failed: finished by earlier attempts
    if message:
        summary["message"] = message
    if len(failures) > MAX_FAILURES_LISTED:
        summary["moreFailures"] = len(failures) - MAX_FAILURES_LISTED
    if _size(summary) <= limit:
        return summary
    summary["truncated"] = True
    # 1. Shorter failure messages and sources, then fewer failures (keep the first).
    summary["failures"] = [
        {k: _clip(v, _SHORT_MESSAGE) for k, v in f.items()} for f in summary["failures"]
    ]
    while _size(summary) > limit and len(summary["failures"]) > 1:
        summary["failures"].pop()
        summary["moreFailures"] = summary.get("moreFailures", 0) + 1
    # 2. Fewer labels: the most frequent stay, the rest are summed up.
    labels = list(summary["byLabel"].items())
    while _size(summary) > limit and len(labels) > 1:
        labels.pop()
        summary["byLabel"] = dict(labels)
        summary["otherLabels"] = sum(by_label.values()) - sum(n for _, n in labels)
    # 3. Clip the free-text fields hard.
    for key in ("message", "outputPath"):
        if _size(summary) > limit and summary.get(key):
            summary[key] = _clip(summary[key], 256)
    if _size(summary) > limit:
        summary = {k: summary[k] for k in ("exitCode", "documents", "done", "failed", "pages")}
        summary["truncated"] = True
    return summary


def write_termination_message(path: Path, summary: dict[str, Any]) -> None:
    """Write the summary; a missing /dev/termination-log (local runs) only logs a warning."""
    data = json.dumps(summary, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    try:
        # Not atomic on purpose: /dev/termination-log is a bind-mounted file, not replaceable.
        path.write_bytes(data)
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc.strerror)


class ProgressReporter:
    """Progress as JSON lines on ``stream``, in an optional file, and in metrics."""

    def __init__(
        self,
        documents: int,
        *,
        metrics: WorkerMetrics,
        progress_file: Path | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.documents = documents
        self.done = 0
        self.failed = 0
        self._metrics = metrics
        self._file = progress_file
        self._stream = stream or sys.stdout
        self._metrics.job_documents.labels(state="total").set(documents)

    def resume(self, *, done: int, failed: int) -> None:
        """Start from the documents an earlier attempt finished."""
        self.done, self.failed = done, failed

    def document_finished(self, *, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self.emit()

    def emit(self) -> None:
        event = {
            "event": "progress",
            "done": self.done,
            "failed": self.failed,
            "documents": self.documents,
        }
        self._metrics.job_documents.labels(state="done").set(self.done)
        self._metrics.job_documents.labels(state="failed").set(self.failed)
        line = json.dumps(event, separators=(",", ":"))
        print(line, file=self._stream, flush=True)
        if self._file is not None:
            try:
                atomic_write(self._file, (line + "\n").encode(), durable=False)
            except OSError as exc:
                log.warning("cannot update the progress file %s: %s", self._file, exc.strerror)
