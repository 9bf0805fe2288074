"""Leader election and fencing against the real API server (issue 9). Our clock is
a fake monotonic clock the test advances; the Lease objects are real."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from kubernetes import config
from kubernetes.client import ApiClient
from zopilot_dev.cluster import LocalCluster
from zopilot_operator.clock import utcnow
from zopilot_operator.leader import LeaseElector, _micro

pytestmark = pytest.mark.cluster

LEASE = "zopilot-operator-admission"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ns(cluster: LocalCluster) -> Iterator[str]:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def api(cluster: LocalCluster) -> Iterator[ApiClient]:
    client: ApiClient = config.new_client_from_config(config_file=cluster.state.kubeconfig)  # type: ignore[no-untyped-call]
    yield client
    client.close()


def write_lease(c: LocalCluster, ns: str, holder: str, renewed_hours_ago: float) -> None:
    """Another instance's Lease, its renewTime from *its* clock (here: far behind ours)."""
    renewed = _micro(utcnow() - timedelta(hours=renewed_hours_ago))
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": ns},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": renewed,
            "renewTime": renewed,
            "leaseTransitions": 0,
        },
    }
    c.kubectl("apply", "-f", "-", input=json.dumps(lease))


def holder(c: LocalCluster, ns: str) -> str:
    return c.kubectl(
        "get", "lease", LEASE, "-n", ns, "-o", "jsonpath={.spec.holderIdentity}"
    ).stdout


async def test_expiry_is_judged_by_local_observation_not_the_holders_clock(
    cluster: LocalCluster, ns: str, api: ApiClient
) -> None:
    clock = Clock()
    write_lease(cluster, ns, "other", renewed_hours_ago=1)  # a clock an hour behind ours
    me = LeaseElector(api, ns, LEASE, "me", 15.0, clock=clock)
    # Compared with our wall clock that renewTime is an hour old; but we have only
    # just seen it: the other holder may be renewing right now.
    assert not await me.ensure()
    clock.now += 10
    assert not await me.ensure()
    write_lease(cluster, ns, "other", renewed_hours_ago=0.99)  # it renews (still "old")
    clock.now += 10  # 20 s since we first saw it, 10 s since it changed
    assert not await me.ensure()
    assert holder(cluster, ns) == "other"
    clock.now += 16  # no change for a full lease duration on our clock: expired
    assert await me.ensure()
    assert holder(cluster, ns) == "me"


async def test_a_leader_stops_before_anyone_may_take_over(
    cluster: LocalCluster, ns: str, api: ApiClient
) -> None:
    clock = Clock()
    me = LeaseElector(api, ns, LEASE, "me", 15.0, clock=clock)
    assert await me.ensure() and me.holds()
    clock.now += 13.4
    assert me.holds()
    clock.now += 0.2  # 90% of the lease since the renewal started: no longer sure
    assert not me.holds()
    # A round in progress fences each write: it renews once half the lease is gone ...
    assert await me.ensure()
    clock.now += 8
    assert await me.fence() and me.holds()
    clock.now += 13
    assert me.holds()  # renewed at +8, valid for 13.5 s from then
    # ... and stops at once when another instance holds the Lease.
    write_lease(cluster, ns, "other", renewed_hours_ago=0)
    clock.now += 1  # the fence renews (half the lease has passed) and finds it taken
    assert not await me.fence()
    assert not me.holds()


async def test_concurrent_fences_share_one_renewal_and_keep_the_lease(
    cluster: LocalCluster, ns: str, api: ApiClient
) -> None:
    """A round's 16 concurrent writes reach the fence together once half the lease is
    gone: one renewal, not 16 racing on the same resourceVersion (which conflicted
    with each other and ended the leadership mid-round)."""
    import asyncio

    clock = Clock()
    me = LeaseElector(api, ns, LEASE, "me", 15.0, clock=clock)
    assert await me.ensure()
    renewals = 0
    replace = me.api.replace_namespaced_lease

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal renewals
        renewals += 1
        return replace(*args, **kwargs)

    me.api.replace_namespaced_lease = counting  # type: ignore[method-assign]
    clock.now += 8
    assert all(await asyncio.gather(*(me.fence() for _ in range(16))))
    assert renewals == 1 and me.is_leader and me.holds()


async def test_a_released_lease_is_taken_over_at_once(
    cluster: LocalCluster, ns: str, api: ApiClient
) -> None:
    clock = Clock()
    me = LeaseElector(api, ns, LEASE, "me", 15.0, clock=clock)
    successor = LeaseElector(api, ns, LEASE, "next", 15.0, clock=clock)
    assert await me.ensure()
    assert not await successor.ensure()  # held: a successor would wait a lease
    assert await me.release()
    assert not me.holds() and not await me.fence()
    assert holder(cluster, ns) == ""
    assert await successor.ensure()  # no wait: the holder is cleared
    assert holder(cluster, ns) == "next"
    assert not await me.release()  # not ours any more
    assert not await me.ensure()  # released for good: shutting down
