"""Request and response bodies of the HTTP API (also what /openapi.json documents)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema
from zopilot_common.planner import MAX_LABEL_TOKENS, MAX_LABELS

OcrMode = Literal["auto", "always", "never"]

MIN_LABELS = 2
MAX_LABEL_CHARS = 63  # the CRD's limit
# A label: no commas (forms may send labels comma-separated, and the prompt
# lists them so), no C0/C1 control characters, no space (any Unicode white
# space, listed one by one) at either end. Written
# without \s or other classes whose meaning differs between Python's re and
# ECMA-262 (the dialect of JSON Schema), so every validator agrees with the
# service, which checks exactly this pattern with re.search.
_EDGE = r"[^ ,\x00-\x1f\x7f-\x9f\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
LABEL_PATTERN = rf"^{_EDGE}(?:[^,\x00-\x1f\x7f-\x9f]*{_EDGE})?$"
_LABEL_RE = re.compile(LABEL_PATTERN)
# OpenAPI custom string format of a label: the schema's constraints, and at
# most MAX_LABEL_TOKENS tokens of the model's tokenizer (which no JSON Schema
# keyword can state; the service answers 422 invalid_labels beyond).
LABEL_FORMAT = "zopilot-label"
LABEL_DESCRIPTION = (
    f"1-{MAX_LABEL_CHARS} characters, no commas or control characters, no space at either "
    f"end, and at most {MAX_LABEL_TOKENS} tokens of the model's tokenizer (format "
    f"{LABEL_FORMAT}; a longer label is refused with 422 invalid_labels naming it)."
)
Label = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_LABEL_CHARS,
        description=LABEL_DESCRIPTION,
        json_schema_extra={"pattern": LABEL_PATTERN, "format": LABEL_FORMAT},
    ),
]
LABELS_DESCRIPTION = (
    f"Candidate labels ({MIN_LABELS}-{MAX_LABELS}, unique); the answer is always one of them."
)

# The document types the service reads, as the multipart part's Content-Type
# (the bytes must be that type; the content decides, see extract.detect).
# A generic type (application/octet-stream) is accepted too when the bytes are one of these.
DOCUMENT_CONTENT_TYPES = (
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "text/html",
    "text/plain",
    "text/markdown",
    "text/csv",
)
FILE_ENCODING: dict[str, Any] = {"file": {"contentType": ", ".join(DOCUMENT_CONTENT_TYPES)}}
FILE_DESCRIPTION = (
    "The document: PDF (with a text layer, or OCR), DOCX, PPTX, XLSX, HTML or UTF-8 text, "
    "sent with its Content-Type (one of the request body's encoding.file.contentType). "
    "Images, legacy Office files and archives are refused with 415."
)


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. overloaded, corrupt_document")
    message: str = Field(description="What went wrong and what to change; safe to show a user.")


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorBody
    request_id: str = Field(description="Also in the X-Request-ID header; quote it in reports.")


class ExtractResponse(BaseModel):
    name: str = Field(description="The uploaded file name.")
    kind: str = Field(description="Detected document kind, e.g. pdf, docx, xlsx, pptx, html, text.")
    pages: int = Field(description="Pages (or sheets/slides) extracted.")
    markdown: str
    text: str | None = Field(
        default=None, description="Plain text; present only when include_text=true was sent."
    )
    ocr_pages: list[int] = Field(description="1-based pages whose text came from OCR.")
    ocr_pending: list[int] = Field(
        description="1-based pages without a usable text layer that were not OCR'd "
        "(ocr=never, or no OCR model on this worker)."
    )
    warnings: list[str]
    engine: str = Field(description="Which extraction path produced the result.")
    elapsed_s: float = Field(description="Seconds of work, not counting the upload.")


class ClassifyTextRequest(BaseModel):
    """JSON body of POST /classify."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="The document text to classify.")
    labels: list[Label] = Field(
        min_length=MIN_LABELS,
        max_length=MAX_LABELS,
        description=LABELS_DESCRIPTION,
        json_schema_extra={"uniqueItems": True},
    )
    max_input_tokens: int | None = Field(
        default=None,
        ge=64,
        le=32768,
        description="Tokens of text the model reads; the rest is truncated. "
        "Default: the worker's ZOPILOT_WORKER_MAX_INPUT_TOKENS.",
    )

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, labels: list[str]) -> list[str]:
        return validate_labels(labels)


def validate_labels(labels: list[str]) -> list[str]:
    """Labels exactly as the schema states them (see LABEL_PATTERN), else ValueError."""
    if not MIN_LABELS <= len(labels) <= MAX_LABELS:
        raise ValueError(f"give between {MIN_LABELS} and {MAX_LABELS} labels, got {len(labels)}")
    for label in labels:
        if not 1 <= len(label) <= MAX_LABEL_CHARS:
            raise ValueError(
                f"label {label[:80]!r} has {len(label)} characters; 1 to {MAX_LABEL_CHARS} allowed"
            )
        if not _LABEL_RE.search(label):
            raise ValueError(
                f"label {label!r} has a comma, a control character or a space at either end"
            )
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"labels must be unique; repeated: {', '.join(repeated)}")
    return labels


class DocumentSummary(BaseModel):
    """The extracted document behind a multipart /classify."""

    name: str
    kind: str
    pages: int
    ocr_pending: list[int]


class ClassifyResponse(BaseModel):
    label: str = Field(description="The highest-scoring label; always one of the labels sent.")
    scores: dict[str, float] = Field(description="Calibrated probability per label; sums to 1.")
    model: str
    input_tokens: int = Field(description="Document tokens the model read.")
    truncated: bool = Field(description="True when the text was cut at max_input_tokens.")
    elapsed_s: float = Field(description="Seconds of work (extraction included), not the upload.")
    document: DocumentSummary | None = Field(
        default=None, description="Present when a file was uploaded and extracted first."
    )


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class CheckState(BaseModel):
    state: Literal["pending", "ok", "failed", "skipped"]
    message: str = ""


class ReadyResponse(BaseModel):
    ready: bool
    model: str
    model_loaded: bool
    checks: dict[str, CheckState] = Field(description="Startup checks: doctor, model.")


# Multipart bodies, for the OpenAPI document only: the routes parse multipart
# themselves (streaming, with a size limit) instead of letting FastAPI buffer it.
class ExtractForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(min_length=1, description=FILE_DESCRIPTION)
    ocr: OcrMode = Field(default="auto", description="auto: OCR only pages without text.")
    include_text: bool = Field(default=False, description="Also return plain text.")


class ClassifyForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(
        min_length=1, description=f"{FILE_DESCRIPTION} It is extracted, then classified."
    )
    labels: list[Label] = Field(
        min_length=MIN_LABELS,
        max_length=MAX_LABELS,
        description=f"{LABELS_DESCRIPTION} One form field per label (a field holding "
        "comma-separated labels is split at the commas).",
        json_schema_extra={"uniqueItems": True},
    )
    ocr: OcrMode = "auto"
    # Optional but never null: a form field has no null (omit it for the default).
    max_input_tokens: Annotated[int, Field(ge=64, le=32768)] | SkipJsonSchema[None] = Field(
        default=None,
        description="Tokens of text the model reads; omit for ZOPILOT_WORKER_MAX_INPUT_TOKENS.",
    )


OPENAPI_EXTRA_SCHEMAS: tuple[type[BaseModel], ...] = (
    ExtractForm,
    ClassifyForm,
    ClassifyTextRequest,
)
