"""The chart ships the very CRD in crds/, and every field of it is documented."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml
from zopilot_dev.config import REPO_ROOT

from .conftest import CHART

SOURCE = REPO_ROOT / "crds" / "documentjob.yaml"
SHIPPED = CHART / "crds" / "documentjob.yaml"
# The API server refuses anything but a type on metadata; kubectl explain shows
# ObjectMeta's own documentation there.
SERVER_DOCUMENTED = {".metadata"}


def fields(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from fields(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from fields(node["items"], f"{path}[]")


def test_chart_crd_is_byte_identical_to_the_source() -> None:
    assert SHIPPED.read_bytes() == SOURCE.read_bytes(), (
        "charts/zopilot/crds/documentjob.yaml differs from crds/documentjob.yaml: "
        "cp crds/documentjob.yaml charts/zopilot/crds/"
    )


def test_every_field_has_a_description() -> None:
    crd = yaml.safe_load(SOURCE.read_text())
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert schema.get("description")
        found = list(fields(schema))
        assert len(found) >= 65  # the walk sees the whole schema
        missing = [
            path
            for path, f in found
            if not str(f.get("description", "")).strip() and path not in SERVER_DOCUMENTED
        ]
        assert not missing, f"{version['name']}: fields without a description: {missing}"


def test_the_walk_finds_undocumented_fields() -> None:
    schema = {"properties": {"a": {"type": "array", "items": {"properties": {"b": {}}}}}}
    assert [p for p, f in fields(schema) if "description" not in f] == [".a", ".a[].b"]
