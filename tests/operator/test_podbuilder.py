"""The worker pod manifest: names, ownership, pinning, mounts, env, PodSecurity "restricted"."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from typing import Any

import pytest
from kubernetes.client import V1ConfigMap, V1Pod
from zopilot_common.spec import DocumentJobSpec
from zopilot_operator.errors import PermanentError
from zopilot_operator.podbuilder import (
    ANNOTATION_REQUIRED_MIB,
    CONFIGMAP_ROOT,
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_JOB_UID,
    SPEC_MAX_BYTES,
    SPEC_MOUNT,
    SPEC_PATH,
    VOLUME_ROOT,
    WORKER_COMMAND,
    build_spec_configmap,
    build_worker_pod,
    configmap_belongs_to,
    label_value,
    pod_belongs_to,
    spec_configmap_name,
    uid_tag,
    worker_pod_name,
    worker_selector,
)
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import JobBuilder

SETTINGS = OperatorSettings(worker_image="registry.example/zopilot-worker:1.2.3")
JOB_UID = "uid-finance-march-invoices"
ADMISSION = {"node": "gpu-b", "gpu": "0", "uuid": "GPU-123", "requiredMiB": 20480}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def build(
    job: dict[str, Any], attempt: int = 1, settings: OperatorSettings = SETTINGS
) -> dict[str, Any]:
    spec = DocumentJobSpec.from_k8s(job["spec"])
    return build_worker_pod(job, spec, attempt, ADMISSION, settings)


JOB = (
    JobBuilder("march-invoices", "finance")
    .spec(
        documents=[
            {"url": "https://files.example/a.pdf"},
            {"configMap": {"name": "inbox", "key": "b.docx"}},
            {"configMap": {"name": "inbox", "key": "c.docx"}},
            {"volume": {"claimName": "scans", "path": "march/*.pdf"}},
            {"volume": {"claimName": "results", "path": "in/*.pdf"}},
        ],
        tasks=["extract", "classify"],
        classify={"labels": ["invoice", "receipt"]},
        output={"volume": {"claimName": "results", "path": "march/"}},
        deadlineSeconds=1800,
    )
    .obj()
)


def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["spec"]["containers"]
    [c] = containers
    return c


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(pod)["env"]}


def test_manifest_is_a_valid_v1_pod() -> None:
    # The client's model forbids unknown fields: a typo in a field name fails here.
    V1Pod.model_validate(build(JOB))


def test_manifest_is_deterministic() -> None:
    assert json.dumps(build(JOB), sort_keys=True) == json.dumps(build(JOB), sort_keys=True)


# --- PodSecurity "restricted" (policy version latest), checked statically ---------------

ALLOWED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    pod_sc = spec.get("securityContext", {})
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(key)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: {kinds}")
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        if (
            not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot"))
            or sc.get("runAsNonRoot") is False
        ):
            problems.append(f"{c['name']}: runAsNonRoot")
        if 0 in (sc.get("runAsUser"), pod_sc.get("runAsUser")):
            problems.append(f"{c['name']}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{c['name']}: seccompProfile {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{c['name']}: capabilities.drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: capabilities.add")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{c['name']}: hostPort")
    return problems


def test_manifest_passes_pod_security_restricted() -> None:
    assert restricted_violations(build(JOB)) == []


def test_the_restricted_checker_can_fail() -> None:
    pod = build(JOB)
    container(pod)["securityContext"]["allowPrivilegeEscalation"] = True
    pod["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert restricted_violations(pod) == [
        "volume h: {'hostPath'}",
        "worker: allowPrivilegeEscalation",
    ]


def test_hardening_beyond_restricted() -> None:
    pod = build(JOB)
    assert container(pod)["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["enableServiceLinks"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in container(pod)["volumeMounts"]


# --- names ---------------------------------------------------------------------------------


UID = "2f6c7a51-0d4e-4a8e-9a51-6c1a1b2c3d4e"
TAG = uid_tag(UID)


@pytest.mark.parametrize(
    ("job_name", "attempt", "expected"),
    [
        ("march-invoices", 1, f"march-invoices-{TAG}-a1"),
        ("march-invoices", 12, f"march-invoices-{TAG}-a12"),
        ("a" * 53, 1, "a" * 53 + f"-{TAG}-a1"),  # exactly 63
    ],
)
def test_short_names_are_readable(job_name: str, attempt: int, expected: str) -> None:
    assert worker_pod_name(job_name, attempt, UID) == expected


@pytest.mark.parametrize("job_name", ["x" * 61, "y" * 253, "a.b." + "c" * 100, "d-" * 40])
@pytest.mark.parametrize("attempt", [1, 10])
def test_long_names_are_hashed_to_63(job_name: str, attempt: int) -> None:
    name = worker_pod_name(job_name, attempt, UID)
    assert len(name) <= 63
    assert DNS_SUBDOMAIN.match(name), name
    assert name.endswith(f"-{TAG}-a{attempt}")
    assert name == worker_pod_name(job_name, attempt, UID)


def test_names_differ_per_attempt_per_job_and_per_job_object() -> None:
    base = "p" * 100
    names = {
        worker_pod_name(j, a, u)
        for j in (base + "1", base + "2")
        for a in (1, 2)
        for u in (UID, "another-uid")
    }
    assert len(names) == 8


@pytest.mark.parametrize("text", ["short", "z" * 63, "z" * 64, "y" * 253, "a.b-c_d"])
def test_label_value(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63
    assert re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", value)
    assert (value == text) is (len(text) <= 63)


# --- ownership, pinning, resources ----------------------------------------------------------


def test_metadata() -> None:
    meta = build(JOB, attempt=2)["metadata"]
    assert meta["name"] == worker_pod_name("march-invoices", 2, "uid-finance-march-invoices")
    assert meta["namespace"] == "finance"
    assert meta["labels"] == {
        "app.kubernetes.io/name": "zopilot-worker",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "zopilot-operator",
        LABEL_JOB: "march-invoices",
        LABEL_JOB_UID: "uid-finance-march-invoices",
        LABEL_ATTEMPT: "2",
    }
    assert meta["annotations"][ANNOTATION_REQUIRED_MIB] == "20480"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "zopilot.dev/v1alpha1",
            "kind": "DocumentJob",
            "name": "march-invoices",
            "uid": "uid-finance-march-invoices",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_pinned_by_required_affinity_not_node_name() -> None:
    spec = build(JOB)["spec"]
    assert "nodeName" not in spec
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-b"]}]}
        ]
    }


def test_tolerations() -> None:
    settings = OperatorSettings(worker_tolerated_taints=["kwok.x-k8s.io/node"])
    assert build(JOB, settings=settings)["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "kwok.x-k8s.io/node", "operator": "Exists"},
    ]


def test_run_settings() -> None:
    pod = build(JOB)
    c = container(pod)
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["activeDeadlineSeconds"] == 1800
    assert c["image"] == "registry.example/zopilot-worker:1.2.3"
    assert c["command"] == list(WORKER_COMMAND)
    assert c["command"][2:4] == ["--spec", SPEC_PATH]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "16Gi", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }


def test_env() -> None:
    values = env(build(JOB, attempt=3))
    assert values == {
        "ZOPILOT_JOB_SPEC_FILE": SPEC_PATH,
        "ZOPILOT_JOB_NAME": "march-invoices",
        "ZOPILOT_JOB_NAMESPACE": "finance",
        "ZOPILOT_JOB_UID": "uid-finance-march-invoices",
        "ZOPILOT_ATTEMPT": "3",
        "ZOPILOT_REQUIRED_MIB": "20480",
        "ZOPILOT_WORKER_MODEL_ROOT": "/models",
        "ZOPILOT_WORKER_CONFIGMAP_ROOT": CONFIGMAP_ROOT,
        "ZOPILOT_WORKER_VOLUME_ROOT": VOLUME_ROOT,
        "ZOPILOT_WORKER_METRICS_PORT": "8080",
        "ZOPILOT_WORKER_TERMINATION_LOG": "/dev/termination-log",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HOME": "/tmp",
        "HF_HOME": "/tmp/huggingface",
    }


def test_volumes_and_mounts() -> None:
    pod = build(JOB)
    volumes = {v["name"]: {k: v[k] for k in v if k != "name"} for v in pod["spec"]["volumes"]}
    mounts = {
        m["mountPath"]: (m["name"], m.get("readOnly", False))
        for m in container(pod)["volumeMounts"]
    }
    assert volumes == {
        "models": {"persistentVolumeClaim": {"claimName": "zopilot-models", "readOnly": True}},
        "tmp": {"emptyDir": {}},
        "cm-0": {"configMap": {"name": "inbox"}},
        "pvc-0": {"persistentVolumeClaim": {"claimName": "scans", "readOnly": True}},
        # An input claim that is also the output: mounted once, writable.
        "pvc-1": {"persistentVolumeClaim": {"claimName": "results", "readOnly": False}},
        "spec": {"configMap": {"name": spec_configmap_name("march-invoices", JOB_UID)}},
    }
    assert mounts == {
        "/models": ("models", True),
        "/tmp": ("tmp", False),
        f"{CONFIGMAP_ROOT}/inbox": ("cm-0", True),
        f"{VOLUME_ROOT}/scans": ("pvc-0", True),
        f"{VOLUME_ROOT}/results": ("pvc-1", False),
        SPEC_MOUNT: ("spec", True),
    }
    assert all(DNS_LABEL.match(name) for name in volumes)


def test_url_only_job_mounts_only_models_tmp_and_its_spec() -> None:
    pod = build(JobBuilder("plain").obj())
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["models", "tmp", "spec"]


def test_model_volume_follows_settings() -> None:
    settings = OperatorSettings(model_pvc_name="weights", model_mount_path="/mnt/models")
    pod = build(JOB, settings=settings)
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "weights"
    assert env(pod)["ZOPILOT_WORKER_MODEL_ROOT"] == "/mnt/models"


def test_model_volume_can_be_left_out() -> None:
    pod = build(JOB, settings=OperatorSettings(model_pvc_name=""))
    assert "models" not in [v["name"] for v in pod["spec"]["volumes"]]
    assert "/models" not in [m["mountPath"] for m in container(pod)["volumeMounts"]]


def test_no_admission_no_pod() -> None:
    spec = DocumentJobSpec.from_k8s(JOB["spec"])
    with pytest.raises(KeyError):
        build_worker_pod(JOB, spec, 1, {}, SETTINGS)


# --- ownership check used on 409 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "belongs"),
    [
        (lambda p: None, True),
        (lambda p: p["metadata"]["labels"].update({LABEL_ATTEMPT: "2"}), False),
        (lambda p: p["metadata"]["labels"].update({LABEL_JOB_UID: "other"}), False),
        (lambda p: p["metadata"].pop("ownerReferences"), False),
        (lambda p: p["metadata"]["ownerReferences"][0].update(controller=False), False),
    ],
)
def test_pod_belongs_to(mutate: Any, belongs: bool) -> None:
    pod = build(JOB)
    mutate(pod)
    assert pod_belongs_to(pod, "uid-finance-march-invoices", 1) is belongs


def test_worker_selector() -> None:
    assert worker_selector("u") == "zopilot.dev/job-uid=u"
    assert worker_selector("u", 2) == "zopilot.dev/job-uid=u,zopilot.dev/attempt=2"


# --- the spec as a file (issue 9: large jobs start) ------------------------------------------
MAX_ARG_STRLEN = 128 * 1024  # Linux: the most one argument or environment string may hold


def largest_job(url_length: int = 2048) -> dict[str, Any]:
    """As large as the CRD allows: 1,000 documents, each URL at its 2 KiB limit."""
    urls = [
        {"url": f"https://files.example/{i:04d}/" + "x" * (url_length - 27)} for i in range(1000)
    ]
    return JobBuilder("huge", "finance").spec(documents=urls).obj()


def test_no_environment_string_of_the_largest_job_passes_the_kernels_limit() -> None:
    pod = build(largest_job())
    sizes = {e["name"]: len(f"{e['name']}={e['value']}".encode()) for e in container(pod)["env"]}
    assert max(sizes.values()) < MAX_ARG_STRLEN, sizes
    assert all(len(a.encode()) < MAX_ARG_STRLEN for a in container(pod)["command"])


def configmap_spec(cm: dict[str, Any]) -> DocumentJobSpec:
    if "data" in cm:
        return DocumentJobSpec.model_validate_json(cm["data"]["spec.json"])
    packed = base64.b64decode(cm["binaryData"]["spec.json"])
    return DocumentJobSpec.model_validate_json(gzip.decompress(packed))


def test_the_spec_configmap_is_owned_by_the_job_and_holds_the_spec() -> None:
    cm = build_spec_configmap(JOB, DocumentJobSpec.from_k8s(JOB["spec"]))
    V1ConfigMap.model_validate(cm)
    assert cm["metadata"]["name"] == spec_configmap_name("march-invoices", JOB_UID)
    assert configmap_belongs_to(cm, JOB_UID) and not configmap_belongs_to(cm, "another")
    assert configmap_spec(cm) == DocumentJobSpec.from_k8s(JOB["spec"])


def test_a_spec_past_a_configmaps_limit_is_gzipped() -> None:
    job = largest_job()
    cm = build_spec_configmap(job, DocumentJobSpec.from_k8s(job["spec"]))
    assert "data" not in cm
    assert len(cm["binaryData"]["spec.json"]) <= SPEC_MAX_BYTES
    assert configmap_spec(cm) == DocumentJobSpec.from_k8s(job["spec"])


def test_a_spec_that_does_not_fit_even_gzipped_says_what_to_change() -> None:
    job = largest_job()
    for i, doc in enumerate(job["spec"]["documents"]):  # random-looking URLs: ~4 bits a char
        noise = "".join(hashlib.sha512(f"{i}.{j}".encode()).hexdigest() for j in range(15))
        doc["url"] = f"https://files.example/{i:04d}/{noise}"
    with pytest.raises(PermanentError, match="split the documents") as raised:
        build_spec_configmap(job, DocumentJobSpec.from_k8s(job["spec"]))
    assert raised.value.reason == "SpecTooLarge"


def test_worker_env_reaches_the_pod_but_cannot_override_the_operators_variables() -> None:
    settings = OperatorSettings(
        worker_env={
            "ZOPILOT_WORKER_FETCH_ALLOWED_HOSTS": '["files.example"]',
            "ZOPILOT_REQUIRED_MIB": "1",
        }
    )
    seen = env(build(JOB, settings=settings))
    assert seen["ZOPILOT_WORKER_FETCH_ALLOWED_HOSTS"] == '["files.example"]'
    assert seen["ZOPILOT_REQUIRED_MIB"] == str(ADMISSION["requiredMiB"])
