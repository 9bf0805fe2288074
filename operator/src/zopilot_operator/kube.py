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
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import kopf
from kubernetes.client import ApiClient
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
LIST_PAGE_SIZE = 500  # objects per LIST page (limit/continue), like client-go's pager
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


class Generic:
    """HTTP calls through ``ApiClient``'s generic path: its kubeconfig, auth, TLS
    and connection pool, but none of the generated API classes.

    ``CoreV1Api`` alone imports every core/v1 model class (82 MiB of RSS) and
    ``CustomObjectsApi`` 13.5 MiB; the operator reads plain dicts and needs
    neither. Responses are raw (``.data`` holds the JSON); non-2xx raises
    ``ApiException`` as the generated clients do.
    """

    def __init__(self, api_client: ApiClient) -> None:
        self.api = api_client

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        _request_timeout: float | None = None,
        **_: Any,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=_request_timeout)
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response

    def watch(
        self, path: str, query: Mapping[str, Any], timeout_s: float
    ) -> Iterator[dict[str, Any]]:
        """The events of one watch request (``watch=1``), as they arrive, until the
        server ends it (``timeoutSeconds``) or ``timeout_s`` pass without a byte."""
        request = self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=[(k, v) for k, v in {**query, "watch": "1"}.items() if v is not None],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=(10.0, timeout_s))
        if not 200 <= response.status <= 299:
            response.read()  # type: ignore[no-untyped-call]
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        raw = response.response
        buffer = b""
        try:
            for chunk in raw.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        slim(event.get("object"))
                        yield event
        finally:
            raw.release_conn()


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(obj: Any) -> Any:
    """Drop, in place, what the operator never reads from an API object or from each
    item of a LIST: ``metadata.managedFields`` (half the decoded size of a job or a
    pod: 12.5 -> 5.2 KiB per job, 35 -> 17 KiB per pod) and kubectl's
    last-applied-configuration annotation (a second copy of a spec). The caches hold
    every job and worker pod, so this is most of the operator's memory at scale.
    Nothing is ever written back from these copies (status patches only)."""
    if isinstance(obj, dict):
        items = obj.get("items")
        for item in items if isinstance(items, list) else (obj,):
            meta = item.get("metadata") if isinstance(item, dict) else None
            if isinstance(meta, dict):
                meta.pop("managedFields", None)
                annotations = meta.get("annotations")
                if isinstance(annotations, dict):
                    annotations.pop(LAST_APPLIED, None)
    return obj


def _seg(value: str) -> str:
    return quote(value, safe="")


class CoreV1(Generic):
    """The few core/v1 calls the operator makes, with ``CoreV1Api``'s names and arguments."""

    def create_namespaced_pod(self, namespace: str, body: Mapping[str, Any], **kw: Any) -> Any:
        return self.request("POST", f"/api/v1/namespaces/{_seg(namespace)}/pods", body=body, **kw)

    def read_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.request("GET", f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(name)}", **kw)

    def delete_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> Any:
        path = f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(name)}"
        return self.request("DELETE", path, **kw)

    def list_namespaced_pod(self, namespace: str, **kw: Any) -> Any:
        return self.request("GET", f"/api/v1/namespaces/{_seg(namespace)}/pods", **kw)

    def list_pod_for_all_namespaces(self, **kw: Any) -> Any:
        return self.request("GET", "/api/v1/pods", **kw)

    def create_namespaced_config_map(
        self, namespace: str, body: Mapping[str, Any], **kw: Any
    ) -> Any:
        path = f"/api/v1/namespaces/{_seg(namespace)}/configmaps"
        return self.request("POST", path, body=body, **kw)

    def read_namespaced_config_map(self, name: str, namespace: str, **kw: Any) -> Any:
        path = f"/api/v1/namespaces/{_seg(namespace)}/configmaps/{_seg(name)}"
        return self.request("GET", path, **kw)

    def list_node(self, **kw: Any) -> Any:
        return self.request("GET", "/api/v1/nodes", **kw)

    def create_namespaced_event(self, namespace: str, body: Mapping[str, Any], **kw: Any) -> Any:
        path = f"/api/v1/namespaces/{_seg(namespace)}/events"
        return self.request("POST", path, body=body, **kw)


class CustomObjects(Generic):
    """DocumentJob calls, with ``CustomObjectsApi``'s names and arguments."""

    @staticmethod
    def _path(group: str, version: str, plural: str, namespace: str | None = None) -> str:
        where = f"/namespaces/{_seg(namespace)}" if namespace is not None else ""
        return f"/apis/{group}/{version}{where}/{plural}"

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **kw: Any) -> Any:
        return self.request("GET", self._path(group, version, plural), **kw)

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **kw: Any
    ) -> Any:
        return self.request("GET", self._path(group, version, plural, namespace), **kw)

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        path = f"{self._path(group, version, plural, namespace)}/{_seg(name)}"
        return self.request("GET", path, **kw)

    def patch_namespaced_custom_object_status(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: Mapping[str, Any],
        **kw: Any,
    ) -> Any:
        path = f"{self._path(group, version, plural, namespace)}/{_seg(name)}/status"
        return self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json", **kw
        )


class Kube:
    """Async wrappers over one ApiClient; each call raises only ``errors.py`` errors.

    ``namespaces``: where DocumentJobs are listed (empty: all namespaces), the
    operator's ``watch_namespaces``.
    """

    def __init__(
        self, api_client: ApiClient, timeout_s: float = 30.0, namespaces: Sequence[str] = ()
    ) -> None:
        self.core = CoreV1(api_client)
        self.custom = CustomObjects(api_client)
        self.timeout_s = timeout_s
        self.namespaces = tuple(namespaces)

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` in a worker thread, its JSON answer decoded there too: a LIST of
        many objects decoded on the event loop would stall every other task."""
        kwargs.update(_preload_content=False, _request_timeout=self.timeout_s)

        def call() -> Any:
            data = fn(*args, **kwargs).data
            return slim(json.loads(data)) if data else {}

        try:
            return await asyncio.to_thread(call)
        except (ApiException, TransportError, OSError) as exc:
            raise translate(exc, what) from exc

    async def _list(
        self, what: str, fn: Callable[..., Any], *args: Any, **query: Any
    ) -> tuple[list[dict[str, Any]], str]:
        """Every item of a LIST, page by page (limit/continue); and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = {"limit": LIST_PAGE_SIZE, "continue": token, **query}
            body = await self._call(what, fn, *args, query=page)
            items.extend(body.get("items") or [])
            metadata = body.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion", ""))

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
        items, _ = await self._list("list nodes", self.core.list_node)
        return items

    async def list_jobs(self) -> tuple[list[dict[str, Any]], dict[str | None, str]]:
        """Every DocumentJob in ``namespaces`` (all namespaces when empty), paged; and
        each LIST's resourceVersion, by namespace (None: the all-namespaces LIST)."""
        jobs: list[dict[str, Any]] = []
        versions: dict[str | None, str] = {}
        for namespace in self.namespaces or (None,):
            items, versions[namespace] = await self.list_jobs_in(namespace)
            jobs.extend(items)
        return jobs, versions

    async def list_jobs_in(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """DocumentJobs in one namespace (all when None), paged, and the list's
        resourceVersion (where a watch of them continues)."""
        if namespace is None:
            return await self._list(
                "list documentjobs", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
            )
        return await self._list(
            f"list documentjobs in {namespace}",
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
        )

    async def list_worker_pods(
        self, selector: str, namespace: str | None
    ) -> tuple[list[dict[str, Any]], str]:
        """Pods matching ``selector`` (server side) in one namespace or all, paged, and
        the list's resourceVersion (where a watch of them continues)."""
        if namespace is None:
            return await self._list(
                "list worker pods", self.core.list_pod_for_all_namespaces, labelSelector=selector
            )
        return await self._list(
            f"list worker pods in {namespace}",
            self.core.list_namespaced_pod,
            namespace,
            labelSelector=selector,
        )

    async def list_pods(self, label_selector: str, namespace: str = "") -> list[dict[str, Any]]:
        """Pods matching ``label_selector`` in ``namespace`` (empty: all namespaces)."""
        items, _ = await self.list_worker_pods(label_selector, namespace or None)
        return items

    def watch_pods(
        self,
        selector: str,
        namespace: str | None,
        resource_version: str,
        on_event: Callable[[str, dict[str, Any]], None],
        timeout_s: int = 300,
    ) -> str | None:
        """Blocking: watch pods matching ``selector`` from ``resource_version``, calling
        ``on_event(type, pod)`` for each change. Returns the resourceVersion to go on
        from when the server ends the watch, None when that version has expired
        (410 Gone: list again)."""
        path = "/api/v1/pods" if namespace is None else f"/api/v1/namespaces/{_seg(namespace)}/pods"
        query = {"labelSelector": selector}
        return self._watch("watch pods", path, query, resource_version, on_event, timeout_s)

    def watch_jobs(
        self,
        namespace: str | None,
        resource_version: str,
        on_event: Callable[[str, dict[str, Any]], None],
        timeout_s: int = 300,
    ) -> str | None:
        """Blocking: watch DocumentJobs in one namespace (all when None) from
        ``resource_version``, like :meth:`watch_pods`."""
        path = CustomObjects._path(GROUP, VERSION, PLURAL, namespace)
        return self._watch("watch documentjobs", path, {}, resource_version, on_event, timeout_s)

    def _watch(
        self,
        what: str,
        path: str,
        query: Mapping[str, Any],
        resource_version: str,
        on_event: Callable[[str, dict[str, Any]], None],
        timeout_s: int,
    ) -> str | None:
        query = {
            **query,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_s,
        }
        try:
            for event in self.core.watch(path, query, timeout_s + 30.0):
                kind, obj = str(event.get("type", "")), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise RetriableError(f"{what}: {obj.get('message', obj)}")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    resource_version = str(version)
                if kind != "BOOKMARK":
                    on_event(kind, obj)
        except ApiException as exc:
            if exc.status == 410:
                return None
            raise translate(exc, what) from exc
        except (TransportError, OSError) as exc:
            raise translate(exc, what) from exc
        return resource_version

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
