"""Against the real control plane: admission runs on job events, not only every
``admission_interval_s``; a namespaced operator plans and admits only its
namespaces. Workers are the stand-in ``zopilot_dev.fakeworker``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from zopilot_dev import fakeworker
from zopilot_dev.builders import DocumentJobBuilder
from zopilot_dev.cluster import LocalCluster
from zopilot_dev.operatorproc import OperatorProcess
from zopilot_dev.procs import wait_for
from zopilot_dev.waiting import job_status, worker_pods

pytestmark = pytest.mark.cluster

# No round is due for an hour: only an event can start one after the first.
NEVER_S = 3600


def submit(c: LocalCluster, ns: str, name: str) -> None:
    job = DocumentJobBuilder(name, ns).url(f"https://files.example/{name}.pdf").gpu_memory("2Gi")
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump(job.obj()))


def admitted(c: LocalCluster, ns: str, name: str) -> bool:
    conditions = job_status(c, ns, name).get("conditions") or []
    return any(x["type"] == "Admitted" and x["status"] == "True" for x in conditions)


def wait_admitted(c: LocalCluster, ns: str, name: str) -> None:
    assert wait_for(lambda: admitted(c, ns, name), timeout_s=60, interval_s=0.25), (
        f"{ns}/{name} not admitted: {job_status(c, ns, name)}"
    )


@pytest.fixture
def operator(crd: LocalCluster, control_dir: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        crd,
        log_name="operator-events",
        admission_interval_s=NEVER_S,
        worker_command=fakeworker.command(control_dir),
    )
    op.start()
    yield op
    op.stop()
    assert not op.alive()


def test_a_new_job_is_admitted_on_its_event(
    operator: OperatorProcess, namespace: str, script: Callable[..., Path]
) -> None:
    c = operator.cluster
    for name in ("first", "second"):
        script(namespace, name, hold=True)
    # The first may be admitted by the round every operator runs when it starts.
    submit(c, namespace, "first")
    wait_admitted(c, namespace, "first")
    # The next round on the interval is an hour away: this one needs the event.
    submit(c, namespace, "second")
    wait_admitted(c, namespace, "second")


@pytest.fixture
def other_namespace(crd: LocalCluster) -> Iterator[str]:
    ns = f"other-{uuid.uuid4().hex[:6]}"
    crd.kubectl("create", "namespace", ns)
    yield ns
    crd.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s")
    assert crd.kubectl("get", "namespace", ns, check=False).returncode != 0


@pytest.fixture
def namespaced_operator(
    crd: LocalCluster, control_dir: Path, namespace: str
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        crd,
        log_name="operator-namespaced",
        watch_namespaces=[namespace],
        worker_command=fakeworker.command(control_dir),
    )
    op.start()
    yield op
    op.stop()
    assert not op.alive()


def test_a_namespaced_operator_admits_only_in_its_namespaces(
    namespaced_operator: OperatorProcess,
    namespace: str,
    other_namespace: str,
    script: Callable[..., Path],
) -> None:
    c = namespaced_operator.cluster
    script(namespace, "mine", hold=True)
    script(other_namespace, "theirs", hold=True)
    # Theirs first: a cluster-wide list would see it in the same round as mine.
    submit(c, other_namespace, "theirs")
    submit(c, namespace, "mine")
    wait_admitted(c, namespace, "mine")
    # Two more rounds (0.5 s apart in tests), then theirs is still untouched.
    assert wait_for(lambda: worker_pods(c, namespace, "mine") != [], timeout_s=30)
    assert not wait_for(lambda: job_status(c, other_namespace, "theirs") != {}, timeout_s=3)
    assert worker_pods(c, other_namespace, "theirs") == []
