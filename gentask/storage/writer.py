"""MirrorWriter: the one writer of the MongoDB mirror, shared by the REST API and the operator.

Changes wait in memory, one per task uid: the newest object to upsert (by resourceVersion),
whether the resource is gone (mark_deleted) and whether its user deleted it (forget, which also
removes the task's artifacts). A background task on the event loop writes them in worker
threads (pymongo blocks): what waits is one batch, cut into parts (the uids of one lease in one
part, up to PART_SIZE uids a part), `concurrency` parts at once, each part's upserts through one
TaskMirror.upsert_many (which shares their leases and timeline writes), then each uid's
deletions. While MongoDB is away it keeps them and retries with exponential backoff and
jitter, so a MongoDB outage delays the mirror and never blocks or loses a change.

MongoDB is optional at start-up: the writer connects on first use, and again after a failure
at most every `reconnect_seconds`. `open_mirror()` and `open_artifacts()` hand the connected
TaskMirror and ArtifactStore to readers (the API's lists, results and downloads) with the same
throttle. The writer reports `healthy`, `last_error`, `pending` and `lag` (the age of the oldest
change not yet written) as plain attributes; callers export them as metrics.

Use it from one event loop: `put`, `delete` and `forget` are called from that loop's thread,
`start()` from a coroutine running on it (a lifespan, a Kopf startup handler; it creates the
task that runs `run()`, which may also be awaited or scheduled directly), `await stop()` at
shutdown. Where the operator's MirrorQueue was used, the writer takes its place as it is:
`put(obj)`, `delete(uid)`, `.healthy`, `.mirror` (the TaskMirror once connected, else None)
for `uids()` reads, and `stats()` (or `.pending`, `.lag`) for the lag and pending gauges.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymongo.database import Database

from gentask.storage.artifacts import ArtifactStore
from gentask.storage.mirror import TaskMirror
from gentask.storage.mongo import StorageUnavailable, connect

if TYPE_CHECKING:
    from gentask.config import Settings

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
RECONNECT_SECONDS = 2.0
STOP_DRAIN_SECONDS = 5.0
CONCURRENCY = 4  # parts of a batch written at once: each write waits on the server's round trips
PART_SIZE = 50   # uids a part: one lease insert, one lease delete and one update a timeline shard for them


@dataclass
class _Change:
    """What waits for one uid: the newest object to upsert, and the deletions to apply after it."""

    since: float                 # when it is due: when it came, or later for a held put
    obj: Mapping[str, Any] | None = None
    deleted: bool = False
    forget: bool = False
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)

    def merge(self, newer: _Change) -> None:
        """Fold a change that arrived later into this one (which keeps its age, or takes the newer's
        when that is due sooner: a held put followed by one to write at once)."""
        if newer.obj is not None and (self.obj is None or _version(newer.obj) >= _version(self.obj)):
            self.obj = newer.obj
        self.since = min(self.since, newer.since)
        self.deleted |= newer.deleted
        self.forget |= newer.forget
        self.waiters += newer.waiters


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of the writer's state, for metrics and probes."""

    pending: int
    lag_seconds: float
    healthy: bool
    last_error: str
    dropped: int


def _version(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def _uid(obj: Mapping[str, Any]) -> str:
    uid = (obj.get("metadata") or {}).get("uid")
    if not isinstance(uid, str) or not uid:
        raise ValueError("expected a GenerationTask object with metadata.uid, as the API server returns it")
    return uid


class MirrorWriter:
    """Coalescing, retrying writer of the task mirror, with a lazily connected read handle.

    `settings` names the database (MONGO_URL); `database` instead hands one over (tests, or a
    caller that already has one). `max_pending` bounds how many uids may wait: beyond it a
    put() for a new uid is dropped and counted in `dropped` (deletions are never dropped).
    `concurrency` is how many parts of a batch are written at once (TaskMirror.upsert_many each;
    a uid's changes are one write, so they keep their order).
    """

    def __init__(self, settings: Settings | None = None, *, database: Callable[[], Database[Any]] | None = None,
                 backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX,
                 reconnect_seconds: float = RECONNECT_SECONDS, max_pending: int | None = None,
                 concurrency: int = CONCURRENCY) -> None:
        if settings is None and database is None:
            raise ValueError("MirrorWriter needs settings (MONGO_URL) or a database factory")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer of 1 or more, got {concurrency!r}")
        self.concurrency = concurrency
        self._settings, self._database = settings, database
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.reconnect_seconds = reconnect_seconds
        self.max_pending = max_pending
        self.mirror: TaskMirror | None = None
        self.artifacts: ArtifactStore | None = None
        self.healthy = False
        self.last_error = "not connected yet"
        self.dropped = 0
        self._pending: dict[str, _Change] = {}
        self._in_flight: dict[str, _Change] = {}
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._last_try = -float("inf")

    # --- changes --------------------------------------------------------------------------------

    def put(self, obj: Mapping[str, Any], hold: float = 0.0) -> bool:
        """Queue an upsert of a GenerationTask object; False when dropped (too many uids waiting).

        `hold`: seconds to wait before writing it, unless a change of the same uid that may not
        wait comes meanwhile; the two are then one write (a task's first view and its outcome)."""
        uid = _uid(obj)
        if self.max_pending is not None and uid not in self._pending and len(self._pending) >= self.max_pending:
            self.dropped += 1
            return False
        self._add(uid, _Change(time.monotonic() + max(0.0, hold), obj=obj))
        return True

    def delete(self, uid: str) -> None:
        """Queue mark_deleted(uid): the resource is gone, the record stays in the history."""
        self._add(uid, _Change(time.monotonic(), deleted=True))

    def forget(self, uid: str) -> asyncio.Future[bool]:
        """Queue the forgetting of a task and the removal of the task's artifacts (a task its user deleted).

        The future is True once written (False when the history did not show the task); it
        fails with StorageUnavailable when an attempt finds MongoDB away, and the change stays
        queued and is retried."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._add(uid, _Change(time.monotonic(), deleted=True, forget=True, waiters=[done]))
        return done

    def _add(self, uid: str, change: _Change) -> None:
        known = self._pending.get(uid)
        if known is None:
            self._pending[uid] = change
        else:
            known.merge(change)
        self._wakeup.set()

    # --- state ----------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many uids have a change not yet written."""
        return len(self._pending.keys() | self._in_flight.keys())

    @property
    def lag(self) -> float:
        """Seconds since the oldest change not yet written was due (0 when none waits): when it came, or
        when its hold ended."""
        oldest = min((c.since for c in (*self._pending.values(), *self._in_flight.values())), default=None)
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    def stats(self) -> WriterStats:
        """Pending, lag, healthy, last_error and dropped at once."""
        return WriterStats(self.pending, self.lag, self.healthy, self.last_error, self.dropped)

    # --- the read handle ------------------------------------------------------------------------

    def open_mirror(self) -> TaskMirror:
        """The connected TaskMirror (connecting now if needed); StorageUnavailable otherwise. Blocks."""
        if self.mirror is None:
            self._connect()
        assert self.mirror is not None
        return self.mirror

    def open_artifacts(self) -> ArtifactStore:
        """The connected ArtifactStore (connecting now if needed); StorageUnavailable otherwise. Blocks."""
        if self.artifacts is None:
            self._connect()
        assert self.artifacts is not None
        return self.artifacts

    def _connect(self) -> None:
        with self._lock:
            if self.mirror is not None:
                return
            now = time.monotonic()
            if now - self._last_try < self.reconnect_seconds:
                raise StorageUnavailable(self.last_error)
            self._last_try = now
            try:
                db = self._database() if self._database is not None else connect(self._require_settings())
                mirror = TaskMirror(db)
                mirror.ensure_indexes()
                artifacts = ArtifactStore(db)
                artifacts.ensure_indexes()
            except StorageUnavailable as exc:
                self._failed(exc)
                raise
            except ValueError as exc:          # a MONGO_URL pymongo cannot use: the message says why
                self._failed(exc)
                log.error("MongoDB cannot be used", extra={"error": self.last_error})
                raise StorageUnavailable(self.last_error) from exc
            except Exception as exc:  # noqa: BLE001 - e.g. an index the server refuses: retried like an outage
                self._failed(exc)
                log.exception("MongoDB cannot be used")
                raise StorageUnavailable(f"MongoDB cannot be used: {self.last_error}") from exc
            self.artifacts, self.mirror = artifacts, mirror
            self.healthy, self.last_error = True, ""

    def _require_settings(self) -> Settings:
        if self._settings is None:
            raise ValueError("MirrorWriter has neither settings nor a database factory")
        return self._settings

    def _failed(self, exc: Exception) -> None:
        self.healthy, self.last_error = False, str(exc) or type(exc).__name__

    # --- the background task --------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start writing in the background on the running event loop (the task running run())."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self.run(), name="gentask-mirror-writer")
        return self._task

    async def stop(self, timeout: float = STOP_DRAIN_SECONDS) -> None:
        """Write what waits for up to `timeout` seconds, then stop; what is left is given up."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._pending or self._in_flight:
            log.warning("mirror writer stopped with %d change(s) unwritten", self.pending)
        for change in (*self._pending.values(), *self._in_flight.values()):
            for waiter in change.waiters:
                if not waiter.done():
                    waiter.set_exception(StorageUnavailable("the mirror writer stopped before this change"))
        self._pending.clear()
        self._in_flight.clear()

    async def run(self) -> None:
        """Write pending changes until stopped: at once when they come, with backoff while MongoDB is away."""
        delay = self.backoff_initial
        while True:
            if not self._pending:
                if self._stopping:
                    return
                await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            batch = self._due()
            if not batch:                       # only held changes: until the first is due, or news
                wait = min(c.since for c in self._pending.values()) - time.monotonic()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), max(0.001, wait))
                except TimeoutError:
                    pass
                continue
            self._in_flight = batch             # kept if stop() cancels us mid-write, for it to account for
            outcomes, failure = await asyncio.to_thread(self._write, batch)
            self._in_flight = {}
            for uid, change in batch.items():
                if uid in outcomes:
                    for waiter in change.waiters:
                        _settle(waiter, outcomes[uid])
                    continue
                for waiter in change.waiters:
                    _settle(waiter, failure or StorageUnavailable("not written"))
                change.waiters = []
                newer = self._pending.pop(uid, None)
                if newer is not None:
                    change.merge(newer)
                self._pending[uid] = change        # back in line, keeping its age
            if failure is None:
                delay = self.backoff_initial
                continue
            if self._stopping:
                return
            log.warning("MongoDB unavailable; %d task change(s) wait for the mirror (retry in %.1f s): %s",
                        self.pending, delay, failure)
            try:
                await asyncio.wait_for(self._stop_requested(), delay * (0.5 + random.random()))
            except TimeoutError:
                pass
            delay = min(delay * 2, self.backoff_max)

    def _due(self) -> dict[str, _Change]:
        """Take the changes that are due (all of them when stopping) out of the pending ones."""
        now = time.monotonic()
        if self._stopping or all(c.since <= now for c in self._pending.values()):
            batch, self._pending = self._pending, {}
            return batch
        batch = {uid: c for uid, c in self._pending.items() if c.since <= now}
        for uid in batch:
            del self._pending[uid]
        return batch

    async def _stop_requested(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            await self._wakeup.wait()

    def _write(self, batch: dict[str, _Change]) -> tuple[dict[str, bool | Exception], StorageUnavailable | None]:
        """Write a batch (worker threads, `concurrency` parts at once): outcome per uid written, and the
        failure that stopped it (the uids of the parts not finished by then stay unwritten)."""
        outcomes: dict[str, bool | Exception] = {}
        try:
            mirror, artifacts = self.open_mirror(), self.open_artifacts()
        except StorageUnavailable as exc:
            return outcomes, exc
        failures: list[StorageUnavailable] = []

        def part(uids: list[str]) -> None:
            if failures:                        # MongoDB went away: what is not started stays queued
                return
            try:
                self._apply_part(mirror, artifacts, {uid: batch[uid] for uid in uids}, outcomes)
            except StorageUnavailable as exc:
                failures.append(exc)

        parts = _parts(mirror, batch, self.concurrency)
        if len(parts) <= 1:
            for uids in parts:
                part(uids)
        else:
            workers = min(self.concurrency, len(parts))
            with ThreadPoolExecutor(workers, thread_name_prefix="gentask-mirror-write") as pool:
                for future in [pool.submit(part, uids) for uids in parts]:
                    future.result()
        if failures:
            self._failed(failures[0])
            return outcomes, failures[0]
        self.healthy, self.last_error = True, ""
        return outcomes, None

    @classmethod
    def _apply_part(cls, mirror: TaskMirror, artifacts: ArtifactStore, changes: dict[str, _Change],
                    outcomes: dict[str, bool | Exception]) -> None:
        """The upserts of a part in one upsert_many, then each uid's deletions, in that order; each
        uid's outcome goes into `outcomes` once its changes are all written (StorageUnavailable
        stops the part: the uids without an outcome stay queued)."""
        objs = [change.obj for change in changes.values() if change.obj is not None]
        try:
            upserted = mirror.upsert_many(objs) if objs else {}
        except StorageUnavailable:
            raise
        except Exception:  # noqa: BLE001 - e.g. a lease the server refused: each change on its own
            log.warning("mirror batch write failed; writing its %d change(s) one by one", len(changes), exc_info=True)
            for uid, change in changes.items():
                outcomes[uid] = cls._apply_one(mirror, artifacts, uid, change)
            return
        for uid, change in changes.items():
            outcomes[uid] = cls._apply_or_drop(mirror, artifacts, uid, change, upserted.get(uid))

    @classmethod
    def _apply_one(cls, mirror: TaskMirror, artifacts: ArtifactStore, uid: str, change: _Change) -> bool | Exception:
        upserted: bool | Exception | None = None
        try:
            if change.obj is not None:
                upserted = mirror.upsert(change.obj)
        except StorageUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - its outcome, as from upsert_many
            upserted = exc
        return cls._apply_or_drop(mirror, artifacts, uid, change, upserted)

    @classmethod
    def _apply_or_drop(cls, mirror: TaskMirror, artifacts: ArtifactStore, uid: str, change: _Change,
                upserted: bool | Exception | None) -> bool | Exception:
        """_apply, with any failure but MongoDB's going away as the uid's outcome (logged): one bad
        change must not stop the mirror."""
        try:
            return cls._apply(mirror, artifacts, uid, change, upserted)
        except StorageUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - see above
            log.exception("mirror write failed; the change is dropped", extra={"uid": uid})
            return exc

    @staticmethod
    def _apply(mirror: TaskMirror, artifacts: ArtifactStore, uid: str, change: _Change,
               upserted: bool | Exception | None) -> bool:
        """A uid's deletions after its upsert's outcome (None: it had no object to upsert)."""
        written = False
        if isinstance(upserted, ValueError) and (change.forget or change.deleted):
            # an object the mirror cannot take: say so, and still apply the deletions
            log.error("mirror write failed; the object is dropped: %s", upserted, extra={"uid": uid})
        elif isinstance(upserted, Exception):
            raise upserted
        elif upserted is not None:
            written = upserted
        if change.forget:
            written = mirror.forget(uid)
            artifacts.delete_for_task(uid)
        elif change.deleted:
            written = mirror.mark_deleted(uid) or written
        return written


def _parts(mirror: TaskMirror, batch: Mapping[str, _Change], concurrency: int) -> list[list[str]]:
    """The batch's uids in parts to write at once: the uids of one lease (mirror.lease_key) in one
    part, so that parts never wait for each other; at least `concurrency` parts where the leases
    allow, and no part much above PART_SIZE."""
    groups: dict[str, list[str]] = {}
    for uid, change in batch.items():
        groups.setdefault(mirror.lease_key(change.obj) if change.obj is not None else uid, []).append(uid)
    count = max(min(len(groups), concurrency), -(-len(batch) // PART_SIZE))
    parts: list[list[str]] = [[] for _ in range(count)]
    for i, uids in enumerate(sorted(groups.values(), key=len, reverse=True)):
        parts[i % count] += uids
    return [p for p in parts if p]


def _settle(waiter: asyncio.Future[bool], outcome: bool | Exception) -> None:
    if waiter.done():
        return
    if isinstance(outcome, Exception):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)
