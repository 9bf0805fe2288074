"""Leader election over a coordination.k8s.io Lease, for the admission loop.

Only one operator instance may admit at a time: two admitting from the same
metrics would both spend the same free memory. The holder renews the Lease
every round; another instance takes over once it has not been renewed for
``lease_duration_s``. Writes use the Lease's resourceVersion, so two
candidates racing for an expired Lease cannot both win.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException

from zopilot_operator.clock import parse_time, utcnow

log = logging.getLogger("zopilot.operator.leader")


def _micro(moment: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        api_client: ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 15.0,
    ) -> None:
        self.api = CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration_s = lease_duration_s
        self.is_leader = False

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

    def _try(self) -> bool:
        now = utcnow()
        try:
            lease = self._call(self.api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            try:
                self._call(
                    self.api.create_namespaced_lease, self.namespace, self._body(now, now, 0)
                )
                return True
            except ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = parse_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or self.lease_duration_s
        expired = renewed is None or now - renewed > timedelta(seconds=duration)
        if holder != self.identity and not expired:
            return False
        mine = holder == self.identity
        acquired = (parse_time(spec.get("acquireTime")) or now) if mine else now
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        body = self._body(now, acquired, transitions)
        body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        try:
            self._call(self.api.replace_namespaced_lease, self.name, self.namespace, body)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    async def ensure(self) -> bool:
        """Acquire or renew; True while this instance is the leader."""
        try:
            leader = await asyncio.to_thread(self._try)
        except Exception as e:  # the API being away is not a reason to crash
            log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            leader = False
        if leader != self.is_leader:
            log.info(
                "admission leadership %s (%s)", "acquired" if leader else "lost", self.identity
            )
        self.is_leader = leader
        return leader
