"""MongoDB as the API uses it: the task mirror (lists, results after the TTL) and the artifacts.

The API starts and serves creates and results without MongoDB; it connects on first use and
again after a failure (at most every RECONNECT_SECONDS), and answers 503 for what needs it.
Mirror writes go through one background thread, in order. A create's write does not hold up
the response: the operator mirrors every status change anyway, the API's write only makes a new
task show in lists at once, and it is skipped when the queue is full or MongoDB is down. A
delete waits (briefly) for its write, which comes after the create's.

In the mirror, `deleted` means "the resource is gone" (the TTL, kubectl, or this API removed
it): such records are the history that lists and results read. A task deleted through the API
must leave the history too; the mirror's `forget(uid)` does that where storage offers it, else
the record is only marked deleted and stays in the history.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from typing import Any

from gentask.api.errors import Unavailable
from gentask.api.metrics import Metrics
from gentask.config import Settings

log = logging.getLogger("gentask.api")

RECONNECT_SECONDS = 2.0
QUEUE_MAX = 10_000
RETRY_AFTER = 5


class Store:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._lock = threading.Lock()
        self._mirror: Any = None
        self._artifacts: Any = None
        self._last_try = 0.0
        self.last_error = ""
        self._queue: queue.Queue[tuple[str, Any, concurrent.futures.Future] | None] = queue.Queue(QUEUE_MAX)
        self._writer: threading.Thread | None = None

    # --- connection ---------------------------------------------------------------------

    def _connect(self) -> None:
        from gentask import storage   # MongoDB is optional at start-up: import and connect on first use
        with self._lock:
            if self._mirror is not None:
                return
            now = time.monotonic()
            if now - self._last_try < RECONNECT_SECONDS and self.last_error:
                raise Unavailable(f"MongoDB is unavailable: {self.last_error}", retry_after=RETRY_AFTER)
            self._last_try = now
            try:
                db = storage.connect(self.settings)
                mirror = storage.TaskMirror(db)
                mirror.ensure_indexes()
                self._artifacts = storage.ArtifactStore(db)
                self._mirror = mirror
                self.last_error = ""
            except storage.StorageUnavailable as exc:
                self.last_error = str(exc) or type(exc).__name__
                raise Unavailable(f"MongoDB is unavailable: {self.last_error}", retry_after=RETRY_AFTER) from exc
            except ValueError as exc:        # MONGO_URL that pymongo cannot use: the message says why
                self.last_error = str(exc)
                log.error("MongoDB cannot be used", extra={"error": self.last_error})
                raise Unavailable(f"MongoDB is unavailable: {self.last_error}", retry_after=RETRY_AFTER) from exc

    def unavailable(self, exc: Exception) -> Unavailable:
        """Note a failure seen while using MongoDB; the error to answer with."""
        self.last_error = str(exc) or type(exc).__name__
        return Unavailable(f"MongoDB is unavailable: {self.last_error}", retry_after=RETRY_AFTER)

    def mirror(self) -> Any:
        if self._mirror is None:
            self._connect()
        return self._mirror

    def artifacts(self) -> Any:
        if self._artifacts is None:
            self._connect()
        return self._artifacts

    @staticmethod
    def errors() -> tuple[type[Exception], ...]:
        """The exceptions that mean "MongoDB is not there"."""
        from gentask.storage import StorageUnavailable
        return (StorageUnavailable,)

    # --- background writes --------------------------------------------------------------

    def start(self) -> None:
        self._writer = threading.Thread(target=self._drain, name="gentask-api-mirror", daemon=True)
        self._writer.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._writer is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._writer.join(timeout)
            self._writer = None

    def submit(self, op: str, arg: Any) -> concurrent.futures.Future:
        """Queue ('upsert', task object) or ('forget', uid); a full queue drops it (the future fails)."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_nowait((op, arg, done))
        except queue.Full:
            self.metrics.mirror_dropped += 1
            done.set_exception(Unavailable("the mirror queue is full", retry_after=RETRY_AFTER))
        return done

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            op, arg, done = item
            try:
                mirror = self.mirror()
                if op == "upsert":
                    mirror.upsert(arg)
                elif op == "forget":
                    forget = getattr(mirror, "forget", None)
                    (forget or mirror.mark_deleted)(arg)
                done.set_result(True)
            except Exception as exc:  # noqa: BLE001 - a mirror write must never stop the thread
                done.set_exception(exc)
                self.metrics.mirror_dropped += 1
                if not isinstance(exc, Unavailable):
                    self.unavailable(exc)        # pymongo reconnects by itself; keep the client
                    if not isinstance(exc, self.errors()):
                        log.exception("mirror write failed", extra={"op": op})
