"""Bounded reading of request bodies: multipart uploads and JSON.

Nothing here reads an unbounded body. A declared Content-Length over the
limit is refused (413) before a byte is read; otherwise the body stream is
counted as it arrives and reading stops with 413 as soon as the count passes
the limit (chunked uploads declare no length). Multipart parsing is
Starlette's (python-multipart) over that counted stream: one file part,
a few small text fields.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from zopilot_worker.errors import BadRequest, DocumentTooLarge, EmptyDocument
from zopilot_worker.service.error_handling import UnsupportedMediaType

# Multipart framing (boundaries, part headers) and the small text fields ride
# on top of the file itself; 64 KiB covers them with room to spare.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 16 * 1024
MAX_FIELDS = 80  # e.g. 64 repeated `labels` fields plus options


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class UploadForm:
    upload: Upload
    fields: dict[str, list[str]] = field(default_factory=dict)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _too_large(limit: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"the document is larger than this worker's limit of {limit} bytes "
        f"({limit / 1024 / 1024:.0f} MiB); split it or submit a DocumentJob"
    )


def _check_declared_length(request: Request, limit: int, reported_limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadRequest("Content-Length is not a number") from None
    if length > limit:
        raise _too_large(reported_limit)


async def _counted(
    request: Request, limit: int, reported_limit: int
) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(reported_limit)
        yield chunk


async def read_json_body(request: Request, *, max_bytes: int) -> bytes:
    """The whole body, at most ``max_bytes`` (413 beyond)."""
    _check_declared_length(request, max_bytes, max_bytes)
    chunks = [chunk async for chunk in _counted(request, max_bytes, max_bytes)]
    return b"".join(chunks)


async def read_upload_form(request: Request, *, max_file_bytes: int) -> UploadForm:
    """Parse a multipart/form-data body with exactly one file part named ``file``."""
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType(
            "send the document as multipart/form-data with a part named 'file'"
        )
    body_limit = max_file_bytes + FORM_OVERHEAD_BYTES
    _check_declared_length(request, body_limit, max_file_bytes)
    parser = MultiPartParser(
        request.headers,
        _counted(request, body_limit, max_file_bytes),
        max_files=1,
        max_fields=MAX_FIELDS,
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart body: {exc.message}") from None
    try:
        upload: UploadFile | None = None
        fields: dict[str, list[str]] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "file":
                    raise BadRequest(f"unexpected file part {name!r}; name the file part 'file'")
                upload = value
            else:
                fields.setdefault(name, []).append(value)
        if upload is None:
            raise BadRequest("missing the file part: send the document in a part named 'file'")
        # Bounded: the counted stream stopped the parser at the limit.
        data = await upload.read()
        if len(data) > max_file_bytes:
            raise _too_large(max_file_bytes)
        if not data:
            raise EmptyDocument("the uploaded file is empty")
        return UploadForm(Upload(upload.filename or "document", upload.content_type, data), fields)
    finally:
        await form.close()
