"""Domain errors of the worker, each with a stable code and a public message.

The HTTP service maps them to status codes in one exception handler; the job
runner maps ``retriable`` to its exit codes. ``public_message`` is safe to show
a client; anything internal (tracebacks, paths) stays in the logs.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class. Subclasses fix ``code``, ``http_status`` and ``retriable``."""

    code: str = "internal_error"
    http_status: int = 500
    retriable: bool = False

    def __init__(self, public_message: str, *, detail: str | None = None) -> None:
        super().__init__(public_message)
        self.public_message = public_message
        # detail: for logs only, never sent to clients.
        self.detail = detail


class BadRequest(WorkerError):
    code = "bad_request"
    http_status = 400


class EmptyDocument(WorkerError):
    code = "empty_document"
    http_status = 400


class UnsupportedDocumentType(WorkerError):
    code = "unsupported_document_type"
    http_status = 415


class DocumentTooLarge(WorkerError):
    code = "document_too_large"
    http_status = 413


class CorruptDocument(WorkerError):
    """The bytes do not parse as the declared/detected type (or are hostile, e.g. a zip bomb)."""

    code = "corrupt_document"
    http_status = 422


class InvalidLabels(WorkerError):
    code = "invalid_labels"
    http_status = 422


class ModelNotFound(WorkerError):
    """The model directory is missing or incomplete (weights are mounted, never downloaded)."""

    code = "model_not_found"
    http_status = 503


class ModelLoadError(WorkerError):
    code = "model_load_failed"
    http_status = 503


class GPUMemoryUnavailable(WorkerError):
    """The GPU-memory gate refused to load or run a model now; try again later."""

    code = "gpu_memory_unavailable"
    http_status = 503
    retriable = True


class GPUOutOfMemory(WorkerError):
    """CUDA ran out of memory while loading or running a model: the job's memory
    plan was too small for this model/input. The job runner exits with
    EXIT_GPU_OOM so the operator re-plans the next attempt with more memory."""

    code = "gpu_out_of_memory"
    http_status = 503
    retriable = True


class Overloaded(WorkerError):
    """The endpoint's concurrency limit and bounded queue are full."""

    code = "overloaded"
    http_status = 503
    retriable = True

    def __init__(self, public_message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(public_message)
        self.retry_after_s = retry_after_s


class NotReady(WorkerError):
    code = "not_ready"
    http_status = 503
    retriable = True


class Unauthorized(WorkerError):
    """No or a wrong bearer token on a route that needs one (ZOPILOT_WORKER_API_TOKEN)."""

    code = "unauthorized"
    http_status = 401

    def __init__(self, public_message: str, *, www_authenticate: str = "Bearer") -> None:
        super().__init__(public_message)
        self.www_authenticate = www_authenticate


class RequestBodyTimeout(WorkerError):
    """The client did not send its request body within the body deadline."""

    code = "request_body_timeout"
    http_status = 408


class RequestDeadlineExceeded(WorkerError):
    """The request was not answered within the whole-request deadline."""

    code = "deadline_exceeded"
    http_status = 504
    retriable = True


class ClientDisconnected(WorkerError):
    """The client went away before its request was read or answered; nobody gets the answer.

    499 is nginx's "client closed request"; it only appears in logs and metrics.
    """

    code = "client_disconnected"
    http_status = 499


class FetchError(WorkerError):
    """A job input could not be fetched. Retriable unless the source is definitively wrong."""

    code = "fetch_failed"
    http_status = 502

    def __init__(self, public_message: str, *, retriable: bool, detail: str | None = None) -> None:
        super().__init__(public_message, detail=detail)
        self.retriable = retriable


class ParsingLimitExceeded(WorkerError):
    """A document needed more time or memory to parse than a parsing process is given.

    Parsing runs in a separate process per document (``extract/isolation.py``);
    the limit ended that process, not the service. Not retriable: the same
    bytes would hit the same limit.
    """

    code = "parsing_limit_exceeded"
    http_status = 422


class ParsingTimeout(ParsingLimitExceeded):
    code = "parsing_timeout"


class ParsingMemoryExceeded(ParsingLimitExceeded):
    code = "parsing_memory_exceeded"


class ParserCrashed(WorkerError):
    """The parser (PDFium is C code) crashed on this document; only its process died."""

    code = "parser_crashed"
    http_status = 422


class ParsingUnavailable(WorkerError):
    """No parsing process could be started (e.g. the process limit is reached); try later."""

    code = "parsing_unavailable"
    http_status = 503
    retriable = True


class FetchRefused(FetchError):
    """A URL (or one of its redirects) is not allowed: wrong scheme, a host outside the
    allow-list, or an address in a refused range (SSRF protection). Never retried."""

    code = "fetch_refused"
    http_status = 403

    def __init__(self, public_message: str, *, detail: str | None = None) -> None:
        super().__init__(public_message, retriable=False, detail=detail)


class OcrModelUnavailable(WorkerError):
    """The OCR model failed to load for a reason other than GPU memory; the next use
    tries again (a flaky volume, a half-copied model)."""

    code = "ocr_model_load_failed"
    http_status = 503
    retriable = True
