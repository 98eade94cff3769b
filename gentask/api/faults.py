"""How the cluster's and MongoDB's failures become API errors: one context manager each.

`cluster_errors()`: ClusterUnavailable -> 503 with Retry-After; any other KubeError (the API
server refused a request the API built) -> `kube_refusal`. `storage_errors()`:
StorageUnavailable -> 503 with Retry-After. ClusterUnavailable is caught before KubeError, as
it may be a kind of KubeError.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from gentask.api.errors import APIError, Unavailable, Unprocessable
from gentask.api.translate import api_field
from gentask.kube.tasks import ClusterUnavailable, KubeError
from gentask.storage import StorageUnavailable

log = logging.getLogger("gentask.api")

RETRY_AFTER = 5


def cluster_unavailable(exc: ClusterUnavailable) -> Unavailable:
    """The answer when the cluster cannot be reached: 503, retry after the server's hint or a few seconds."""
    return Unavailable(f"{exc}; try again shortly", retry_after=exc.retry_after or RETRY_AFTER)


def kube_refusal(exc: KubeError) -> APIError:
    """The API server refused a request the API built: its schema (422) or the server's setup (503)."""
    if exc.status in (400, 422):
        causes = (exc.details or {}).get("causes") or []
        errors = [{"field": api_field(str(c.get("field", ""))), "value": None,
                   "accepted": str(c.get("message", "")), "message": str(c.get("message", ""))}
                  for c in causes] or None
        return Unprocessable(f"the cluster refused the task: {exc.message}", errors=errors)
    log.error("the API server refused a request", extra={"status": exc.status, "reason": exc.reason,
                                                          "detail": exc.message})
    return Unavailable(f"the cluster refused the request ({exc.status} {exc.reason}); "
                       "check the API's namespace and permissions", retry_after=RETRY_AFTER)


def storage_unavailable(exc: StorageUnavailable) -> Unavailable:
    """The answer when MongoDB cannot be reached: 503 with Retry-After."""
    return Unavailable(f"MongoDB is unavailable: {str(exc) or type(exc).__name__}", retry_after=RETRY_AFTER)


@contextlib.contextmanager
def cluster_errors() -> Iterator[None]:
    """Inside: a call to the API server; its failures leave as the API's errors."""
    try:
        yield
    except ClusterUnavailable as exc:       # first: it may be a KubeError too
        raise cluster_unavailable(exc) from exc
    except KubeError as exc:
        raise kube_refusal(exc) from exc


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Inside: a use of MongoDB; "MongoDB is not there" leaves as 503."""
    try:
        yield
    except StorageUnavailable as exc:
        raise storage_unavailable(exc) from exc
