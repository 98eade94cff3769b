"""The live tasks of the API's namespace, kept by one list-and-watch.

Two things read it on every request: result reads (a task polled every second costs the API
server nothing) and the cap on a user's unfinished tasks (a count per user label, without a
list call per create). A name the index does not know is looked up on the API server, so a
task created by another replica a millisecond ago is still found; a task this replica writes
is put in at once, so a client reads its own writes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter

from gentask.kube.tasks import LABEL_USER, ClusterUnavailable, KubeError, TaskClient, WatchExpired, is_terminal, resource_version

log = logging.getLogger("gentask.api")

BACKOFF_MAX = 10.0


_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _slim(obj: dict) -> dict:
    """Without managedFields and kubectl's last-applied copy: most of an object's bytes, none of use here."""
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    if _LAST_APPLIED in (meta.get("annotations") or {}):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k != _LAST_APPLIED}
    return {**obj, "metadata": meta}


def _user_key(obj: dict) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_USER, "")


class TaskIndex:
    def __init__(self, client: TaskClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._objects: dict[str, dict] = {}
        self._unfinished: Counter[str] = Counter()
        self._reserved: Counter[str] = Counter()
        self.synced = asyncio.Event()
        self.healthy = False
        self.last_error = "not started"
        self.last_event = 0.0

    # --- reads --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, name: str) -> dict | None:
        return self._objects.get(name)

    def unfinished(self, user_key: str) -> int:
        """The user's unfinished tasks, counting creates under way on this replica."""
        return self._unfinished[user_key] + self._reserved[user_key]

    def reserve(self, user_key: str) -> None:
        self._reserved[user_key] += 1

    def release(self, user_key: str) -> None:
        self._reserved[user_key] -= 1
        if self._reserved[user_key] <= 0:
            del self._reserved[user_key]

    # --- writes -------------------------------------------------------------------------

    def put(self, obj: dict) -> None:
        """Keep the newer of the known and the given version of an object."""
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        if "managedFields" in meta or _LAST_APPLIED in (meta.get("annotations") or {}):
            obj = _slim(obj)
        old = self._objects.get(name)
        if old is not None:
            same = (old.get("metadata") or {}).get("uid") == (obj.get("metadata") or {}).get("uid")
            if same and resource_version(old) > resource_version(obj):
                return
            self._forget(old)
        self._objects[name] = obj
        if not is_terminal(obj):
            self._unfinished[_user_key(obj)] += 1

    def remove(self, name: str, uid: str | None = None) -> None:
        old = self._objects.get(name)
        if old is not None and (uid is None or (old.get("metadata") or {}).get("uid") == uid):
            self._forget(old)
            del self._objects[name]

    def _forget(self, obj: dict) -> None:
        if not is_terminal(obj):
            key = _user_key(obj)
            self._unfinished[key] -= 1
            if self._unfinished[key] <= 0:
                del self._unfinished[key]

    def _replace(self, items: list[dict]) -> None:
        self._objects.clear()
        self._unfinished.clear()
        for obj in items:
            self.put(obj)

    # --- the watch ----------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch from the list's version; list again when the watch expires or breaks."""
        backoff = 0.5
        while True:
            try:
                items, version = await self.client.list(self.namespace)
                self._replace(items)
                self.healthy, self.last_error = True, ""
                self.synced.set()
                backoff = 0.5
                while True:
                    async for kind, obj in self.client.watch(self.namespace, version):
                        self.last_event = time.monotonic()
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if kind in ("ADDED", "MODIFIED"):
                            self.put(obj)
                        elif kind == "DELETED":
                            self.remove(obj["metadata"]["name"], obj["metadata"].get("uid"))
                    # the server ended the watch (timeoutSeconds): go on from where it stopped
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.info("task watch expired; listing again", extra={"namespace": self.namespace})
                continue
            except (ClusterUnavailable, KubeError) as exc:
                self.healthy, self.last_error = False, str(exc)
                log.warning("task watch failed; retrying", extra={"namespace": self.namespace, "error": str(exc),
                                                                  "retry_in": round(backoff, 1)})
            except Exception as exc:  # noqa: BLE001 - the watch must outlive anything a response can hold
                self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"
                log.exception("task watch crashed; retrying", extra={"namespace": self.namespace})
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(BACKOFF_MAX, backoff * 2)
