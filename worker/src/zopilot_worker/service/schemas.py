"""Request and response bodies of the HTTP API (also what /openapi.json documents)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

OcrMode = Literal["auto", "always", "never"]

MAX_LABELS = 64  # the CRD's limit; one forward pass scores them all
MAX_LABEL_CHARS = 63


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
    labels: list[str] = Field(
        min_length=2,
        max_length=MAX_LABELS,
        description="Candidate labels (2-64, unique); the answer is always one of them.",
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
    """Labels as the CRD allows them: 2-64 unique, non-blank, at most 63 characters."""
    cleaned = [label.strip() for label in labels]
    if len(cleaned) < 2 or len(cleaned) > MAX_LABELS:
        raise ValueError(f"give between 2 and {MAX_LABELS} labels, got {len(cleaned)}")
    if any(not label or len(label) > MAX_LABEL_CHARS for label in cleaned):
        raise ValueError(f"each label must have 1 to {MAX_LABEL_CHARS} characters")
    if len(set(cleaned)) != len(cleaned):
        raise ValueError("labels must be unique")
    return cleaned


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
    file: bytes = Field(description="The document.")
    ocr: OcrMode = Field(default="auto", description="auto: OCR only pages without text.")
    include_text: bool = Field(default=False, description="Also return plain text.")


class ClassifyForm(BaseModel):
    file: bytes = Field(description="The document; it is extracted first.")
    labels: list[str] = Field(
        min_length=2, max_length=MAX_LABELS, description="One field per label, or comma-separated."
    )
    ocr: OcrMode = "auto"
    max_input_tokens: int | None = Field(default=None, ge=64, le=32768)


OPENAPI_EXTRA_SCHEMAS: tuple[type[BaseModel], ...] = (
    ExtractForm,
    ClassifyForm,
    ClassifyTextRequest,
)
