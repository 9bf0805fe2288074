"""Hostile and broken uploads against the real engine: a clear 4xx each, and the server lives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from zopilot_worker.service import create_app
from zopilot_worker.settings import WorkerSettings
from zopilot_worker.testing.documents import (
    make_corrupt_pdf,
    make_docx,
    make_text_pdf,
    make_zip_bomb_docx,
)

MIB = 1024 * 1024
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[httpx.Client]:
    # One real server for the module: the point is that it survives every case below.
    from zopilot_worker.service import BackgroundServer

    settings = WorkerSettings(
        model_root=tmp_path_factory.mktemp("models"),
        classify_model="tiny-mixtral",
        quantization="none",
        load_model_on_start=False,
        run_doctor_on_start=False,
        max_upload_bytes=2 * MIB,
    )
    server = BackgroundServer(create_app(settings, doctor=None)).start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
    server.stop()


def _upload(client: httpx.Client, name: str, data: bytes, content_type: str) -> httpx.Response:
    return client.post("/extract", files={"file": (name, data, content_type)})


def _assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def _still_serving(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    pdf = make_text_pdf(["Invoice INV-7: amount due 10 EUR"])
    ok = _upload(client, "ok.pdf", pdf, "application/pdf")
    assert ok.status_code == 200, ok.text
    assert "INV-7" in ok.json()["markdown"]


HOSTILE: dict[str, tuple[Callable[[httpx.Client], httpx.Response], int, str]] = {
    "corrupt pdf": (
        lambda c: _upload(c, "broken.pdf", make_corrupt_pdf(), "application/pdf"),
        422,
        "corrupt_document",
    ),
    "docx zip bomb": (
        lambda c: _upload(c, "bomb.docx", make_zip_bomb_docx(), DOCX),
        422,
        "corrupt_document",
    ),
    "oversized upload": (
        lambda c: _upload(c, "big.txt", b"a" * (3 * MIB), "text/plain"),
        413,
        "document_too_large",
    ),
    "oversized chunked body without length": (
        lambda c: c.post(
            "/classify",
            content=iter([b"x" * MIB] * 4),
            headers={"content-type": "application/json"},
        ),
        413,
        "document_too_large",
    ),
    "request not multipart": (
        lambda c: c.post("/extract", json={"file": "aGVsbG8="}),
        415,
        "unsupported_media_type",
    ),
    "png disguised as pdf": (
        lambda c: _upload(c, "scan.pdf", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "application/pdf"),
        415,
        "unsupported_document_type",
    ),
    "executable": (
        lambda c: _upload(c, "setup.exe", b"\x7fELF" + b"\0" * 64, "application/octet-stream"),
        415,
        "unsupported_document_type",
    ),
    "empty file": (
        lambda c: _upload(c, "empty.pdf", b"", "application/pdf"),
        400,
        "empty_document",
    ),
    "no file part": (
        lambda c: c.post("/extract", files={"other": ("a.txt", b"x", "text/plain")}),
        400,
        "bad_request",
    ),
    "bad ocr option": (
        lambda c: c.post(
            "/extract", files={"file": ("a.txt", b"hi", "text/plain")}, data={"ocr": "maybe"}
        ),
        400,
        "bad_request",
    ),
    "broken multipart": (
        lambda c: c.post(
            "/extract",
            content=b"--xyz\r\nnot a header\r\n\r\n",
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        ),
        400,
        "bad_request",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_gets_clear_4xx_and_server_keeps_serving(
    client: httpx.Client, case: str
) -> None:
    send, status, code = HOSTILE[case]
    _assert_error(send(client), status, code)
    _still_serving(client)


def test_docx_extracts(client: httpx.Client) -> None:
    docx = make_docx(None, "Services Agreement", ["Term: 12 months."], [["Party"], ["Acme"]])
    response = _upload(client, "agreement.docx", docx, DOCX)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "docx"
    assert "Services Agreement" in body["markdown"]
    assert body["text"] is None  # only with include_text=true


def test_unknown_route_and_method_use_the_error_shape(client: httpx.Client) -> None:
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.get("/extract"), 405, "method_not_allowed")
