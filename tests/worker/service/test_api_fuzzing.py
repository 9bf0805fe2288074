"""schemathesis against the live service: no server errors, and the schema is the truth.

The service runs under real uvicorn (tiny random Mixtral on CPU, auth on) and
schemathesis generates requests from its /openapi.json, schema-valid and
schema-invalid ones. Over at least MIN_REQUESTS requests:

- no answer is a 5xx (``not_a_server_error``);
- no schema-valid request is refused (``positive_data_acceptance``): the
  schema states every constraint the service enforces (label count, length,
  characters and uniqueness; the accepted document types; option enums);
- answers match their documented status codes, content types and bodies.

Two constraints no JSON Schema keyword can state are stated as the schema
says: a document's bytes must be of the Content-Type its part declares
(``encoding.file.contentType``), and a label is a ``zopilot-label`` (at most
32 tokens). Schemathesis is taught both, as its docs describe: a generator of
real documents per declared media type, and one for the label format.

Deterministic: hypothesis derandomized, no example database.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.formats import unregister_string_format
from schemathesis.specs.openapi.media_types import unregister_all
from zopilot_worker.service import BackgroundServer, create_app
from zopilot_worker.service.schemas import DOCUMENT_CONTENT_TYPES, LABEL_FORMAT
from zopilot_worker.settings import WorkerSettings
from zopilot_worker.testing import documents

pytestmark = pytest.mark.slow

TOKEN = "fuzzing-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIN_REQUESTS = 500
CHECKS = [
    not_a_server_error,
    positive_data_acceptance,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

_WORD = st.from_regex(r"[A-Za-z]{3,12}", fullmatch=True)
_TEXT = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=0, max_size=300
)
# Text documents: a word, so there is always text to classify, then anything printable.
_PLAIN = st.builds(lambda word, rest: f"{word} {rest}", _WORD, _TEXT)


def _html(text: str) -> bytes:
    return f"<!DOCTYPE html><html><body><p>{html.escape(text)}</p></body></html>".encode()


def _document_strategies() -> dict[str, st.SearchStrategy[bytes]]:
    """Real documents of every declared type, each with some text."""
    ooxml = "application/vnd.openxmlformats-officedocument"
    pdfs = [documents.make_text_pdf([f"Invoice {i}: amount due {i}0 EUR."]) for i in range(3)]
    docx = [documents.make_docx(None, "Invoice", [f"Amount due {i} EUR."]) for i in range(2)]
    pptx = [documents.make_pptx(None, [("Receipt", f"Paid {i} EUR")]) for i in range(2)]
    xlsx = [documents.make_xlsx(None, {"Items": [["item", "price"], ["tea", i]]}) for i in (2, 3)]
    text = _PLAIN.map(str.encode)
    return {
        "application/pdf": st.sampled_from(pdfs),
        f"{ooxml}.wordprocessingml.document": st.sampled_from(docx),
        f"{ooxml}.presentationml.presentation": st.sampled_from(pptx),
        f"{ooxml}.spreadsheetml.sheet": st.sampled_from(xlsx),
        "text/html": _PLAIN.map(_html),
        "text/plain": text,
        "text/markdown": text,
        "text/csv": text,
    }


# A zopilot-label: the schema's pattern, and few enough characters that even
# 4-byte characters stay within 32 tokens of a byte-level tokenizer.
_LABEL = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters=","),
    min_size=1,
    max_size=7,
).filter(lambda label: label.strip() == label)


@pytest.fixture(scope="module")
def live_url(model_root: Path) -> Iterator[str]:
    settings_ = WorkerSettings(
        model_root=model_root,
        classify_model="tiny-mixtral",
        quantization="none",
        device="cpu",
        load_model_on_start=True,
        run_doctor_on_start=False,
        api_token=TOKEN,
        # One request at a time from schemathesis; a queue keeps it from ever seeing 503.
        classify_queue_size=8,
    )
    strategies = _document_strategies()
    assert set(strategies) == set(DOCUMENT_CONTENT_TYPES)
    for media_type, strategy in strategies.items():
        schemathesis.openapi.media_type(media_type, strategy)
    schemathesis.openapi.format(LABEL_FORMAT, _LABEL)
    server = BackgroundServer(create_app(settings_, doctor=None)).start()
    try:
        # /ready is 503 until the model is loaded, and a 503 is a server error to schemathesis.
        with httpx.Client(base_url=server.url, timeout=60) as client:
            deadline = time.monotonic() + 300
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "the model did not load within 300 s"
                time.sleep(0.05)
        yield server.url
    finally:
        server.stop()
        unregister_all()
        unregister_string_format(LABEL_FORMAT)


# (schemathesis.pytest.from_fixture needs a pytest internal that pytest 9 removed,
# so the operations are driven here with hypothesis directly.)
EXAMPLES = {
    (GenerationMode.POSITIVE, "POST"): 220,
    (GenerationMode.NEGATIVE, "POST"): 60,
    # The GET routes take no input: one case each, and nothing to make invalid.
    (GenerationMode.POSITIVE, "GET"): 5,
    (GenerationMode.NEGATIVE, "GET"): 0,
}


def _fuzz(operation: Any, mode: GenerationMode, live_url: str, sent: Counter[str]) -> None:
    """Hypothesis over one operation's cases in one generation mode; raises on a failed check."""
    examples = EXAMPLES[(mode, operation.method.upper())]
    if not examples:
        return

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        sent[f"{operation.label} {mode.value}"] += 1
        # A generous per-request bound: 2 shared cores, first use of a parser imports it.
        case.call_and_validate(base_url=live_url, headers=AUTH, checks=CHECKS, timeout=300)

    run()


def test_schemathesis_finds_no_server_error_and_no_valid_request_refused(live_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /extract", "POST /classify"}
    sent: Counter[str] = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, live_url, sent)
    assert sum(sent.values()) >= MIN_REQUESTS, dict(sent)
    for route in ("POST /extract", "POST /classify"):
        assert sent[f"{route} positive"] >= 100, dict(sent)
