"""/openapi.json describes exactly the routes that exist, with their bodies and error answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.routing import APIRoute
from zopilot_worker.service import create_app
from zopilot_worker.service.schemas import (
    ClassifyForm,
    ClassifyResponse,
    ClassifyTextRequest,
    ErrorResponse,
    ExtractForm,
    ExtractResponse,
    HealthResponse,
    ReadyResponse,
)
from zopilot_worker.settings import WorkerSettings

DOCUMENT_ERRORS = {"400", "413", "415", "422", "500", "503"}


@pytest.fixture(scope="module")
def app_and_schema() -> tuple[Any, dict[str, Any]]:
    settings = WorkerSettings(
        classify_model="tiny-mixtral", load_model_on_start=False, run_doctor_on_start=False
    )
    app = create_app(settings, doctor=None)
    return app, app.openapi()


def _ref(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).removeprefix("#/components/schemas/")


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """The app's APIRoutes, also inside included routers (FastAPI nests them)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:
            found.extend(_api_routes(route.original_router.routes))
    return found


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_paths_match_the_routes(app_and_schema: tuple[Any, dict[str, Any]]) -> None:
    app, schema = app_and_schema
    routes = {
        (route.path, method.lower())
        for route in _api_routes(app.routes)
        if route.include_in_schema
        for method in route.methods or ()
    }
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert documented == routes
    assert routes == {
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/extract", "post"),
        ("/classify", "post"),
    }


@pytest.mark.parametrize(
    ("path", "method", "model"),
    [
        ("/health", "get", HealthResponse),
        ("/ready", "get", ReadyResponse),
        ("/extract", "post", ExtractResponse),
        ("/classify", "post", ClassifyResponse),
    ],
)
def test_response_schemas_are_the_route_models(
    app_and_schema: tuple[Any, dict[str, Any]], path: str, method: str, model: Any
) -> None:
    app, schema = app_and_schema
    route = next(r for r in _api_routes(app.routes) if r.path == path)
    assert route.response_model is model
    ok = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]
    name = _ref(ok["schema"])
    assert name == model.__name__
    component = schema["components"]["schemas"][name]
    expected = model.model_json_schema()
    assert set(component["properties"]) == set(expected["properties"])
    assert set(component.get("required", [])) == set(expected.get("required", []))


@pytest.mark.parametrize("path", ["/extract", "/classify"])
def test_document_routes_document_their_errors(
    app_and_schema: tuple[Any, dict[str, Any]], path: str
) -> None:
    _, schema = app_and_schema
    responses = schema["paths"][path]["post"]["responses"]
    assert set(responses) >= DOCUMENT_ERRORS
    for status in DOCUMENT_ERRORS:
        body = responses[status]["content"]["application/json"]["schema"]
        assert _ref(body) == ErrorResponse.__name__
        assert responses[status]["description"]
    error = schema["components"]["schemas"]["ErrorResponse"]
    assert set(error["required"]) == {"error", "request_id"}


def test_request_bodies(app_and_schema: tuple[Any, dict[str, Any]]) -> None:
    _, schema = app_and_schema
    components = schema["components"]["schemas"]
    extract = schema["paths"]["/extract"]["post"]["requestBody"]["content"]
    assert set(extract) == {"multipart/form-data"}
    assert _ref(extract["multipart/form-data"]["schema"]) == ExtractForm.__name__
    assert components["ExtractForm"]["properties"]["file"]["format"] == "binary"
    classify = schema["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert _ref(classify["application/json"]["schema"]) == ClassifyTextRequest.__name__
    assert _ref(classify["multipart/form-data"]["schema"]) == ClassifyForm.__name__
    assert set(components["ClassifyTextRequest"]["required"]) == {"text", "labels"}


def test_every_reference_resolves(app_and_schema: tuple[Any, dict[str, Any]]) -> None:
    _, schema = app_and_schema
    names = set(schema["components"]["schemas"])
    for ref in _refs(schema):
        assert ref.removeprefix("#/components/schemas/") in names, ref


def test_served_document_is_the_same(
    app_and_schema: tuple[Any, dict[str, Any]],
    make_settings: Callable[..., WorkerSettings],
    serve_app: Any,
) -> None:
    _, schema = app_and_schema
    with serve_app(create_app(make_settings(), doctor=None)) as client:
        served = client.get("/openapi.json").json()
    assert served["paths"].keys() == schema["paths"].keys()
    assert served["components"]["schemas"].keys() == schema["components"]["schemas"].keys()


def test_the_schema_states_the_label_rules(app_and_schema: tuple[Any, dict[str, Any]]) -> None:
    from zopilot_common.planner import MAX_LABEL_TOKENS, MAX_LABELS
    from zopilot_worker.service.schemas import (
        LABEL_FORMAT,
        LABEL_PATTERN,
        MAX_LABEL_CHARS,
        MIN_LABELS,
        validate_labels,
    )

    _, schema = app_and_schema
    components = schema["components"]["schemas"]
    for model in ("ClassifyTextRequest", "ClassifyForm"):
        labels = components[model]["properties"]["labels"]
        assert (labels["minItems"], labels["maxItems"]) == (MIN_LABELS, MAX_LABELS)
        assert labels["uniqueItems"] is True
        item = labels["items"]
        assert (item["minLength"], item["maxLength"]) == (1, MAX_LABEL_CHARS)
        assert item["pattern"] == LABEL_PATTERN
        assert item["format"] == LABEL_FORMAT
        assert f"{MAX_LABEL_TOKENS} tokens" in item["description"]
    # The service enforces the very same pattern, with JSON Schema's search semantics.
    valid = ["invoice", "credit note", "Rechnung", "請求書", "a", "x" * MAX_LABEL_CHARS]
    invalid = [" a", "a ", "a,b", "a\tb", "\x00", "\xa0", "a\u3000", "\x85", "x" * 64]
    assert validate_labels(valid) == valid
    for label in invalid:
        with pytest.raises(ValueError, match="label"):
            validate_labels(["ok", label])


def test_the_schema_states_the_document_types(app_and_schema: tuple[Any, dict[str, Any]]) -> None:
    from zopilot_worker.extract.detect import SUPPORTED_TYPES
    from zopilot_worker.service.schemas import DOCUMENT_CONTENT_TYPES

    _, schema = app_and_schema
    assert set(DOCUMENT_CONTENT_TYPES) <= set(SUPPORTED_TYPES)
    assert set(SUPPORTED_TYPES.values()) == {SUPPORTED_TYPES[t] for t in DOCUMENT_CONTENT_TYPES}
    for path in ("/extract", "/classify"):
        form = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        declared = form["encoding"]["file"]["contentType"].split(", ")
        assert declared == list(DOCUMENT_CONTENT_TYPES)
    for model in ("ExtractForm", "ClassifyForm"):
        form_schema = schema["components"]["schemas"][model]
        assert form_schema["additionalProperties"] is False
        assert form_schema["properties"]["file"]["minLength"] == 1
        assert form_schema["properties"]["ocr"]["enum"] == ["auto", "always", "never"]
