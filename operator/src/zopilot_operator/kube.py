"""The Kubernetes API edge: small async calls, every error translated (``errors.py``).

The official client is synchronous; calls run in a worker thread so the kopf
event loop never blocks. Objects go in and come out as plain dicts in the API's
own camelCase (``_preload_content=False``), the form the pure core reads.

Error mapping (:func:`translate`): 409 AlreadyExists -> AlreadyExistsError,
other 409 -> ConflictError (retry soon), 404/410 -> NotFoundError, 429/5xx and
transport errors -> RetriableError (Retry-After honoured), 403 "exceeded quota"
and 403 for a ServiceAccount that does not exist yet -> RetriableError, other
4xx -> PermanentError with the API's message.
:func:`to_kopf_error` converts for the kopf handlers at the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import kopf
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as TransportError
from zopilot_common.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION

from zopilot_operator.clock import format_time
from zopilot_operator.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    OperatorError,
    PermanentError,
    RetriableError,
)
from zopilot_operator.podbuilder import OPERATOR_NAME, configmap_belongs_to, pod_belongs_to
from zopilot_operator.reasons import EventType, Reason

RETRY_DELAY_S = 5.0
QUOTA_DELAY_S = 30.0
EVENT_MESSAGE_MAX = 1024  # the API server refuses longer event messages


def _api_message(exc: ApiException) -> tuple[str, str]:
    """(Status reason, message) from the API's Status body, falling back to the HTTP text."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict):
        return str(body.get("reason", "")), str(body.get("message", exc.reason or ""))
    return "", str(exc.reason or exc.body or "")


def _retry_after(exc: ApiException) -> float:
    try:
        return max(float((exc.headers or {}).get("Retry-After", RETRY_DELAY_S)), 1.0)
    except (TypeError, ValueError):
        return RETRY_DELAY_S


def _service_account_missing(message: str) -> bool:
    """The ServiceAccount admission plugin refusing a pod whose account is not there (yet)."""
    return "error looking up service account" in message or (
        "serviceaccount" in message and "not found" in message
    )


def translate(exc: BaseException, what: str) -> OperatorError:
    """Our error for a failed API call about ``what`` (e.g. "create pod ns/x")."""
    if isinstance(exc, OperatorError):
        return exc
    if not isinstance(exc, ApiException):
        return RetriableError(f"{what}: {type(exc).__name__}: {exc}", delay_s=RETRY_DELAY_S)
    status = exc.status or 0
    reason, message = _api_message(exc)
    text = f"{what}: {message}" if message else f"{what}: HTTP {status}"
    if status == 409:
        return AlreadyExistsError(text) if reason == "AlreadyExists" else ConflictError(text)
    if status in (404, 410):
        return NotFoundError(text)
    if status == 429 or status >= 500 or status == 0:
        return RetriableError(text, delay_s=_retry_after(exc))
    if status == 403 and "exceeded quota" in message:
        return RetriableError(text, delay_s=QUOTA_DELAY_S)
    if status == 403 and _service_account_missing(message):
        return RetriableError(text, delay_s=QUOTA_DELAY_S)
    return PermanentError(text, reason=reason or f"HTTP{status}")


def to_kopf_error(exc: OperatorError) -> Exception:
    """kopf's view of our error, for ``raise to_kopf_error(e) from e`` in a handler."""
    if isinstance(exc, RetriableError):
        return kopf.TemporaryError(exc.message, delay=exc.delay_s)
    if isinstance(exc, PermanentError | AlreadyExistsError | NotFoundError):
        return kopf.PermanentError(exc.message)
    return kopf.TemporaryError(exc.message, delay=RETRY_DELAY_S)


def build_event(
    job: Mapping[str, Any],
    event_type: EventType,
    reason: str,
    message: str,
    now: datetime,
    instance: str = OPERATOR_NAME,
) -> dict[str, Any]:
    """A core/v1 Event about ``job`` (what ``kubectl describe`` shows under Events)."""
    metadata = job.get("metadata") or {}
    stamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{str(metadata.get('name', 'documentjob'))[:200]}.",
            "namespace": metadata.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
        },
        "type": event_type.value,
        "reason": reason,
        "message": message[:EVENT_MESSAGE_MAX],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": OPERATOR_NAME},
        "reportingComponent": f"{GROUP}/operator",
        "reportingInstance": instance,
    }


class Kube:
    """Async wrappers over one ApiClient; each call raises only ``errors.py`` errors."""

    def __init__(self, api_client: ApiClient, timeout_s: float = 30.0) -> None:
        self.core = CoreV1Api(api_client)
        self.custom = CustomObjectsApi(api_client)
        self.timeout_s = timeout_s

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.update(_preload_content=False, _request_timeout=self.timeout_s)
        try:
            response = await asyncio.to_thread(fn, *args, **kwargs)
        except (ApiException, TransportError, OSError) as exc:
            raise translate(exc, what) from exc
        data = response.data
        return json.loads(data) if data else {}

    async def create_pod(
        self, manifest: Mapping[str, Any], job_uid: str, attempt: int
    ) -> tuple[dict[str, Any], bool]:
        """Create the attempt's pod; (pod, True) if created, (existing pod, False) if ours exists.

        A name taken by a pod that is not this job's attempt is a PermanentError.
        """
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        what = f"create pod {namespace}/{name}"
        try:
            pod = await self._call(what, self.core.create_namespaced_pod, namespace, dict(manifest))
            return pod, True
        except AlreadyExistsError:
            existing = await self.get_pod(namespace, name)
        if existing is None:  # deleted between our create and get: try again shortly
            raise RetriableError(f"{what}: existing pod vanished", delay_s=1.0)
        if not pod_belongs_to(existing, job_uid, attempt):
            raise PermanentError(
                f"{what}: the name is taken by a pod that is not attempt {attempt} of this job",
                reason=Reason.POD_NAME_TAKEN,
            )
        return existing, False

    async def create_configmap(self, manifest: Mapping[str, Any], job_uid: str) -> bool:
        """Create a job's ConfigMap; False if it exists already and is the job's.

        A name taken by a ConfigMap the job does not own is a PermanentError.
        """
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        what = f"create configmap {namespace}/{name}"
        try:
            await self._call(
                what, self.core.create_namespaced_config_map, namespace, dict(manifest)
            )
            return True
        except AlreadyExistsError:
            existing = await self._call(
                f"get configmap {namespace}/{name}",
                self.core.read_namespaced_config_map,
                name,
                namespace,
            )
        if not configmap_belongs_to(existing, job_uid):
            raise PermanentError(
                f"{what}: the name is taken by a ConfigMap this job does not own",
                reason=Reason.POD_NAME_TAKEN,
            )
        return False

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod: dict[str, Any] = await self._call(
                f"get pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace
            )
        except NotFoundError:
            return None
        return pod

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod; already gone is fine."""
        with contextlib.suppress(NotFoundError):
            await self._call(
                f"delete pod {namespace}/{name}", self.core.delete_namespaced_pod, name, namespace
            )

    async def list_nodes(self) -> list[dict[str, Any]]:
        body = await self._call("list nodes", self.core.list_node)
        return list(body.get("items", []))

    async def list_jobs(self) -> list[dict[str, Any]]:
        body = await self._call(
            "list documentjobs", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
        )
        return list(body.get("items", []))

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = await self._call(
                f"get documentjob {namespace}/{name}",
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
            )
        except NotFoundError:
            return None
        return job

    async def patch_job_status(
        self,
        namespace: str,
        name: str,
        status_patch: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch of ``status`` (the client's default content type for a dict body).

        With ``resource_version`` the patch applies only to that version of the
        object (409 ConflictError otherwise): admission decisions use it so a
        decision made on a stale read is never written.
        """
        body: dict[str, Any] = {"status": dict(status_patch)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        result: dict[str, Any] = await self._call(
            f"patch status of documentjob {namespace}/{name}",
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
        )
        return result

    async def emit_event(self, event: Mapping[str, Any]) -> None:
        namespace = event["metadata"]["namespace"]
        await self._call(
            f"create event in {namespace}",
            self.core.create_namespaced_event,
            namespace,
            dict(event),
        )
