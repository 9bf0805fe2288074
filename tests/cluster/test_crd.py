"""The DocumentJob CRD on the real API server: install, CRUD, defaults, validation, columns."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import yaml
from zopilot_dev.builders import DocumentJobBuilder
from zopilot_dev.cluster import LocalCluster

pytestmark = pytest.mark.cluster


@pytest.fixture
def ns(crd: LocalCluster) -> Iterator[str]:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    crd.kubectl("create", "namespace", name)
    yield name
    crd.kubectl("delete", "namespace", name, "--wait=false")


def _apply(c: LocalCluster, obj: dict[str, object]) -> tuple[int, str]:
    r = c.kubectl("apply", "--validate=strict", "-f", "-", input=yaml.safe_dump(obj), check=False)
    return r.returncode, r.stderr


def valid(ns: str, name: str = "ok") -> DocumentJobBuilder:
    return (
        DocumentJobBuilder(name, ns)
        .url("https://files.example/a.pdf")
        .classify(
            ["invoice", "receipt", "contract", "other"],
            model="mixtral-8x7b-instruct",
            quantization="nf4",
        )
    )


def test_create_read_delete_with_defaults(crd: LocalCluster, ns: str) -> None:
    rc, err = _apply(crd, valid(ns).obj())
    assert rc == 0, err
    got = json.loads(crd.kubectl("get", "documentjob", "ok", "-n", ns, "-o", "json").stdout)
    spec = got["spec"]
    # Defaults come from the schema, applied by the API server.
    assert spec["retries"] == 2 and spec["priority"] == 0 and spec["deadlineSeconds"] == 3600
    assert spec["extract"] == {"format": "markdown", "ocr": "auto"}
    assert spec["gpuMemory"] == "auto"
    assert spec["classify"]["maxInputTokens"] == 2048
    # Short name and category work.
    assert "ok" in crd.kubectl("get", "dj", "-n", ns).stdout
    crd.kubectl("delete", "documentjob", "ok", "-n", ns)
    assert crd.kubectl("get", "documentjob", "ok", "-n", ns, check=False).returncode != 0


def test_status_is_a_subresource(crd: LocalCluster, ns: str) -> None:
    _apply(crd, valid(ns).obj())
    # A status written through the main resource is ignored ...
    crd.kubectl(
        "patch",
        "documentjob",
        "ok",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running"}}',
    )
    assert crd.kubectl("get", "dj", "ok", "-n", ns, "-o", "jsonpath={.status.phase}").stdout == ""
    # ... and accepted through /status.
    crd.kubectl(
        "patch",
        "documentjob",
        "ok",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running", "progress": {"summary": "3/10"}}}',
    )
    out = crd.kubectl("get", "dj", "ok", "-n", ns).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "NODE", "PROGRESS", "AGE"]
    assert "Running" in out and "3/10" in out
    wide = crd.kubectl("get", "dj", "ok", "-n", ns, "-o", "wide").stdout.splitlines()[0].split()
    assert "GPU-MIB" in wide and "REASON" in wide


INVALID = {
    "missing documents": (lambda b: b.drop("spec.documents"), "spec.documents: Required value"),
    "empty documents": (lambda b: b.set("spec.documents", []), "should have at least 1 items"),
    "unknown task": (
        lambda b: b.set("spec.tasks", ["extract", "summarize"]),
        'Unsupported value: "summarize"',
    ),
    "bad quantization": (
        lambda b: b.set("spec.classify.quantization", "fp8"),
        'Unsupported value: "fp8"',
    ),
    "negative retries": (
        lambda b: b.set("spec.retries", -1),
        "should be greater than or equal to 0",
    ),
    "unknown field": (lambda b: b.set("spec.gpus", 2), 'unknown field "spec.gpus"'),
    "classify without options": (
        lambda b: b.drop("spec.classify"),
        "spec.classify (labels, model) is required",
    ),
    "two sources in one document": (
        lambda b: b.set(
            "spec.documents", [{"url": "https://x/a.pdf", "configMap": {"name": "a", "key": "b"}}]
        ),
        "exactly one of url, configMap or volume",
    ),
    "bad gpu memory": (lambda b: b.set("spec.gpuMemory", "lots"), "gpuMemory must be"),
    # A bare number means bytes in Kubernetes quantities: 20000 would reserve ~nothing.
    "gpu memory without a unit": (
        lambda b: b.set("spec.gpuMemory", 20000),
        "gpuMemory needs a unit",
    ),
    "gpu memory string without a unit": (
        lambda b: b.set("spec.gpuMemory", "20000"),
        "gpuMemory must be",
    ),
    "zero gpu memory": (lambda b: b.set("spec.gpuMemory", "0Gi"), "more than zero"),
    "zero point zero gpu memory": (lambda b: b.set("spec.gpuMemory", "0.0Mi"), "more than zero"),
    "one label": (
        lambda b: b.set("spec.classify.labels", ["invoice"]),
        "should have at least 2 items",
    ),
    "non-http url": (
        lambda b: b.set("spec.documents", [{"url": "file:///etc/passwd"}]),
        "should match '^https?://'",
    ),
}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_invalid_manifests_are_rejected_with_readable_messages(
    crd: LocalCluster, ns: str, case: str
) -> None:
    mutate, message = INVALID[case]
    rc, err = _apply(crd, mutate(valid(ns, "bad")).obj())
    assert rc != 0, f"{case}: accepted"
    assert message in err, err
    assert crd.kubectl("get", "dj", "bad", "-n", ns, check=False).returncode != 0


def test_explicit_gpu_memory_quantity_is_accepted(crd: LocalCluster, ns: str) -> None:
    for i, q in enumerate(["20Gi", "512Mi", "20000Mi", "0.5Gi", "24G"]):
        rc, err = _apply(crd, valid(ns, f"q{i}").gpu_memory(q).obj())
        assert rc == 0, err


def _set_phase(c: LocalCluster, ns: str, name: str, phase: str) -> None:
    c.kubectl(
        "patch", "dj", name, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": phase}}),
    )  # fmt: skip


def _patch_spec(c: LocalCluster, ns: str, name: str, spec: dict[str, object]) -> tuple[int, str]:
    r = c.kubectl(
        "patch", "dj", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}),
        check=False,
    )  # fmt: skip
    return r.returncode, r.stderr


def test_spec_is_editable_until_planned_then_immutable(crd: LocalCluster, ns: str) -> None:
    rc, err = _apply(crd, valid(ns, "edit").obj())
    assert rc == 0, err
    # Not planned yet (no phase): the operator plans from whatever it reads then.
    assert _patch_spec(crd, ns, "edit", {"priority": 5}) == (0, "")
    _set_phase(crd, ns, "edit", "Queued")
    rc, err = _patch_spec(crd, ns, "edit", {"priority": 7, "gpuMemory": "20Gi"})
    assert rc != 0 and "spec cannot change once the job is planned" in err, err
    got = json.loads(crd.kubectl("get", "dj", "edit", "-n", ns, "-o", "json").stdout)
    assert (got["spec"]["priority"], got["spec"]["gpuMemory"]) == (5, "auto")
    # Metadata and status still change; re-applying the same spec is no change.
    crd.kubectl("label", "dj", "edit", "-n", ns, "team=finance")
    _set_phase(crd, ns, "edit", "Admitted")
    rc, err = _apply(crd, valid(ns, "edit").priority(5).obj())
    assert rc == 0, err
