"""POST /extract: one uploaded document to Markdown (and text)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from zopilot_worker.service.routes.common import (
    error_responses,
    parse_bool,
    parse_ocr,
    reject_unknown_fields,
)
from zopilot_worker.service.schemas import FILE_ENCODING, ExtractResponse
from zopilot_worker.service.state import StateDep
from zopilot_worker.service.uploads import read_upload_form

router = APIRouter(tags=["documents"])

FIELDS = {"ocr", "include_text"}

REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"$ref": "#/components/schemas/ExtractForm"},
                "encoding": FILE_ENCODING,
            }
        },
    }
}


@router.post(
    "/extract",
    response_model=ExtractResponse,
    summary="Extract a document (PDF, DOCX, XLSX, PPTX, HTML, text) to Markdown",
    description="Multipart upload: a part `file` with the document, optional fields `ocr` "
    "(auto|always|never; auto OCRs only pages without a text layer) and `include_text`. "
    "At most ZOPILOT_WORKER_EXTRACT_CONCURRENCY extractions run at once, "
    "ZOPILOT_WORKER_EXTRACT_QUEUE_SIZE more wait; beyond that the answer is 503 with "
    "Retry-After.",
    responses=error_responses(400, 408, 413, 415, 422, 500, 503, 504),
    openapi_extra=REQUEST_BODY,
)
async def extract(request: Request, state: StateDep) -> ExtractResponse:
    limiter = state.extract_limiter
    # The body first (bounded by its deadline), then a place: slow uploads never hold one.
    with state.upload_limiter.reading(limiter.endpoint):
        form = await read_upload_form(request, max_file_bytes=state.settings.max_upload_bytes)
    reject_unknown_fields(form.fields, FIELDS)
    ocr = parse_ocr(form.first("ocr"))
    include_text = parse_bool("include_text", form.first("include_text"))
    upload = form.upload
    async with limiter.admit():
        started = time.perf_counter()
        document = await limiter.run(
            state.engine.extract, upload.data, upload.filename, upload.content_type, ocr=ocr
        )
        elapsed = time.perf_counter() - started
    return ExtractResponse(
        name=document.name,
        kind=document.kind,
        pages=document.pages,
        markdown=document.markdown,
        text=document.text if include_text else None,
        ocr_pages=list(document.ocr_pages),
        ocr_pending=list(document.ocr_pending),
        warnings=list(document.warnings),
        engine=document.engine,
        elapsed_s=round(elapsed, 4),
    )
