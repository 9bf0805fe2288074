"""The worker pod of one attempt, as a manifest (pure).

Choices worth knowing:

* **One pod per attempt, across restarts.** The name is a function of the job
  object and the attempt (``<job>-<uid tag>-a<attempt>``, hashed down to 63
  characters), so a second create for the same attempt fails with 409
  AlreadyExists instead of starting a second worker; ``kube.create_pod`` then
  checks that the existing pod is this job's (:func:`pod_belongs_to`), and so
  does ``lifecycle.on_attempt`` for every pod it follows. The UID tag means a
  new job never meets a pod left behind by a deleted job of the same name.
* **Pinned by node affinity, not ``nodeName``.** A required affinity on the
  node's ``metadata.name`` field keeps the real scheduler in the loop, so it
  still checks ``nvidia.com/gpu`` slots, taints and the node's health;
  ``nodeName`` would bypass all of that.
* **Restricted.** The manifest satisfies PodSecurity "restricted": non-root
  user 10001, no privilege escalation, all capabilities dropped,
  RuntimeDefault seccomp, read-only root with an emptyDir ``/tmp``, only
  configMap / PVC / emptyDir volumes, no service account token.
* **The spec as a file.** A ConfigMap owned by the job carries the spec
  (``spec.json``, gzipped in ``binaryData`` past 1 MB), mounted read-only at
  ``SPEC_MOUNT`` and passed as ``run-job --spec``: an environment variable
  would cap it at Linux's 128 KiB per string.
* **Offline models.** The model claim is mounted read-only and the Hugging Face
  hub is switched off: a missing model fails fast instead of downloading.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from zopilot_common.spec import API_VERSION, KIND, DocumentJobSpec

from zopilot_operator.errors import PermanentError
from zopilot_operator.gpus import GPU_RESOURCE
from zopilot_operator.reasons import Reason
from zopilot_operator.settings import OperatorSettings

WORKER_CONTAINER = "worker"
TERMINATION_LOG = "/dev/termination-log"
# The job's spec reaches the worker as a file: a ConfigMap owned by the job
# (:func:`build_spec_configmap`), mounted here. Not an environment variable:
# Linux caps one environment string at 128 KiB, and a spec of 1,000 URLs of up
# to 2 KiB is larger than that.
SPEC_MOUNT = "/var/run/zopilot/spec"
SPEC_KEY = "spec.json"
SPEC_PATH = f"{SPEC_MOUNT}/{SPEC_KEY}"
SPEC_FILE_ENV = "ZOPILOT_JOB_SPEC_FILE"
# A ConfigMap holds at most 1 MiB; this leaves room for its metadata.
SPEC_MAX_BYTES = 1_000_000
# The worker's entrypoint; kept in one place so it changes with the worker's CLI.
WORKER_COMMAND: tuple[str, ...] = (
    "zopilot-worker",
    "run-job",
    "--spec",
    SPEC_PATH,
    "--termination-log",
    TERMINATION_LOG,
)
# Mount layout, the operator's half of the worker's contract (WorkerSettings
# configmap_root / volume_root, passed explicitly as env below): ConfigMap
# ``name`` at <CONFIGMAP_ROOT>/<name>/ (a file per key); claim ``claimName`` at
# <VOLUME_ROOT>/<claimName>/, once, for inputs and output alike.
CONFIGMAP_ROOT = "/var/run/zopilot/configmaps"
VOLUME_ROOT = "/var/run/zopilot/volumes"
WORKER_UID = 10001

LABEL_APP = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = "zopilot.dev/job"
LABEL_JOB_UID = "zopilot.dev/job-uid"
LABEL_ATTEMPT = "zopilot.dev/attempt"
WORKER_APP = "zopilot-worker"
OPERATOR_NAME = "zopilot-operator"
ANNOTATION_REQUIRED_MIB = "zopilot.dev/required-mib"
ANNOTATION_GPU = "zopilot.dev/gpu"
ANNOTATION_GPU_UUID = "zopilot.dev/gpu-uuid"
ANNOTATION_JOB_NAME = "zopilot.dev/job-name"

MAX_NAME = 63  # a DNS label: pod hostnames and label values share this limit
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _shorten(text: str, suffix: str, limit: int = MAX_NAME) -> str:
    """``text + suffix`` if short enough, else a prefix + 8 hex of sha256(text) + suffix."""
    if len(text) + len(suffix) <= limit:
        return text + suffix
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    prefix = text[:keep].rstrip("-.")
    return f"{prefix}-{digest}{suffix}"


def uid_tag(job_uid: str) -> str:
    """6 hex characters standing for a job's UID in the names of its objects."""
    return hashlib.sha256(job_uid.encode()).hexdigest()[:6]


def worker_pod_name(job_name: str, attempt: int, job_uid: str) -> str:
    """Deterministic, <= 63 characters, distinct per (job, attempt) and per job *object*.

    The UID's tag keeps a re-created job of the same name (say after ``kubectl
    delete --cascade=orphan``) from ever meeting a pod its predecessor left behind.
    """
    return _shorten(job_name, f"-{uid_tag(job_uid)}-a{attempt}")


def attempt_pod_name(job: Mapping[str, Any]) -> str:
    """The pod of the job's current attempt: the one recorded in status, else the one to create."""
    status = job.get("status") or {}
    metadata = job.get("metadata") or {}
    recorded = status.get("workerPod")
    if isinstance(recorded, str) and recorded:
        return recorded
    attempt = int(status.get("attempt") or 1)
    return worker_pod_name(str(metadata.get("name", "")), attempt, str(metadata.get("uid", "")))


def label_value(text: str) -> str:
    """A valid label value standing for ``text`` (hashed if longer than 63)."""
    value = _shorten(text, "")
    if not _LABEL_VALUE.match(value):
        value = hashlib.sha256(text.encode()).hexdigest()[:16]
    return value


def worker_selector(job_uid: str, attempt: int | None = None) -> str:
    """Label selector for a job's worker pods (all attempts, or one)."""
    selector = f"{LABEL_JOB_UID}={job_uid}"
    return selector if attempt is None else f"{selector},{LABEL_ATTEMPT}={attempt}"


def pod_belongs_to(pod: Mapping[str, Any], job_uid: str, attempt: int) -> bool:
    """True if ``pod`` is the worker of this job's ``attempt`` (labels and controller owner)."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    owned = any(
        ref.get("uid") == job_uid and ref.get("controller")
        for ref in metadata.get("ownerReferences") or []
    )
    return (
        owned and labels.get(LABEL_JOB_UID) == job_uid and labels.get(LABEL_ATTEMPT) == str(attempt)
    )


def _volumes(
    spec: DocumentJobSpec, settings: OperatorSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and their mounts: models, /tmp, ConfigMap inputs, claims (inputs and output)."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if settings.model_pvc_name:
        volumes.insert(
            0,
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": settings.model_pvc_name, "readOnly": True},
            },
        )
        mounts.insert(
            0, {"name": "models", "mountPath": settings.model_mount_path, "readOnly": True}
        )
    configmaps: list[str] = []
    claims: list[str] = []
    for doc in spec.documents:
        if doc.config_map and doc.config_map.name not in configmaps:
            configmaps.append(doc.config_map.name)
        if doc.volume and doc.volume.claim_name not in claims:
            claims.append(doc.volume.claim_name)
    output = spec.output.volume.claim_name if spec.output and spec.output.volume else None
    if output and output not in claims:
        claims.append(output)
    for i, name in enumerate(configmaps):
        volumes.append({"name": f"cm-{i}", "configMap": {"name": name}})
        mounts.append(
            {"name": f"cm-{i}", "mountPath": f"{CONFIGMAP_ROOT}/{name}", "readOnly": True}
        )
    for i, claim in enumerate(claims):
        # Inputs are read-only; only the output claim (even if it holds inputs too) is writable.
        read_only = claim != output
        volumes.append(
            {
                "name": f"pvc-{i}",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only},
            }
        )
        mounts.append(
            {"name": f"pvc-{i}", "mountPath": f"{VOLUME_ROOT}/{claim}", "readOnly": read_only}
        )
    return volumes, mounts


def spec_configmap_name(job_name: str, job_uid: str) -> str:
    """The ConfigMap with a job's spec: one per job object (immutable once planned)."""
    return _shorten(job_name, f"-{uid_tag(job_uid)}-spec")


def build_spec_configmap(job: Mapping[str, Any], spec: DocumentJobSpec) -> dict[str, Any]:
    """The ConfigMap with the job's spec as ``spec.json``, owned by the job (the garbage
    collector deletes it with the job).

    Plain JSON when it fits in a ConfigMap, else gzip in ``binaryData`` (the worker
    reads either); PermanentError(SpecTooLarge) when even that does not fit.
    """
    metadata = job["metadata"]
    name, namespace, uid = metadata["name"], metadata["namespace"], metadata["uid"]
    text = json.dumps(spec.to_k8s(), separators=(",", ":"), sort_keys=True)
    content: dict[str, Any] = {"data": {SPEC_KEY: text}}
    if len(text.encode()) > SPEC_MAX_BYTES:
        packed = gzip.compress(text.encode(), compresslevel=9, mtime=0)
        encoded = base64.b64encode(packed).decode()
        if len(encoded) > SPEC_MAX_BYTES:
            raise PermanentError(
                f"the spec is {len(text.encode())} bytes, {len(encoded)} gzipped and base64 "
                f"encoded, more than a ConfigMap holds ({SPEC_MAX_BYTES}); split the documents "
                "over several jobs, or point at a volume with a glob (documents[].volume.path)",
                reason=Reason.SPEC_TOO_LARGE,
            )
        content = {"binaryData": {SPEC_KEY: encoded}}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": spec_configmap_name(name, uid),
            "namespace": namespace,
            "labels": {
                LABEL_APP: WORKER_APP,
                LABEL_COMPONENT: "job-spec",
                LABEL_MANAGED_BY: OPERATOR_NAME,
                LABEL_JOB: label_value(name),
                LABEL_JOB_UID: uid,
            },
            "ownerReferences": [_owner(name, uid)],
        },
        **content,
    }


def _owner(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def configmap_belongs_to(configmap: Mapping[str, Any], job_uid: str) -> bool:
    """True if the job with ``job_uid`` is the ConfigMap's controller owner."""
    refs = (configmap.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == job_uid and ref.get("controller") for ref in refs)


def host_memory_request(job: Mapping[str, Any], settings: OperatorSettings) -> str:
    """The worker's memory request: raised after a host OOM (``status.hostMemoryMiB``),
    else ``worker_memory_request``."""
    raised = (job.get("status") or {}).get("hostMemoryMiB")
    if isinstance(raised, int) and not isinstance(raised, bool) and raised > 0:
        return f"{raised}Mi"
    return settings.worker_memory_request


def build_worker_pod(
    job: Mapping[str, Any],
    spec: DocumentJobSpec,
    attempt: int,
    admission: Mapping[str, Any],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The pod of ``attempt`` (1-based) for ``job`` on ``admission["node"]`` (its status.admission).

    Raises KeyError if the admission has no node: a pod is only built for an admitted job.
    """
    metadata = job["metadata"]
    name, namespace, uid = metadata["name"], metadata["namespace"], metadata["uid"]
    node = admission["node"]
    required_mib = int(admission.get("requiredMiB", 0))
    volumes, mounts = _volumes(spec, settings)
    volumes.append({"name": "spec", "configMap": {"name": spec_configmap_name(name, uid)}})
    mounts.append({"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True})
    env = {
        # The operator's own variables below win over worker_env.
        **settings.worker_env,
        SPEC_FILE_ENV: SPEC_PATH,
        "ZOPILOT_JOB_NAME": name,
        "ZOPILOT_JOB_NAMESPACE": namespace,
        "ZOPILOT_JOB_UID": uid,
        "ZOPILOT_ATTEMPT": str(attempt),
        "ZOPILOT_REQUIRED_MIB": str(required_mib),
        "ZOPILOT_WORKER_MODEL_ROOT": settings.model_mount_path,
        "ZOPILOT_WORKER_CONFIGMAP_ROOT": CONFIGMAP_ROOT,
        "ZOPILOT_WORKER_VOLUME_ROOT": VOLUME_ROOT,
        "ZOPILOT_WORKER_METRICS_PORT": str(settings.worker_metrics_port),
        "ZOPILOT_WORKER_TERMINATION_LOG": TERMINATION_LOG,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # The root filesystem is read-only and user 10001 has no home directory.
        "HOME": "/tmp",
        "HF_HOME": "/tmp/huggingface",
    }
    tolerations = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    tolerations += [{"key": key, "operator": "Exists"} for key in settings.worker_tolerated_taints]
    container = {
        "name": WORKER_CONTAINER,
        "image": settings.worker_image,
        "imagePullPolicy": settings.worker_image_pull_policy,
        "command": list(settings.worker_command or WORKER_COMMAND),
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "metrics", "containerPort": settings.worker_metrics_port}],
        "resources": {
            "requests": {
                "cpu": settings.worker_cpu_request,
                "memory": host_memory_request(job, settings),
                GPU_RESOURCE: "1",
            },
            # Extended resources must be limited; host memory is not, so a
            # large document does not get the worker killed mid-batch. After an
            # OOMKilled attempt the request grows (status.hostMemoryMiB, retry.py).
            "limits": {GPU_RESOURCE: "1"},
        },
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": worker_pod_name(name, attempt, uid),
            "namespace": namespace,
            "labels": {
                LABEL_APP: WORKER_APP,
                LABEL_COMPONENT: "worker",
                LABEL_MANAGED_BY: OPERATOR_NAME,
                LABEL_JOB: label_value(name),
                LABEL_JOB_UID: uid,
                LABEL_ATTEMPT: str(attempt),
            },
            "annotations": {
                ANNOTATION_REQUIRED_MIB: str(required_mib),
                ANNOTATION_GPU: str(admission.get("gpu", "")),
                ANNOTATION_GPU_UUID: str(admission.get("uuid", "")),
                ANNOTATION_JOB_NAME: name,
            },
            "ownerReferences": [_owner(name, uid)],
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": spec.deadline_seconds,
            "serviceAccountName": settings.worker_service_account,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": [node]}
                                ]
                            }
                        ]
                    }
                }
            },
            "tolerations": tolerations,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": WORKER_UID,
                "runAsGroup": WORKER_UID,
                # Makes the output claim writable by the worker where the volume supports it.
                "fsGroup": WORKER_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        },
    }
