"""Kubernetes timestamps: RFC 3339 in UTC with a ``Z``, whole seconds.

The API server stores ``metav1.Time`` with second precision; formatting the
same way keeps round trips exact (a parsed-then-formatted time compares equal).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the handlers' clock; pure code takes ``now`` as an argument)."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """``2026-03-01T12:00:00Z`` (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """A Kubernetes timestamp (str or datetime) as aware UTC, or None if absent/unparsable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
