"""GenerationTask verbs for the REST API (create, get, delete, cancel, list, watch) and its names.

`TaskClient` is the task-verbs face of gentask.kube.client.KubeClient: the same session, the
same connection resolver (gentask.kube.config), the same errors (gentask.kube.errors), with the
return values the REST API relies on (None for a task that is not there, False for a delete that
found nothing). Failures: `TaskExists` (409 AlreadyExists), `KubeError` (the API server refused;
status, reason and message), and `ClusterUnavailable` (a KubeError: no answer, a timeout, a 5xx
or a 429 from the API server: try again later, nothing was changed that the caller knows of).
Why aiohttp, with figures: gentask.kube.client.

Labels and annotations the API puts on a task (the operator may read them, never rely on them
for correctness):

    gentask.io/type         image | video | text
    gentask.io/priority     critical | default | low
    gentask.io/user         user_label(userID): a hash, since user ids may hold characters labels cannot
    gentask.io/created-by   api
    gentask.io/request-sha256 (annotation) hash of the canonical REST request, for idempotency
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from gentask.kube.client import DEFAULT_TIMEOUT, LIST_PAGE, MERGE_PATCH, KubeClient, task_path
from gentask.kube.config import Connection, load_connection
from gentask.kube.errors import ClusterUnavailable, KubeError, TaskExists, WatchExpired

LABEL_TYPE = "gentask.io/type"
LABEL_PRIORITY = "gentask.io/priority"
LABEL_USER = "gentask.io/user"
LABEL_CREATED_BY = "gentask.io/created-by"
ANNOTATION_REQUEST_HASH = "gentask.io/request-sha256"

NAME_PREFIX = {"image": "img", "video": "vid", "text": "txt"}
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
RANDOM_SUFFIX_LEN = 8          # 36^8 ≈ 2.8e12; a collision is retried by the caller
IDEMPOTENT_SUFFIX_LEN = 20     # base32 of a SHA-256: 100 bits


# --- names and labels -----------------------------------------------------------------------


def random_name(type_: str) -> str:
    """A readable prefix by type and a random suffix: img-4k2x9qa7 (a DNS label)."""
    return f"{NAME_PREFIX[type_]}-" + "".join(secrets.choice(_ALPHABET) for _ in range(RANDOM_SUFFIX_LEN))


def idempotent_name(type_: str, user_id: str, key: str) -> str:
    """The same (type, user, Idempotency-Key) always names the same task."""
    digest = hashlib.sha256(f"{user_id}\x00{key}".encode()).digest()
    return f"{NAME_PREFIX[type_]}-" + base64.b32encode(digest).decode().lower()[:IDEMPOTENT_SUFFIX_LEN]


def user_label(user_id: str) -> str:
    """A label value that identifies a user: user ids may hold characters labels cannot."""
    return "u" + hashlib.sha256(user_id.encode()).hexdigest()[:40]


# --- the client -----------------------------------------------------------------------------


class TaskClient(KubeClient):
    """GenerationTask verbs over one keep-alive session. Create it inside a running event loop."""

    def __init__(self, connection: Connection, *, timeout: float = DEFAULT_TIMEOUT, pool: int = 64,
                 light: bool = False) -> None:
        super().__init__(connection, timeout=timeout, pool=pool, light=light)

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a task; TaskExists when the name is taken."""
        return await self.create_task(namespace, body)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The task, or None when it is not there."""
        try:
            return await self.get_task(namespace, name)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def delete(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete (background propagation: the Job and pod go too); False when it was not there.

        With uid, only that incarnation of the name is deleted (a precondition)."""
        try:
            await self.delete_task(namespace, name, uid=uid)
        except KubeError as exc:
            if exc.not_found or exc.conflict:
                return False
            raise
        return True

    async def cancel(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Set spec.cancel=true (the operator turns it into Cancelled); None when it is not there."""
        try:
            return await self.patch_task_spec(namespace, name, {"cancel": True})
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def list(self, namespace: str, *, label_selector: str | None = None,
                   page: int = LIST_PAGE) -> tuple[list[dict[str, Any]], str]:
        """Every item (read `page` at a time) and the list's resourceVersion (to start a watch from)."""
        return await self.list_tasks(namespace, label_selector=label_selector, page=page)

    def watch(self, namespace: str, resource_version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, object) from resource_version on, with bookmarks, until the server ends it.

        Raises WatchExpired when the resourceVersion is too old, ClusterUnavailable when the
        connection breaks."""
        return self.watch_tasks(namespace, resource_version)


__all__ = [
    "ANNOTATION_REQUEST_HASH", "LABEL_CREATED_BY", "LABEL_PRIORITY", "LABEL_TYPE", "LABEL_USER", "MERGE_PATCH",
    "ClusterUnavailable", "Connection", "KubeError", "TaskClient", "TaskExists", "WatchExpired",
    "idempotent_name", "load_connection", "random_name", "task_path",
    "user_label",
]
