"""Leader election over a coordination.k8s.io Lease, for the admission loop.

Only one operator instance may admit at a time: two admitting from the same
metrics would both spend the same free memory. Writes use the Lease's
resourceVersion, so two candidates racing for an expired Lease cannot both win.

Time is judged the way client-go's leaderelection judges it, never by comparing
another machine's ``renewTime`` with our own clock (clocks differ):

* **Expiry by local observation.** A candidate remembers when *it* last saw the
  Lease record change (``observed_at``, monotonic). Another holder's Lease has
  expired only once ``leaseDurationSeconds`` have passed on our clock since then
  without a change; a record written by a machine whose clock is an hour behind
  is still fresh when we first see it.
* **Fencing.** A leader may act only while :meth:`LeaseElector.holds`: until
  ``valid_s`` (90% of the lease) after the *start* of its last successful
  renewal request. Another candidate cannot take over before a full lease
  duration after that renewal reached the API server, so a leader that could
  not renew in time (the API away, a stalled process) stops writing admissions
  before anyone else may start. The admission loop awaits :meth:`fence` before
  every write: it renews once half the lease has passed, and says stop when the
  Lease could not be kept, so a round that outlasts the lease aborts. Renewals
  are one at a time: the round's concurrent writes all reach the fence at
  once, and parallel renewals of the same resourceVersion would conflict with
  each other (409) and end the leadership they were meant to keep.
* **Release.** On a clean shutdown the leader gives the Lease up (holder
  cleared, like client-go's ``ReleaseOnCancel``), so a successor (a rolling
  update, ``helm upgrade``) takes over at once instead of after a lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException

from zopilot_operator.clock import parse_time, utcnow

log = logging.getLogger("zopilot.operator.leader")

VALID_FRACTION = 0.9  # of the lease; the rest covers clock-rate differences and latency


def _micro(moment: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies one version of the leader record (client-go compares the same)."""
    return (
        spec.get("holderIdentity"),
        spec.get("renewTime"),
        spec.get("acquireTime"),
        spec.get("leaseDurationSeconds"),
        spec.get("leaseTransitions"),
    )


class LeaseElector:
    def __init__(
        self,
        api_client: ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration_s = lease_duration_s
        self.valid_s = lease_duration_s * VALID_FRACTION
        self.clock = clock
        self.is_leader = False
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._valid_until: float | None = None
        self._renewing = asyncio.Lock()
        self._released = False  # after release(): never acquire again (shutting down)

    def holds(self) -> bool:
        """True while this instance may act as leader (see the module doc: fencing)."""
        return self._valid_until is not None and self.clock() < self._valid_until

    def _body(self, now: datetime, acquired: datetime, transitions: int) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration_s),
                "acquireTime": _micro(acquired),
                "renewTime": _micro(now),
                "leaseTransitions": transitions,
            },
        }

    def _call(self, fn: Any, *args: Any) -> dict[str, Any]:
        response = fn(*args, _preload_content=False, _request_timeout=10)
        return dict(json.loads(response.data))

    def _won(self, started: float, body: dict[str, Any]) -> bool:
        self._valid_until = started + self.valid_s
        self._observed, self._observed_at = _record(body["spec"]), started
        return True

    def _try(self) -> bool:
        started = self.clock()  # before the request: the lease may count from its arrival
        now = utcnow()
        try:
            lease = self._call(self.api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            body = self._body(now, now, 0)
            try:
                self._call(self.api.create_namespaced_lease, self.namespace, body)
            except ApiException as e2:
                if e2.status == 409:
                    return False
                raise
            return self._won(started, body)
        spec = lease.get("spec") or {}
        record = _record(spec)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        expired = self.clock() - self._observed_at > duration
        mine = holder == self.identity
        if holder and not mine and not expired:
            self._valid_until = None  # someone else holds it: stop at once
            return False
        acquired = (parse_time(spec.get("acquireTime")) or now) if mine else now
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        body = self._body(now, acquired, transitions)
        body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        try:
            self._call(self.api.replace_namespaced_lease, self.name, self.namespace, body)
        except ApiException as e:
            if e.status == 409:  # written by someone else meanwhile: not ours to trust
                self._valid_until = None
                return False
            raise
        return self._won(started, body)

    def _renewal_due(self) -> bool:
        return (
            self._valid_until is not None
            and self._valid_until - self.clock() < self.lease_duration_s / 2
        )

    async def fence(self) -> bool:
        """Before each leader-only write: renew once half the lease has passed, and
        say whether this instance still :meth:`holds` it. Concurrent callers share
        one renewal."""
        if self._valid_until is None:
            return False
        if self._renewal_due():
            async with self._renewing:
                if self._renewal_due():  # not renewed by the caller we waited for
                    await self._ensure()
        return self.holds()

    async def ensure(self) -> bool:
        """Acquire or renew; True while this instance is the leader and :meth:`holds`."""
        async with self._renewing:
            return await self._ensure()

    async def release(self) -> bool:
        """Give the Lease up if this instance holds it (a clean shutdown): the holder
        is cleared, so another candidate may take it at once. True if released."""
        async with self._renewing:
            self._released = True
            if not self.holds():
                return False
            self._valid_until = None
            self.is_leader = False
            try:
                released = await asyncio.to_thread(self._release)
            except Exception as e:  # the others take over after a lease anyway
                log.warning("lease %s/%s: not released: %s", self.namespace, self.name, e)
                return False
            if released:
                log.info("admission leadership released (%s)", self.identity)
            return released

    def _release(self) -> bool:
        lease = self._call(self.api.read_namespaced_lease, self.name, self.namespace)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return False
        now = utcnow()
        body = self._body(now, now, int(spec.get("leaseTransitions") or 0))
        # client-go's release: no holder, a one-second lease, renewed now.
        body["spec"]["holderIdentity"] = ""
        body["spec"]["leaseDurationSeconds"] = 1
        body["spec"]["acquireTime"] = spec.get("acquireTime")
        body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        try:
            self._call(self.api.replace_namespaced_lease, self.name, self.namespace, body)
        except ApiException as e:
            if e.status == 409:  # changed meanwhile: no longer ours to release
                return False
            raise
        return True

    async def _ensure(self) -> bool:
        if self._released:
            return False
        try:
            renewed = await asyncio.to_thread(self._try)
        except Exception as e:  # the API being away is not a reason to crash
            log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            renewed = False
        leader = renewed and self.holds()
        if leader != self.is_leader:
            log.info(
                "admission leadership %s (%s)", "acquired" if leader else "lost", self.identity
            )
        self.is_leader = leader
        return leader
