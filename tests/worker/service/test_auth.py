"""Optional bearer token: protects the API and its docs, never the probes or /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from zopilot_worker.service import create_app
from zopilot_worker.service.auth import OPEN_PATHS
from zopilot_worker.settings import WorkerSettings

TOKEN = "s3cret-token-for-tests"
TEXT = {"file": ("a.txt", b"Invoice 1: amount due 10 EUR", "text/plain")}


@pytest.fixture
def protected(make_settings: Callable[..., WorkerSettings], serve_app: Any) -> Any:
    app = create_app(make_settings(api_token=TOKEN), doctor=None)
    with serve_app(app) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/extract"),
        ("POST", "/classify"),
        ("GET", "/docs"),
        ("GET", "/redoc"),
        ("GET", "/openapi.json"),
        ("GET", "/no-such-route"),
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", f"bearer{TOKEN}"],
)
def test_refused_without_the_token(
    protected: Any, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = protected.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["error"]["code"] == "unauthorized"
    assert (
        "Authorization: Bearer" in body["error"]["message"] or "token" in body["error"]["message"]
    )
    assert body["request_id"] == response.headers["x-request-id"]
    assert TOKEN not in response.text


def test_accepted_with_the_token(protected: Any) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert protected.post("/extract", files=TEXT, headers=auth).status_code == 200
    # The scheme is case-insensitive (RFC 7235).
    assert protected.get("/openapi.json", headers={"Authorization": f"bearer {TOKEN}"}).is_success
    assert protected.get("/docs", headers=auth).status_code == 200


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_probes_and_metrics_stay_open(protected: Any, path: str) -> None:
    # /ready is 503 until the model loads (lazy here), but never 401.
    assert protected.get(path).status_code in (200, 503)
    assert protected.get(path).status_code != 401


def test_the_schema_declares_the_bearer_scheme(
    make_settings: Callable[..., WorkerSettings],
) -> None:
    schema = create_app(make_settings(api_token=TOKEN), doctor=None).openapi()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    for path in ("/extract", "/classify"):
        operation = schema["paths"][path]["post"]
        assert operation["security"] == [{"bearerAuth": []}]
        assert "401" in operation["responses"]
    assert "security" not in schema["paths"]["/health"]["get"]
    open_schema = create_app(make_settings(), doctor=None).openapi()
    assert "securitySchemes" not in open_schema["components"]
    assert "security" not in open_schema["paths"]["/extract"]["post"]


def test_open_without_a_token(make_settings: Callable[..., WorkerSettings], serve_app: Any) -> None:
    with serve_app(create_app(make_settings(), doctor=None)) as client:
        assert client.post("/extract", files=TEXT).status_code == 200


def test_empty_token_is_a_configuration_error(
    make_settings: Callable[..., WorkerSettings],
) -> None:
    with pytest.raises(ValidationError, match="api_token"):
        make_settings(api_token="")
