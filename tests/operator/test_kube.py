"""The Kubernetes edge: error translation, events, idempotent pod creation (fake API objects).

Calls against a real API server are covered by the integration tests.
"""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest
from kubernetes.client import ApiClient, CoreV1Event
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import NewConnectionError
from zopilot_common.spec import DocumentJobSpec
from zopilot_operator.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    OperatorError,
    PermanentError,
    RetriableError,
)
from zopilot_operator.kube import Kube, build_event, to_kopf_error, translate
from zopilot_operator.podbuilder import build_worker_pod
from zopilot_operator.reasons import EventType
from zopilot_operator.settings import OperatorSettings
from zopilot_operator.testing import JobBuilder, at


def api_error(
    status: int, reason: str = "", message: str = "", headers: dict[str, str] | None = None
) -> ApiException:
    body = json.dumps({"kind": "Status", "reason": reason, "message": message, "code": status})
    exc = ApiException(status=status, reason="HTTP reason", body=body)
    exc.headers = headers
    return exc


QUOTA = 'pods "x" is forbidden: exceeded quota: gpu'
NO_SA = (
    'pods "x" is forbidden: error looking up service account ns/worker: '
    'serviceaccount "worker" not found'
)
PSA = 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'
REFUSED = NewConnectionError(None, "refused")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "kind", "delay", "status_reason"),
    [
        pytest.param(api_error(409, "AlreadyExists"), AlreadyExistsError, None, None, id="409"),
        pytest.param(api_error(409, "Conflict"), ConflictError, 1.0, None, id="409-conflict"),
        pytest.param(api_error(404, "NotFound"), NotFoundError, None, None, id="404"),
        pytest.param(api_error(410, "Gone"), NotFoundError, None, None, id="410"),
        pytest.param(
            api_error(429, "TooManyRequests", headers={"Retry-After": "7"}),
            RetriableError, 7.0, None, id="429-retry-after",
        ),
        pytest.param(api_error(500, "InternalError"), RetriableError, 5.0, None, id="500"),
        pytest.param(
            api_error(503, "ServiceUnavailable", headers={"Retry-After": "soon"}),
            RetriableError, 5.0, None, id="503-bad-retry-after",
        ),
        pytest.param(api_error(403, "Forbidden", QUOTA), RetriableError, 30.0, None, id="quota"),
        pytest.param(
            api_error(403, "Forbidden", NO_SA), RetriableError, 30.0, None, id="sa-not-yet"
        ),
        pytest.param(api_error(403, "Forbidden", PSA), PermanentError, None, "Forbidden", id="psa"),
        pytest.param(api_error(422, "Invalid"), PermanentError, None, "Invalid", id="422"),
        pytest.param(ApiException(status=400), PermanentError, None, "HTTP400", id="400-no-body"),
        pytest.param(REFUSED, RetriableError, 5.0, None, id="transport"),
        pytest.param(TimeoutError("read timed out"), RetriableError, 5.0, None, id="timeout"),
    ],
)  # fmt: skip
def test_translate(
    exc: BaseException, kind: type[OperatorError], delay: float | None, status_reason: str | None
) -> None:
    error = translate(exc, "create pod ns/x")
    assert type(error) is kind
    assert error.message.startswith("create pod ns/x: ")
    if delay is not None:
        assert isinstance(error, RetriableError) and error.delay_s == delay
    if status_reason is not None:
        assert isinstance(error, PermanentError) and error.reason == status_reason


def test_translate_keeps_the_api_message() -> None:
    error = translate(
        api_error(422, "Invalid", "spec.containers[0].image: Required value"), "create pod ns/x"
    )
    assert error.message == "create pod ns/x: spec.containers[0].image: Required value"


@pytest.mark.parametrize(
    ("error", "kopf_type", "delay"),
    [
        (RetriableError("later", delay_s=12), kopf.TemporaryError, 12),
        (ConflictError("changed"), kopf.TemporaryError, 1.0),
        (PermanentError("never"), kopf.PermanentError, None),
        (NotFoundError("gone"), kopf.PermanentError, None),
    ],
)
def test_to_kopf_error(
    error: OperatorError, kopf_type: type[Exception], delay: float | None
) -> None:
    converted = to_kopf_error(error)
    assert type(converted) is kopf_type
    if delay is not None:
        assert isinstance(converted, kopf.TemporaryError) and converted.delay == delay


def test_event_is_a_valid_core_v1_event() -> None:
    job = JobBuilder("march", "finance").obj()
    event = build_event(job, EventType.WARNING, "MetricsStale", "x" * 5000, at(0), instance="op-0")
    CoreV1Event.model_validate(event)  # unknown or misspelt fields fail here
    assert event["involvedObject"] == {
        "apiVersion": "zopilot.dev/v1alpha1",
        "kind": "DocumentJob",
        "name": "march",
        "namespace": "finance",
        "uid": "uid-finance-march",
    }
    assert (event["type"], event["reason"], len(event["message"])) == (
        "Warning",
        "MetricsStale",
        1024,
    )
    assert event["metadata"] == {"generateName": "march.", "namespace": "finance"}


# --- idempotent pod creation against a fake CoreV1Api ------------------------------------


class Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


class FakeCore:
    """Stands in for CoreV1Api: create echoes or raises; read returns ``existing`` or 404s."""

    def __init__(
        self, *, create_error: ApiException | None = None, existing: dict[str, Any] | None = None
    ) -> None:
        self.create_error = create_error
        self.existing = existing
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def create_namespaced_pod(self, namespace: str, body: dict[str, Any], **_: Any) -> Response:
        self.calls.append(("create", (namespace, body["metadata"]["name"])))
        if self.create_error:
            raise self.create_error
        return Response(body)

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Response:
        self.calls.append(("read", (namespace, name)))
        if self.existing is None:
            raise api_error(404, "NotFound")
        return Response(self.existing)

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Response:
        self.calls.append(("delete", (namespace, name)))
        raise api_error(404, "NotFound")


JOB = JobBuilder("march", "finance").obj()
MANIFEST = build_worker_pod(
    JOB,
    DocumentJobSpec.from_k8s(JOB["spec"]),
    1,
    {"node": "gpu-a", "requiredMiB": 1024},
    OperatorSettings(),
)
POD = MANIFEST["metadata"]["name"]
EXISTS = api_error(409, "AlreadyExists", f'pods "{POD}" already exists')


def kube_with(core: FakeCore) -> Kube:
    kube = Kube(ApiClient())
    kube.core = core  # type: ignore[assignment]
    return kube


async def test_create_pod_creates() -> None:
    core = FakeCore()
    pod, created = await kube_with(core).create_pod(MANIFEST, "uid-finance-march", 1)
    assert created and pod["metadata"]["name"] == POD
    assert core.calls == [("create", ("finance", POD))]


async def test_create_pod_again_returns_our_existing_pod() -> None:
    core = FakeCore(create_error=EXISTS, existing=MANIFEST)
    pod, created = await kube_with(core).create_pod(MANIFEST, "uid-finance-march", 1)
    assert not created and pod == MANIFEST
    assert [c[0] for c in core.calls] == ["create", "read"]


async def test_create_pod_refuses_a_stranger_with_our_name() -> None:
    stranger = json.loads(json.dumps(MANIFEST))
    stranger["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    with pytest.raises(PermanentError, match="taken by a pod that is not attempt 1"):
        await kube_with(FakeCore(create_error=EXISTS, existing=stranger)).create_pod(
            MANIFEST, "uid-finance-march", 1
        )


async def test_create_pod_when_the_existing_pod_vanished() -> None:
    with pytest.raises(RetriableError, match="vanished"):
        await kube_with(FakeCore(create_error=EXISTS)).create_pod(MANIFEST, "uid-finance-march", 1)


async def test_create_pod_translates_other_errors() -> None:
    core = FakeCore(create_error=api_error(403, "Forbidden", "violates PodSecurity"))
    with pytest.raises(PermanentError):
        await kube_with(core).create_pod(MANIFEST, "uid-finance-march", 1)


async def test_get_and_delete_tolerate_absence() -> None:
    kube = kube_with(FakeCore())
    assert await kube.get_pod("finance", POD) is None
    await kube.delete_pod("finance", POD)
