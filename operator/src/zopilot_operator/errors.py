"""The operator's error hierarchy: permanent vs retriable, plus two API outcomes.

Core code raises these; ``kube.py`` and ``prometheus.py`` translate client
errors into them; the kopf handlers turn them into ``kopf.PermanentError`` /
``kopf.TemporaryError(delay=...)`` at the edge.
"""

from __future__ import annotations

from zopilot_operator.reasons import Reason


class OperatorError(Exception):
    """Base class: a message fit for a log line or a job's status."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(OperatorError):
    """Retrying cannot help (the request or the object is wrong); ``reason`` is for status."""

    def __init__(self, message: str, *, reason: str = Reason.INVALID_SPEC) -> None:
        super().__init__(message)
        self.reason = reason


class RetriableError(OperatorError):
    """May succeed later; ``delay_s`` is how long to wait before the next try."""

    def __init__(self, message: str, *, delay_s: float = 10.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class ConflictError(RetriableError):
    """409 Conflict on update: the object changed under us; re-read and retry soon."""

    def __init__(self, message: str, *, delay_s: float = 1.0) -> None:
        super().__init__(message, delay_s=delay_s)


class AlreadyExistsError(OperatorError):
    """409 AlreadyExists on create: the name is taken (often by our own earlier create)."""


class NotFoundError(OperatorError):
    """404 Not Found / 410 Gone: the object is not there (any more)."""


class MetricsUnavailable(RetriableError):
    """Prometheus gave no usable GPU memory figures; ``reason`` says which kind of problem."""

    def __init__(
        self, message: str, *, reason: str = Reason.METRICS_UNAVAILABLE, delay_s: float = 10.0
    ) -> None:
        super().__init__(message, delay_s=delay_s)
        self.reason = reason
