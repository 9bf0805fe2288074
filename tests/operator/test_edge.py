"""The operator's edge without a cluster: the model-free API client, paged lists,
merge-patch composition, watch-cache ordering and what wakes admission."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from zopilot_operator.handlers import wakes_admission
from zopilot_operator.kube import Kube
from zopilot_operator.merge import compose_patches, merge_patch
from zopilot_operator.runtime import is_older
from zopilot_operator.testing import T0, JobBuilder


class Raw:
    def __init__(self, status: int, body: Any) -> None:
        self.status, self.reason = status, "reason"
        self.data = json.dumps(body).encode()
        self.headers: dict[str, str] = {}
        self.response = self

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> dict[str, str]:
        return self.headers


class Recorder(ApiClient):
    """An ApiClient whose HTTP layer answers from ``pages`` and records each call."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        configuration = Configuration(host="https://k8s.test")
        configuration.api_key = {"BearerToken": "Bearer t0ken"}
        super().__init__(configuration)
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:  # type: ignore[override]
        self.calls.append((method, url, dict(header_params or {}), body))
        return Raw(*self.answers.pop(0))


def test_importing_the_operator_loads_no_generated_api_classes() -> None:
    """CoreV1Api imports every core/v1 model (82 MiB of RSS); the operator needs none."""
    code = (
        "import sys, zopilot_operator.main, zopilot_operator.handlers\n"
        "print(sorted(m for m in sys.modules if m.endswith(('core_v1_api', 'custom_objects_api'))"
        " or m.startswith('kubernetes.client.models.v1_pod')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_lists_are_paged_and_namespaced() -> None:
    api = Recorder(
        [
            (200, {"items": [{"n": 1}], "metadata": {"continue": "tok/1"}}),
            (200, {"items": [{"n": 2}], "metadata": {"resourceVersion": "7"}}),
            (200, {"items": [{"n": 3}], "metadata": {}}),
        ]
    )
    kube = Kube(api, namespaces=["team-a", "team-b"])
    assert await kube.list_jobs() == (
        [{"n": 1}, {"n": 2}, {"n": 3}],
        {"team-a": "7", "team-b": ""},
    )
    urls = [c[1] for c in api.calls]
    base = "https://k8s.test/apis/zopilot.dev/v1alpha1/namespaces"
    assert urls == [
        f"{base}/team-a/documentjobs?limit=500",
        f"{base}/team-a/documentjobs?limit=500&continue=tok/1",
        f"{base}/team-b/documentjobs?limit=500",
    ]
    assert all(c[2]["authorization"] == "Bearer t0ken" for c in api.calls)


def heavy(name: str) -> dict[str, Any]:
    """An object as the API returns it, with what the operator never reads."""
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "5",
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"spec": {}}',
                "team": "docs",
            },
        },
        "spec": {"documents": ["s3://b/x.pdf"]},
    }


async def test_cached_objects_carry_no_managed_fields_or_last_applied_copy() -> None:
    """Half of a cached job's or pod's memory was managedFields; every LIST page,
    single-object answer and watch event is slimmed as it is decoded."""
    api = Recorder(
        [
            (200, {"items": [heavy("a"), heavy("b")], "metadata": {"resourceVersion": "9"}}),
            (200, heavy("c")),
        ]
    )
    kube = Kube(api)
    jobs, _ = await kube.list_jobs()
    job = await kube.get_job("ns", "c")
    assert job is not None
    for obj in [*jobs, job]:
        assert "managedFields" not in obj["metadata"]
        assert obj["metadata"]["annotations"] == {"team": "docs"}
        assert obj["spec"] == {"documents": ["s3://b/x.pdf"]}


def test_watch_events_are_slimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [{"type": "ADDED", "object": heavy("a")}, {"type": "BOOKMARK", "object": {}}]
    body = b"".join(json.dumps(e).encode() + b"\n" for e in lines)

    class Stream(Raw):
        def stream(self, *_: Any, **__: Any) -> Any:
            yield body

        def release_conn(self) -> None:
            pass

    api = Recorder([])
    monkeypatch.setattr(api, "call_api", lambda *a, **k: Stream(200, None))
    kube = Kube(api)
    seen: list[dict[str, Any]] = []
    kube.watch_jobs(None, "1", lambda kind, obj: seen.append(obj))
    assert [o["metadata"]["name"] for o in seen] == ["a"]
    assert "managedFields" not in seen[0]["metadata"]
    assert seen[0]["metadata"]["annotations"] == {"team": "docs"}


async def test_worker_pods_are_selected_on_the_server() -> None:
    api = Recorder([(200, {"items": [], "metadata": {"resourceVersion": "42"}})])
    items, version = await Kube(api).list_worker_pods("app.kubernetes.io/name=zopilot-worker", None)
    assert (items, version) == ([], "42")
    assert api.calls[0][1] == (
        "https://k8s.test/api/v1/pods?limit=500&labelSelector=app.kubernetes.io/name%3Dzopilot-worker"
    )


async def test_status_patch_is_a_conditional_merge_patch() -> None:
    api = Recorder([(200, {"metadata": {"resourceVersion": "8"}})])
    await Kube(api).patch_job_status("ns", "job", {"phase": "Queued"}, resource_version="7")
    method, url, headers, body = api.calls[0]
    assert (method, url) == (
        "PATCH",
        "https://k8s.test/apis/zopilot.dev/v1alpha1/namespaces/ns/documentjobs/job/status",
    )
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert body == {"status": {"phase": "Queued"}, "metadata": {"resourceVersion": "7"}}


def test_errors_are_raised_like_the_generated_clients() -> None:
    api = Recorder([(404, {"kind": "Status", "reason": "NotFound", "message": "gone"})])
    with pytest.raises(ApiException) as info:
        Kube(api).core.read_namespaced_pod("p", "ns")
    assert info.value.status == 404


def _random_patch(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rng.sample("abcde", rng.randint(0, 4)):
        roll = rng.random()
        if roll < 0.2:
            out[key] = None
        elif roll < 0.5 and depth < 2:
            out[key] = _random_patch(rng, depth + 1)
        elif roll < 0.6:
            out[key] = [rng.randint(0, 3)]
        else:
            out[key] = rng.randint(0, 9)
    return out


@pytest.mark.parametrize("seed", range(200))
def test_composed_patch_equals_the_two_patches_in_turn(seed: int) -> None:
    rng = random.Random(seed)
    target = merge_patch({}, _random_patch(rng))
    first, second = _random_patch(rng), _random_patch(rng)
    try:
        composed = compose_patches(first, second)
    except ValueError:
        # Refused only where first replaces a key that second merges an object into.
        assert any(
            isinstance(v, dict) and k in first and not isinstance(first[k], dict)
            for k, v in second.items()
        ) or _nested_refusal(first, second)
        return
    assert merge_patch(target, composed) == merge_patch(merge_patch(target, first), second)


def _nested_refusal(first: dict[str, Any], second: dict[str, Any]) -> bool:
    return any(
        isinstance(v, dict)
        and isinstance(first.get(k), dict)
        and (
            any(
                isinstance(w, dict) and j in first[k] and not isinstance(first[k][j], dict)
                for j, w in v.items()
            )
            or _nested_refusal(first[k], v)
        )
        for k, v in second.items()
    )


def _job(rv: str, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "resourceVersion": rv}}


@pytest.mark.parametrize(
    ("new", "old", "older"),
    [
        (_job("5"), _job("7"), True),
        (_job("7"), _job("5"), False),
        (_job("5"), None, False),
        (_job("5", "u2"), _job("7"), False),  # a new object under the same name
        (_job("x"), _job("7"), False),
    ],
)
def test_watch_cache_keeps_the_newer_copy(
    new: dict[str, Any], old: dict[str, Any] | None, older: bool
) -> None:
    assert is_older(new, old) is older


NEW = JobBuilder("j").obj()
QUEUED = JobBuilder("j").queued(1024).obj()
ADMITTED = JobBuilder("j").admitted("gpu-a", 1024).obj()
RUNNING = JobBuilder("j").admitted("gpu-a", 1024).running(T0).obj()
DONE = JobBuilder("j").phase("Succeeded").obj()


@pytest.mark.parametrize(
    ("old", "new", "wakes"),
    [
        pytest.param(None, NEW, True, id="created"),
        pytest.param(NEW, NEW, True, id="still-unplanned"),
        pytest.param(NEW, QUEUED, True, id="planned"),
        pytest.param(QUEUED, QUEUED, False, id="waiting-message-written"),
        pytest.param(QUEUED, ADMITTED, False, id="our-own-admission"),
        pytest.param(ADMITTED, RUNNING, False, id="started"),
        pytest.param(RUNNING, RUNNING, False, id="progress"),
        pytest.param(RUNNING, DONE, True, id="finished-frees-a-gpu"),
        pytest.param(RUNNING, QUEUED, True, id="retry-requeued"),
        pytest.param(RUNNING, None, True, id="deleted-while-running"),
        pytest.param(QUEUED, None, False, id="deleted-while-queued"),
        pytest.param(DONE, DONE, False, id="finished-again"),
    ],
)
def test_what_wakes_admission(
    old: dict[str, Any] | None, new: dict[str, Any] | None, wakes: bool
) -> None:
    assert wakes_admission(old, new) is wakes


def test_malloc_arenas_are_left_alone_when_the_environment_sets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zopilot_operator.main import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
