"""/classify with the tiny random Mixtral, loaded from a local model root like production."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from zopilot_worker.service import BackgroundServer, create_app
from zopilot_worker.settings import WorkerSettings
from zopilot_worker.testing.documents import make_docx, make_scanned_pdf

LABELS = ["invoice", "receipt", "contract", "other"]
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.fixture(scope="module")
def client(model_root: Path) -> Iterator[httpx.Client]:
    settings = WorkerSettings(
        model_root=model_root,
        classify_model="tiny-mixtral",
        quantization="none",
        device="cpu",
        load_model_on_start=True,
        run_doctor_on_start=False,
    )
    server = BackgroundServer(create_app(settings, doctor=None)).start()
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http
    server.stop()


def _assert_classification(body: dict[str, object], labels: list[str]) -> None:
    assert body["label"] in labels
    scores = body["scores"]
    assert isinstance(scores, dict)
    assert sorted(scores) == sorted(labels)
    assert math.isclose(sum(scores.values()), 1.0, abs_tol=1e-6)
    assert body["label"] == max(scores, key=scores.__getitem__)
    assert body["model"] == "tiny-mixtral"
    assert isinstance(body["input_tokens"], int) and body["input_tokens"] > 0


def test_classify_json_text(client: httpx.Client, wait_until: Callable[..., object]) -> None:
    wait_until(lambda: client.get("/ready").status_code == 200, what="model loaded")
    response = client.post(
        "/classify",
        json={"text": "Invoice number INV-1: amount due 1,250.00 EUR", "labels": LABELS},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    _assert_classification(body, LABELS)
    assert body["truncated"] is False
    assert body["document"] is None


def test_classify_truncates_at_max_input_tokens(client: httpx.Client) -> None:
    text = "Invoice line item consulting hours. " * 400
    response = client.post(
        "/classify", json={"text": text, "labels": LABELS[:2], "max_input_tokens": 64}
    )
    assert response.status_code == 200, response.text
    assert response.json()["truncated"] is True


def test_classify_uploaded_document(client: httpx.Client) -> None:
    docx = make_docx(None, "RECEIPT", ["Paid by card. Thank you for your purchase."])
    response = client.post(
        "/classify",
        files={"file": ("r.docx", docx, DOCX)},
        data={"labels": ["invoice", "receipt,contract"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    _assert_classification(body, ["invoice", "receipt", "contract"])
    assert body["document"]["kind"] == "docx"
    assert body["document"]["name"] == "r.docx"


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"text": "x", "labels": ["only-one"]}, 422, "invalid_labels"),
        ({"text": "x", "labels": ["a", "a"]}, 422, "invalid_labels"),
        ({"text": "x", "labels": ["a", " "]}, 422, "invalid_labels"),
        ({"text": "x", "labels": ["a,b", "c"]}, 422, "invalid_labels"),
        ({"text": "x", "labels": [" a", "b"]}, 422, "invalid_labels"),
        ({"text": "x", "labels": ["a\tb", "c"]}, 422, "invalid_labels"),
        ({"text": "x", "labels": ["x" * 64, "b"]}, 422, "invalid_labels"),
        ({"text": "x", "labels": [f"l{i}" for i in range(65)]}, 422, "invalid_labels"),
        ({"text": "", "labels": ["a", "b"]}, 400, "empty_document"),
        ({"labels": ["a", "b"]}, 400, "bad_request"),
        ({"text": "x", "labels": ["a", "b"], "max_input_tokens": 1}, 400, "bad_request"),
        ({"text": "x", "labels": ["a", "b"], "surprise": 1}, 400, "bad_request"),
    ],
)
def test_classify_rejects_bad_requests(
    client: httpx.Client, payload: dict[str, object], status: int, code: str
) -> None:
    response = client.post("/classify", json=payload)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_classify_rejects_invalid_json_and_other_media_types(client: httpx.Client) -> None:
    bad_json = client.post(
        "/classify", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "bad_request"
    text = client.post("/classify", content=b"hello", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    assert text.json()["error"]["code"] == "unsupported_media_type"


def test_classify_scan_without_text_layer_says_ocr_is_needed(client: httpx.Client) -> None:
    scan = make_scanned_pdf(["INVOICE 42"])
    response = client.post(
        "/classify",
        files={"file": ("scan.pdf", scan, "application/pdf")},
        data={"labels": "invoice,receipt", "ocr": "never"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "empty_document"
    assert "OCR" in error["message"]


def test_label_over_the_token_limit_is_refused_by_name(client: httpx.Client) -> None:
    # 20 characters (the schema allows 63) but ~80 byte tokens for this tokenizer.
    label = "\U0001f4c4" * 20
    response = client.post("/classify", json={"text": "Invoice 1", "labels": ["invoice", label]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_labels"
    assert label in error["message"] and "at most 32 tokens" in error["message"]
