"""Property-based fuzzing: detection, every extractor and the markdown conversion.

Property: every input ends in a result or a ``WorkerError`` with a public
message, never another exception, within a per-input bound. The bound is a
generous safety net (hypothesis' ``deadline`` for the pure functions; the
pool's per-document timeout for the extractors), not a speed assertion.

The extractors are fuzzed with structure-aware mutations of a valid seed of
each kind: byte flips, insertions and truncation of the file, and, for
DOCX/PPTX/XLSX, the same mutations applied to the main XML part inside an
otherwise valid zip (random bytes alone would only ever exercise the zip
guard). They run through a real parsing pool, as in production.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zopilot_worker.errors import WorkerError
from zopilot_worker.extract import (
    SUPPORTED_EXTENSIONS,
    SUPPORTED_TYPES,
    ExtractedDocument,
    ExtractSettings,
    detect_kind,
)
from zopilot_worker.extract.isolation import ParsingPool, PoolLimits
from zopilot_worker.extract.text import markdown_to_text
from zopilot_worker.testing.documents import (
    make_docx,
    make_html,
    make_pptx,
    make_text_pdf,
    make_xlsx,
)

BOUND = timedelta(seconds=10)
KINDS = {"pdf", "docx", "pptx", "xlsx", "html", "text"}

_MAGIC = [
    b"",
    b"%PDF-1.7\n",
    b"PK\x03\x04",
    b"<!DOCTYPE html>",
    b"<html>",
    b"<!--",
    b"\xef\xbb\xbf",
]
_NAMES = st.one_of(
    st.sampled_from([f"doc{ext}" for ext in SUPPORTED_EXTENSIONS] + ["doc", "a.exe", ""]),
    st.text(max_size=40),
)
_TYPES = st.one_of(
    st.none(),
    st.sampled_from([*SUPPORTED_TYPES, "application/zip", "application/octet-stream"]),
    st.text(max_size=60),
)


@settings(max_examples=400, deadline=BOUND, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_MAGIC), st.binary(max_size=3000), _NAMES, _TYPES)
def test_detection_ends_in_a_kind_or_a_worker_error(
    magic: bytes, body: bytes, name: str, content_type: str | None
) -> None:
    try:
        assert detect_kind(magic + body, name, content_type) in KINDS
    except WorkerError as exc:
        assert exc.public_message


@settings(max_examples=400, deadline=BOUND)
@given(st.text(max_size=3000))
def test_markdown_conversion_always_returns_text(markdown: str) -> None:
    text = markdown_to_text(markdown)
    assert isinstance(text, str) and len(text) <= len(markdown)


# --- extractors -------------------------------------------------------------------------

SEEDS: dict[str, tuple[bytes, str, str | None]] = {
    "pdf": (make_text_pdf(["Invoice INV-7 due 10 EUR", "Page two"]), "s.pdf", None),
    "docx": (make_docx(None, "Memo", ["Alpha **b**"], [["k", "v"], ["a", 1]]), "s.docx", None),
    "pptx": (make_pptx(None, [("Slide", "Body")]), "s.pptx", None),
    "xlsx": (make_xlsx(None, {"S": [["k", "v"], ["a", 1]]}), "s.xlsx", None),
    "html": (make_html(None, "Page", ["Para <b>x</b>"]), "s.html", None),
    "text": (b"# Title\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n*em* [l](u)\n", "s.md", None),
}
MAIN_PART = {
    "docx": "word/document.xml",
    "pptx": "ppt/slides/slide1.xml",
    "xlsx": "xl/worksheets/sheet1.xml",
}

# One mutation: (relative position 0..1, operation, payload).
_MUTATION = st.tuples(
    st.floats(0, 1),
    st.sampled_from(["flip", "insert", "delete", "truncate"]),
    st.binary(min_size=1, max_size=64),
)


def _mutate(data: bytes, mutations: list[tuple[float, str, bytes]]) -> bytes:
    out = bytearray(data)
    for where, operation, payload in mutations:
        at = int(where * max(len(out) - 1, 0))
        if operation == "flip" and out:
            out[at] ^= payload[0] or 1
        elif operation == "insert":
            out[at:at] = payload
        elif operation == "delete":
            del out[at : at + len(payload)]
        elif operation == "truncate":
            del out[at:]
    return bytes(out)


def _mutate_part(data: bytes, part: str, mutations: list[tuple[float, str, bytes]]) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            body = source.read(info)
            target.writestr(
                info.filename, _mutate(body, mutations) if info.filename == part else body
            )
    return out.getvalue()


@pytest.fixture(scope="module")
def pool() -> Iterator[ParsingPool]:
    pool = ParsingPool(
        ExtractSettings(), PoolLimits(processes=2, timeout_s=60, memory_limit_mib=3072)
    )
    yield pool
    pool.close()
    assert pool.pids == []


@settings(
    max_examples=150,
    deadline=None,  # the pool's per-document timeout is the bound here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(sorted(SEEDS)),
    inside=st.booleans(),
    mutations=st.lists(_MUTATION, min_size=1, max_size=6),
)
def test_every_extractor_ends_in_a_document_or_a_worker_error(
    pool: ParsingPool, kind: str, inside: bool, mutations: list[tuple[float, str, bytes]]
) -> None:
    data, name, content_type = SEEDS[kind]
    if inside and kind in MAIN_PART:
        data = _mutate_part(data, MAIN_PART[kind], mutations)
    else:
        data = _mutate(data, mutations)
    try:
        document = pool.extract(data, name, content_type)
    except WorkerError as exc:
        assert exc.public_message and 400 <= exc.http_status < 600
        assert exc.code not in ("parsing_timeout", "parser_crashed"), exc.public_message
        return
    assert isinstance(document, ExtractedDocument)
    assert document.kind in KINDS and document.pages >= 1
