"""The live tasks of the API's namespace, kept by one list-and-watch, typed once as they arrive.

Two things read it on every request: result reads (a task polled every second costs the API
server nothing) and the cap on a user's unfinished tasks (a count per user label, without a
list call per create). A name the index does not know is looked up on the API server, so a
task created by another replica a millisecond ago is still found; a task this replica writes
is put in at once, so a client reads its own writes.

Objects from the API server are parsed into GenerationTask here (`parse_task`), once per
version, and each version's TaskView is built on its first read and kept (`view`): a result
read of a known task then only serializes.

Its `listener` (the event hub, gentask.api.events) is told of every change the watch applies, in
the API server's order, and of what a new list found changed after the watch broke.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from gentask.api.schemas import TaskView
from gentask.api.views import record_of, task_view
from gentask.domain.task import GenerationTask
from gentask.kube.tasks import LABEL_USER, ClusterUnavailable, KubeError, TaskClient, WatchExpired

log = logging.getLogger("gentask.api")

BACKOFF_MAX = 10.0

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class UnreadableTask(ValueError):
    """The API server returned a GenerationTask that does not fit gentask.domain's model."""


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Without managedFields and kubectl's last-applied copy: most of an object's bytes, none of use here."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    if _LAST_APPLIED in (meta.get("annotations") or {}):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k != _LAST_APPLIED}
    return {**obj, "metadata": meta}


def parse_task(obj: Mapping[str, Any]) -> GenerationTask:
    """A GenerationTask as the API server returns it -> the typed task; UnreadableTask if it does not fit."""
    try:
        return GenerationTask.model_validate(_slim(obj))
    except ValidationError as exc:
        meta = obj.get("metadata") or {}
        raise UnreadableTask(f"GenerationTask {meta.get('namespace')}/{meta.get('name')} does not fit the "
                             f"resource's schema: {exc.errors()[0].get('msg')}") from exc


def _version(task: GenerationTask) -> int:
    try:
        return int(task.metadata.resource_version or 0)
    except ValueError:
        return 0


def _int(version: str) -> int:
    try:
        return int(version)
    except ValueError:
        return 0


def _user_key(task: GenerationTask) -> str:
    return task.metadata.labels.get(LABEL_USER, "")


class Listener(Protocol):
    """Told of every change the watch applies, in the API server's order (gentask.api.events.EventHub)."""

    def changed(self, task: GenerationTask) -> None:
        """A version of a task the watch brought (or a new list found changed)."""

    def deleted(self, name: str, owner: str, version: int) -> None:
        """A task left the cluster at this version."""

    def advanced(self, version: int) -> None:
        """The watch has brought everything up to this version."""


class TaskIndex:
    """Every live task of one namespace by name, and each user's count of unfinished ones."""

    def __init__(self, client: TaskClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._tasks: dict[str, GenerationTask] = {}
        self._views: dict[str, tuple[GenerationTask, TaskView]] = {}
        self._unfinished: Counter[str] = Counter()
        self._reserved: Counter[str] = Counter()
        self.synced = asyncio.Event()
        self.healthy = False
        self.last_error = "not started"
        self.last_event = 0.0
        self.listener: Listener | None = None

    # --- reads --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, name: str) -> GenerationTask | None:
        """The live task of this name, if the index knows it."""
        return self._tasks.get(name)

    def tasks(self) -> Iterable[GenerationTask]:
        """Every live task the index knows (a copy: safe to iterate while the watch goes on)."""
        return list(self._tasks.values())

    def view(self, task: GenerationTask) -> TaskView:
        """The TaskView of a task, built once per version (the index keeps it while the task is live)."""
        name = task.metadata.name or ""
        cached = self._views.get(name)
        if cached is not None and cached[0] is task:
            return cached[1]
        view = task_view(record_of(task))
        if self._tasks.get(name) is task:
            self._views[name] = (task, view)
        return view

    def unfinished(self, user_key: str) -> int:
        """The user's unfinished tasks, counting creates under way on this replica."""
        return self._unfinished[user_key] + self._reserved[user_key]

    def reserve(self, user_key: str) -> None:
        """Count a create under way (released by `release`)."""
        self._reserved[user_key] += 1

    def release(self, user_key: str) -> None:
        """A create under way has ended."""
        self._reserved[user_key] -= 1
        if self._reserved[user_key] <= 0:
            del self._reserved[user_key]

    # --- writes -------------------------------------------------------------------------

    def put(self, task: GenerationTask) -> None:
        """Keep the newer of the known and the given version of a task."""
        name = task.metadata.name
        if not name:
            return
        old = self._tasks.get(name)
        if old is not None:
            if old.metadata.uid == task.metadata.uid and _version(old) > _version(task):
                return
            self._forget(old)
            self._views.pop(name, None)
        self._tasks[name] = task
        if not task.status.finished:
            self._unfinished[_user_key(task)] += 1

    def put_object(self, obj: Mapping[str, Any]) -> GenerationTask | None:
        """Parse an object from the API server and keep it; None (logged) when it does not fit."""
        meta = obj.get("metadata") or {}
        known = self._tasks.get(meta.get("name") or "")
        if (known is not None and known.metadata.uid == meta.get("uid")
                and known.metadata.resource_version == meta.get("resourceVersion")):
            return known        # the watch's copy of what a create or cancel answered: parsed already
        try:
            task = parse_task(obj)
        except UnreadableTask as exc:
            log.warning("ignoring a task the API cannot read", extra={"error": str(exc)})
            meta = obj.get("metadata") or {}
            if meta.get("name"):
                self.remove(meta["name"], meta.get("uid"))
            return None
        self.put(task)
        return task

    def remove(self, name: str, uid: str | None = None) -> None:
        """Forget the task of this name (only if it still has this uid, when one is given)."""
        old = self._tasks.get(name)
        if old is not None and (uid is None or old.metadata.uid == uid):
            self._forget(old)
            del self._tasks[name]
            self._views.pop(name, None)

    def _forget(self, task: GenerationTask) -> None:
        if not task.status.finished:
            key = _user_key(task)
            self._unfinished[key] -= 1
            if self._unfinished[key] <= 0:
                del self._unfinished[key]

    def _replace(self, items: list[dict[str, Any]], version: str) -> None:
        old = dict(self._tasks)
        self._tasks.clear()
        self._views.clear()
        self._unfinished.clear()
        for obj in items:
            self.put_object(obj)
        if self.listener is not None:        # what the watch missed while it was away, as changes
            listener, now = self.listener, self._tasks
            moved = [t for name, t in now.items() if (o := old.get(name)) is None or o.metadata.uid != t.metadata.uid
                     or o.metadata.resource_version != t.metadata.resource_version]
            for task in sorted(moved, key=_version):
                listener.changed(task)
            for name, gone in old.items():
                if name not in now:
                    listener.deleted(name, gone.spec.user_id, _int(version))
            listener.advanced(_int(version))

    # --- the watch ----------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch from the list's version; list again when the watch expires or breaks."""
        backoff = 0.5
        while True:
            try:
                items, version = await self.client.list(self.namespace)
                self._replace(items, version)
                self.healthy, self.last_error = True, ""
                self.synced.set()
                backoff = 0.5
                while True:
                    async for kind, obj in self.client.watch(self.namespace, version):
                        self.last_event = time.monotonic()
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind in ("ADDED", "MODIFIED"):
                            task = self.put_object(obj)
                            if task is not None and self.listener is not None:
                                self.listener.changed(task)
                        elif kind == "DELETED":
                            self.remove(obj["metadata"]["name"], obj["metadata"].get("uid"))
                            if self.listener is not None:
                                self.listener.deleted(obj["metadata"]["name"],
                                                      str((obj.get("spec") or {}).get("userID") or ""),
                                                      _int(version))
                        if self.listener is not None:
                            self.listener.advanced(_int(version))
                    # the server ended the watch (timeoutSeconds): go on from where it stopped
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.info("task watch expired; listing again", extra={"namespace": self.namespace})
                continue
            except ClusterUnavailable as exc:       # first: it may be a KubeError too
                self._down(str(exc), backoff)
            except KubeError as exc:
                self._down(str(exc), backoff)
            except Exception as exc:  # noqa: BLE001 - the watch must outlive anything a response can hold
                self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"
                log.exception("task watch crashed; retrying", extra={"namespace": self.namespace})
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(BACKOFF_MAX, backoff * 2)

    def _down(self, error: str, backoff: float) -> None:
        self.healthy, self.last_error = False, error
        log.warning("task watch failed; retrying", extra={"namespace": self.namespace, "error": error,
                                                          "retry_in": round(backoff, 1)})
