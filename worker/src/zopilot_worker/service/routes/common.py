"""Helpers shared by the document routes: documented error answers, form field parsing."""

from __future__ import annotations

from typing import Any, cast

from zopilot_worker.errors import BadRequest
from zopilot_worker.service.schemas import ErrorResponse, OcrMode

_ERROR_DESCRIPTIONS = {
    400: "Malformed request or empty document (codes bad_request, empty_document).",
    408: "The request body did not arrive within ZOPILOT_WORKER_BODY_TIMEOUT_S "
    "(request_body_timeout).",
    413: "Document larger than the worker's upload limit (document_too_large).",
    415: "Unsupported request content type or document type "
    "(unsupported_media_type, unsupported_document_type).",
    422: "The document does not parse or is hostile, e.g. a zip bomb (corrupt_document); "
    "or invalid labels (invalid_labels).",
    500: "Unexpected error; the body carries only a request id (internal_error).",
    503: "Busy: queue full or too many uploads at once (overloaded), GPU memory unavailable, "
    "or model not ready/loadable. Retriable ones carry a Retry-After header.",
    504: "No answer within ZOPILOT_WORKER_REQUEST_TIMEOUT_S, queue and work included "
    "(deadline_exceeded); retry later.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting the JSON error body for these statuses."""
    return {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def parse_ocr(value: str | None) -> OcrMode:
    if value is None or value == "":
        return "auto"
    if value not in ("auto", "always", "never"):
        raise BadRequest(f"ocr must be auto, always or never, not {value!r}")
    return cast(OcrMode, value)


def parse_bool(name: str, value: str | None) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"{name} must be true or false, not {value!r}")


def parse_int(name: str, value: str | None, *, low: int, high: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {value!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {number}")
    return number


def reject_unknown_fields(fields: dict[str, list[str]], allowed: set[str]) -> None:
    # Strict on purpose: a misspelt option silently ignored is worse than a 400.
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown form field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
