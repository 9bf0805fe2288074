"""POST /classify: text (JSON) or an uploaded document (multipart) to one of the given labels."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from zopilot_worker.errors import BadRequest, EmptyDocument, InvalidLabels
from zopilot_worker.service.error_handling import UnsupportedMediaType
from zopilot_worker.service.routes.common import (
    error_responses,
    parse_int,
    parse_ocr,
    reject_unknown_fields,
)
from zopilot_worker.service.schemas import (
    FILE_ENCODING,
    ClassifyResponse,
    ClassifyTextRequest,
    DocumentSummary,
    validate_labels,
)
from zopilot_worker.service.state import ServiceState, StateDep
from zopilot_worker.service.uploads import media_type, read_json_body, read_upload_form

if TYPE_CHECKING:
    # Imported for types only: the classifier module pulls in torch/transformers.
    from zopilot_worker.classify import Classification

router = APIRouter(tags=["documents"])

FIELDS = {"labels", "ocr", "max_input_tokens"}

REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ClassifyTextRequest"}},
            "multipart/form-data": {
                "schema": {"$ref": "#/components/schemas/ClassifyForm"},
                "encoding": FILE_ENCODING,
            },
        },
    }
}


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Classify text or a document into one of the given labels",
    description="Either JSON `{text, labels, max_input_tokens?}`, or a multipart upload with a "
    "part `file` and `labels` (one field per label, or comma-separated), which is extracted "
    "first. Labels are scored by the model's log-likelihood; the answer is always one of them. "
    "At most ZOPILOT_WORKER_CLASSIFY_CONCURRENCY classifications run at once, "
    "ZOPILOT_WORKER_CLASSIFY_QUEUE_SIZE more wait; beyond that 503 with Retry-After.",
    responses=error_responses(400, 408, 413, 415, 422, 500, 503, 504),
    openapi_extra=REQUEST_BODY,
)
async def classify(request: Request, state: StateDep) -> ClassifyResponse:
    kind = media_type(request)
    if kind == "application/json":
        return await _classify_json(request, state)
    if kind == "multipart/form-data":
        return await _classify_upload(request, state)
    raise UnsupportedMediaType(
        "send application/json {text, labels} or multipart/form-data with 'file' and 'labels'"
    )


async def _classify_json(request: Request, state: ServiceState) -> ClassifyResponse:
    limiter = state.classify_limiter
    with state.upload_limiter.reading(limiter.endpoint):
        body = await read_json_body(request, max_bytes=state.settings.max_upload_bytes)
    payload = _parse_json(body)
    async with limiter.admit():
        started = time.perf_counter()
        result = await limiter.run(
            state.engine.classify_text,
            payload.text,
            payload.labels,
            max_input_tokens=payload.max_input_tokens,
        )
        elapsed = time.perf_counter() - started
    return ClassifyResponse(**_result_fields(result), elapsed_s=round(elapsed, 4))


async def _classify_upload(request: Request, state: ServiceState) -> ClassifyResponse:
    limiter = state.classify_limiter
    with state.upload_limiter.reading(limiter.endpoint):
        form = await read_upload_form(request, max_file_bytes=state.settings.max_upload_bytes)
    reject_unknown_fields(form.fields, FIELDS)
    labels = _form_labels(form.fields.get("labels", []))
    ocr = parse_ocr(form.first("ocr"))
    tokens = parse_int("max_input_tokens", form.first("max_input_tokens"), low=64, high=32768)
    upload = form.upload
    async with limiter.admit():
        started = time.perf_counter()
        # The extraction half counts against /extract's limits: it is the same CPU work.
        async with state.extract_limiter.admit():
            document = await state.extract_limiter.run(
                state.engine.extract, upload.data, upload.filename, upload.content_type, ocr=ocr
            )
        if not document.text.strip():
            pending = list(document.ocr_pending)
            hint = f" (pages {pending} need OCR)" if pending else ""
            raise EmptyDocument(f"no text could be extracted from {upload.filename}{hint}")
        result = await limiter.run(
            state.engine.classify_text, document.text, labels, max_input_tokens=tokens
        )
        elapsed = time.perf_counter() - started
    summary = DocumentSummary(
        name=document.name,
        kind=document.kind,
        pages=document.pages,
        ocr_pending=list(document.ocr_pending),
    )
    return ClassifyResponse(**_result_fields(result), elapsed_s=round(elapsed, 4), document=summary)


def _parse_json(body: bytes) -> ClassifyTextRequest:
    try:
        return ClassifyTextRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors
        )
        if any(e["type"] == "json_invalid" for e in errors):
            raise BadRequest(f"the body is not valid JSON: {message}") from None
        if any(e["loc"][:1] == ("labels",) for e in errors):
            raise InvalidLabels(message) from None
        if any(e["loc"][:1] == ("text",) and e["type"] == "string_too_short" for e in errors):
            raise EmptyDocument("text is empty") from None
        raise BadRequest(message) from None


def _form_labels(values: list[str]) -> list[str]:
    # One field per label, verbatim; a field with commas is a list (parts stripped).
    labels: list[str] = []
    for value in values:
        if "," in value:
            labels.extend(part.strip() for part in value.split(",") if part.strip())
        else:
            labels.append(value)
    try:
        return validate_labels(labels)
    except ValueError as exc:
        raise InvalidLabels(f"labels: {exc}") from None


def _result_fields(result: Classification) -> dict[str, Any]:
    return {
        "label": result.label,
        "scores": dict(result.scores),
        "model": result.model,
        "input_tokens": result.input_tokens,
        "truncated": result.truncated,
    }
