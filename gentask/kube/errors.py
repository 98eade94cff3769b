"""The one error type of the Kubernetes gateway: what the API server answered (or that it did not).

`KubeError` carries the HTTP status (0 when no answer came), the Status object's reason, message
and details, and Retry-After. The subclasses name the cases callers branch on; everything else
branches on the properties (`not_found`, `conflict`, `already_exists`, `unavailable`).
"""

from __future__ import annotations

from typing import Any

NO_ANSWER = 0     # the status of a request that got no HTTP answer (refused, reset, timed out)


class KubeError(Exception):
    """The API server refused a request (or, as ClusterUnavailable, did not answer it)."""

    def __init__(self, status: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.details: dict[str, Any] = details or {}
        self.retry_after = retry_after

    @property
    def not_found(self) -> bool:
        """404: the object (or its namespace) is not there."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a precondition (resourceVersion, uid) failed, or the object exists already."""
        return self.status == 409

    @property
    def already_exists(self) -> bool:
        """409 AlreadyExists: a create found an object of that name."""
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        """410: a watch or list resourceVersion is too old."""
        return self.status == 410

    @property
    def unavailable(self) -> bool:
        """No answer, a timeout, a 5xx or a 429: try again later; nothing is known to have changed."""
        return self.status == NO_ANSWER or self.status >= 500 or self.status == 429


class ClusterUnavailable(KubeError):
    """The API server did not answer, timed out, or answered 5xx/429: try again later."""

    def __init__(self, message: str, retry_after: float | None = None, *, status: int = NO_ANSWER,
                 reason: str = "Unavailable", details: dict[str, Any] | None = None) -> None:
        super().__init__(status, reason, message, details, retry_after)
        self.args = (message,)       # str(exc) is the message alone, as callers print it

    def __str__(self) -> str:
        return self.message


class AlreadyExists(KubeError):
    """409 AlreadyExists: an object of that name exists already."""


class TaskExists(AlreadyExists):
    """A GenerationTask of that name exists already."""


class WatchExpired(KubeError):
    """The watch's resourceVersion is too old (410 Gone): list again."""

    def __init__(self, resource_version: str, message: str = "") -> None:
        super().__init__(410, "Expired", message or f"resourceVersion {resource_version} is too old")
        self.resource_version = resource_version
        self.args = (resource_version,)

    def __str__(self) -> str:
        return self.resource_version


class ConfigError(Exception):
    """No usable connection to the API server could be resolved; the message names the file and what is missing."""


def error_from_answer(status: int, body: bytes, retry_after: float | None = None) -> KubeError:
    """The exception for an HTTP answer that is not a success, from the Status object in its body."""
    import json
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    reason = str(doc.get("reason") or status)
    message = str(doc.get("message") or body[:200].decode(errors="replace"))
    details = doc.get("details") if isinstance(doc.get("details"), dict) else None
    if status >= 500 or status == 429:
        return ClusterUnavailable(f"the Kubernetes API server answered {status} {reason}", retry_after,
                                  status=status, reason=reason, details=details)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(status, reason, message, details, retry_after)
    return KubeError(status, reason, message, details, retry_after)
