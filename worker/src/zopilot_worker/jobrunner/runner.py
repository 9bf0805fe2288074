"""Processing a job's documents with the engine: fetch, extract, classify, record.

Fetch + extraction run in ``extract_concurrency`` threads (CPU and I/O bound,
like the service's /extract), classification runs one document at a time in
the calling thread (one model on one GPU, like the service's /classify), and
documents are recorded in the order of the spec. A bad document is recorded
as failed and the job goes on; only a model-level error (the GPU-memory gate,
a missing or broken model) stops it, since every later document would hit it
too.

Resume: documents an earlier attempt finished (see ``output.is_final``) are
not processed again; their earlier records count in this attempt's totals.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zopilot_common.spec import DocumentJobSpec, Task

from zopilot_worker.errors import (
    EmptyDocument,
    GPUMemoryUnavailable,
    GPUOutOfMemory,
    ModelLoadError,
    ModelNotFound,
    NotReady,
    OcrModelUnavailable,
    WorkerError,
)
from zopilot_worker.jobrunner.fetch import DocumentRef, Fetcher
from zopilot_worker.jobrunner.output import DOCUMENT_ID, ResultWriter, is_final
from zopilot_worker.jobrunner.report import ProgressReporter
from zopilot_worker.pipeline import Engine

if TYPE_CHECKING:
    from zopilot_worker.extract import ExtractedDocument

log = logging.getLogger(__name__)

# Errors about the model or the GPU, not about the document at hand.
JOB_FATAL_ERRORS = (
    GPUMemoryUnavailable,
    GPUOutOfMemory,
    ModelNotFound,
    ModelLoadError,
    NotReady,
    OcrModelUnavailable,
)
GENERIC_FAILURE = "internal error while processing this document; see the worker log"


@dataclass
class JobResult:
    documents: int
    done: int = 0
    failed_permanent: int = 0
    failed_retriable: int = 0
    pages: int = 0
    by_label: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    fatal: WorkerError | None = None
    resumed: int = 0  # finished by an earlier attempt, not processed again

    @property
    def failed(self) -> int:
        return self.failed_permanent + self.failed_retriable


class JobRunner:
    def __init__(
        self,
        spec: DocumentJobSpec,
        engine: Engine,
        fetcher: Fetcher,
        writer: ResultWriter,
        reporter: ProgressReporter,
        *,
        concurrency: int,
    ) -> None:
        self.spec = spec
        self.engine = engine
        self.fetcher = fetcher
        self.writer = writer
        self.reporter = reporter
        self.concurrency = max(1, concurrency)
        self.result: JobResult | None = None  # the running totals, readable if run() is cut short

    def _prepare(self, ref: DocumentRef) -> ExtractedDocument:
        """Fetch and extract one document (runs in the pool)."""
        fetched = self.fetcher.fetch(ref)
        return self.engine.extract(
            fetched.data, fetched.filename, fetched.content_type, ocr=self.spec.extract.ocr
        )

    def run(self, refs: list[DocumentRef]) -> JobResult:
        result = self.result = JobResult(documents=len(refs))
        todo = []
        for ref in refs:
            earlier = self.writer.previous(ref.key) if ref.key else None
            if earlier is not None and is_final(earlier):
                self._resume(ref, earlier, result)
            else:
                todo.append(ref)
        if result.resumed:
            log.info(
                "%d of %d document(s) were finished by an earlier attempt",
                result.resumed,
                len(refs),
            )
        self.reporter.resume(done=result.done, failed=result.failed)
        self.reporter.emit()
        pending: Iterator[DocumentRef] = iter(todo)
        window: deque[tuple[DocumentRef, Future[ExtractedDocument]]] = deque()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="job-extract")
        completed = False
        try:

            def submit_next() -> None:
                ref = next(pending, None)
                if ref is not None:
                    window.append((ref, pool.submit(self._prepare, ref)))

            # Two documents per thread in flight: threads never idle, memory stays bounded.
            for _ in range(2 * self.concurrency):
                submit_next()
            while window:
                ref, future = window.popleft()
                submit_next()
                self._finish(ref, future, result)
                if result.fatal is not None:
                    break
            completed = result.fatal is None
        finally:
            # Normally nothing is left; on a fatal error or a termination signal, queued
            # documents are dropped and running ones are not waited for.
            pool.shutdown(wait=completed, cancel_futures=True)
        return result

    @staticmethod
    def _resume(ref: DocumentRef, record: dict[str, Any], result: JobResult) -> None:
        result.resumed += 1
        error = record.get("error")
        if error is None:
            result.done += 1
            pages = record.get("pages")
            result.pages += pages if isinstance(pages, int) else 0
            label = record.get("label")
            if isinstance(label, str):
                result.by_label[label] += 1
            return
        result.failed_permanent += 1
        result.failures.append(
            {
                "source": ref.source,
                "code": str(error.get("code", "")),
                "message": str(error.get("message", "")),
            }
        )

    def _finish(
        self, ref: DocumentRef, future: Future[ExtractedDocument], result: JobResult
    ) -> None:
        record: dict[str, Any] = {
            DOCUMENT_ID: ref.key,
            "source": ref.source,
            "name": ref.name,
            "kind": None,
            "pages": 0,
            "label": None,
            "scores": None,
            "ocr_pending": [],
            "markdown_path": None,
            "error": None,
        }
        try:
            document = future.result()
            self._process(document, record, result)
        except WorkerError as exc:
            self._record_failure(ref, record, result, exc.code, exc.public_message, exc.retriable)
            if isinstance(exc, JOB_FATAL_ERRORS):
                result.fatal = exc
        except Exception:
            log.exception("unexpected error on %s", ref.source)
            self._record_failure(ref, record, result, "internal_error", GENERIC_FAILURE, False)
        else:
            result.done += 1
        self.writer.add(record)
        self.reporter.document_finished(ok=record["error"] is None)

    def _process(
        self, document: ExtractedDocument, record: dict[str, Any], result: JobResult
    ) -> None:
        key = record[DOCUMENT_ID]
        record.update(
            name=document.name,
            kind=document.kind,
            pages=document.pages,
            ocr_pages=list(document.ocr_pages),
            ocr_pending=list(document.ocr_pending),
            warnings=list(document.warnings),
        )
        result.pages += document.pages
        if Task.EXTRACT in self.spec.tasks:
            if self.spec.extract.format == "text":
                record["text_path"] = self.writer.write_document(
                    document.name, document.text, suffix=".txt", key=key
                )
            else:
                record["markdown_path"] = self.writer.write_document(
                    document.name, document.markdown, key=key
                )
        if Task.CLASSIFY in self.spec.tasks and self.spec.classify is not None:
            if not document.text.strip():
                pending = f" (pages {list(document.ocr_pending)} need OCR)"
                raise EmptyDocument(
                    f"no text to classify in {document.name}"
                    + (pending if document.ocr_pending else "")
                )
            options = self.spec.classify
            classification = self.engine.classify_text(
                document.text, list(options.labels), max_input_tokens=options.max_input_tokens
            )
            record.update(
                label=classification.label,
                scores=dict(classification.scores),
                model=classification.model,
                input_tokens=classification.input_tokens,
                truncated=classification.truncated,
            )
            result.by_label[classification.label] += 1

    @staticmethod
    def _record_failure(
        ref: DocumentRef,
        record: dict[str, Any],
        result: JobResult,
        code: str,
        message: str,
        retriable: bool,
    ) -> None:
        record["error"] = {"code": code, "message": message, "retriable": retriable}
        if retriable:
            result.failed_retriable += 1
        else:
            result.failed_permanent += 1
        result.failures.append({"source": ref.source, "code": code, "message": message})
        log.warning("document %s failed: %s: %s", ref.source, code, message)
