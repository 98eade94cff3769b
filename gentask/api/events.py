"""Server-sent events: the API's one task watch, fanned out to every open event stream.

The index (gentask.api.index) tells the hub of every change its watch applies, in the API
server's order: `changed(task)`, `deleted(...)`, and `advanced(version)` once the watch has got
that far (bookmarks too). The hub hands each change to the streams that may see it (a stream
follows one task, one user's tasks, or every task); each change is rendered once, whatever the
number of streams.

Event ids are resourceVersions, which etcd orders across the namespace; a stream sends its events
in that order, so its last id says how far it got. The API's own writes (create, cancel) reach
the index at once, for its result reads, but the streams only when the watch brings them back
(a few milliseconds later): that keeps every stream in the watch's order, so that resuming after
the last id received misses nothing.

Level-triggered, not a log: a stream that resumes (Last-Event-ID) or falls behind gets, for every
task it may see whose version is newer than its last id, the task's current state, and a
`deleted` event for each task deleted since (the hub remembers the last DELETIONS_KEPT). States
in between may be coalesced; the latest is never lost. Each stream holds at most `queue` tasks
with an unsent change (a task's newer change replaces its older one); a client further behind
has its backlog dropped and is resynced from the index: memory stays bounded, whatever the
client's speed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import Any

import uvicorn

from gentask.api.errors import TooManyRequests, Unavailable, echo
from gentask.api.faults import RETRY_AFTER
from gentask.api.index import TaskIndex
from gentask.api.schemas import DeletedTask, TaskView
from gentask.api.views import task_view
from gentask.domain.task import GenerationTask

log = logging.getLogger("gentask.api")

DELETIONS_KEPT = 10_000      # deletions a resume can still be told of
RETRY_MS = 3000              # the reconnection delay a stream advises (`retry:`)
SHUTDOWN_POLL = 0.2          # seconds between two looks at uvicorn's should_exit

PING = b": ping\n\n"
SHUTTING_DOWN = b": the server is shutting down; reconnect with Last-Event-ID\n\n"
LIFETIME_OVER = b": this stream has lasted GENTASK_API_SSE_MAX_SECONDS; reconnect with Last-Event-ID\n\n"


def _version(value: object) -> int:
    try:
        return int(str(value or 0))
    except ValueError:
        return 0


def frame(event: str, id_: int, data: str) -> bytes:
    """One SSE event: its id, its name and one line of JSON."""
    return f"id: {id_}\nevent: {event}\ndata: {data}\n\n".encode()


class Change:
    """One version of one task (or its deletion), rendered to an SSE frame once, when first sent."""

    __slots__ = ("name", "version", "owner", "task", "record", "_frame", "_render")

    def __init__(self, name: str, version: int, owner: str, task: GenerationTask | None = None,
                 record: Mapping[str, Any] | None = None, render: Callable[[Change], bytes] | None = None) -> None:
        self.name, self.version, self.owner = name, version, owner
        self.task, self.record = task, record
        self._frame: bytes | None = None
        self._render = render

    @property
    def deleted(self) -> bool:
        """The task has left the cluster."""
        return self.task is None and self.record is None

    @property
    def final(self) -> bool:
        """Nothing will follow on a stream of this one task: it is finished, gone, or only in the history."""
        return self.task is None or self.task.status.finished

    @property
    def frame(self) -> bytes:
        """The SSE frame (built once, shared by every stream)."""
        if self._frame is None:
            assert self._render is not None
            self._frame = self._render(self)
        return self._frame


class Subscriber:
    """One open stream: what it follows, and the changes not yet sent (one per task, in version order)."""

    def __init__(self, key: str, *, name: str | None, owner: str | None, queue: int) -> None:
        self.key, self.name, self.owner = key, name, owner
        self.queue = queue
        self.pending: OrderedDict[str, Change] = OrderedDict()
        self.overflowed = False
        self.closed = False
        self.wake = asyncio.Event()

    def wants(self, name: str, owner: str) -> bool:
        """This stream may see this task."""
        if self.name is not None:
            return name == self.name
        return self.owner is None or owner == self.owner

    def offer(self, change: Change) -> bool:
        """Queue a change (replacing the task's older one); False when the backlog overflows.

        Once it has, nothing more is queued: the stream resyncs from the index when it next reads."""
        if self.overflowed:
            return True
        pending = self.pending
        pending.pop(change.name, None)
        pending[change.name] = change
        self.wake.set()
        if len(pending) > self.queue:
            pending.clear()
            self.overflowed = True
            return False
        return True

    def take(self) -> list[Change]:
        """The changes queued so far, oldest first."""
        out = list(self.pending.values())
        self.pending.clear()
        self.wake.clear()
        return out

    async def wait(self, timeout: float) -> bool:
        """Until something is queued (or the stream is closed): True; False after `timeout` seconds of nothing."""
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except TimeoutError:
            return False
        return True


class EventHub:
    """The fan-out of the index's changes to the open event streams, with their limits."""

    def __init__(self, index: TaskIndex, *, max_streams: int, max_per_user: int, queue: int,
                 heartbeat: float, lifetime: float) -> None:
        self.index = index
        self.max_streams, self.max_per_user, self.queue = max_streams, max_per_user, queue
        self.heartbeat, self.lifetime = heartbeat, lifetime
        self.watermark = 0
        self.closed = False
        self._by_name: dict[str, set[Subscriber]] = {}
        self._by_owner: dict[str, set[Subscriber]] = {}
        self._everyone: set[Subscriber] = set()
        self._per_user: Counter[str] = Counter()
        self._open = 0
        self._deleted: deque[Change] = deque(maxlen=DELETIONS_KEPT)
        self.events_sent = 0
        self.resyncs = 0

    def __len__(self) -> int:
        return self._open

    # --- fed by the index ---------------------------------------------------------------

    def changed(self, task: GenerationTask) -> None:
        """A version of a task the watch brought."""
        if not len(self):
            return
        name = task.metadata.name or ""
        self._publish(Change(name, _version(task.metadata.resource_version), task.spec.user_id, task,
                             render=self._render))

    def deleted(self, name: str, owner: str, version: int) -> None:
        """A task left the cluster (deleted, or removed by its TTL) at this version."""
        change = Change(name, version, owner, render=self._render)
        self._deleted.append(change)
        self._publish(change)

    def advanced(self, version: int) -> None:
        """The watch has brought everything up to this version."""
        if version > self.watermark:
            self.watermark = version

    def _publish(self, change: Change) -> None:
        targets: list[Iterable[Subscriber]] = [self._everyone]
        named = self._by_name.get(change.name)
        if named:
            targets.append(named)
        owned = self._by_owner.get(change.owner)
        if owned:
            targets.append(owned)
        for group in targets:
            for sub in group:
                if not sub.offer(change):
                    self.resyncs += 1
                    log.info("an event stream fell behind; resyncing it from the index",
                             extra={"user": sub.key, "queue": self.queue})

    def _render(self, change: Change) -> bytes:
        """The one place a change becomes its event: the result endpoint's data, or the delete's."""
        if change.task is not None:
            view: TaskView | DeletedTask = self.index.view(change.task)
        elif change.record is not None:
            view = task_view(change.record)
        else:
            return frame("deleted", change.version, DeletedTask(task_id=change.name).model_dump_json())
        return frame("task", change.version, view.model_dump_json(by_alias=True))

    # --- streams ------------------------------------------------------------------------

    def subscribe(self, key: str, *, name: str | None = None, owner: str | None = None) -> Subscriber:
        """A new stream of one task (name), one user's tasks (owner) or every task (neither); 429 over a cap."""
        if self.closed:
            raise Unavailable("the API is shutting down; reconnect (to another replica)", retry_after=1)
        if len(self) >= self.max_streams:
            raise TooManyRequests(f"{self.max_streams} event streams are open on this API process, the most "
                                  "allowed (GENTASK_API_SSE_MAX_STREAMS); try again later", retry_after=RETRY_AFTER)
        if self._per_user[key] >= self.max_per_user:
            raise TooManyRequests(f"user {echo(key)!r} has {self.max_per_user} event streams open, the most "
                                  "allowed (GENTASK_API_SSE_MAX_STREAMS_PER_USER); close one first",
                                  retry_after=RETRY_AFTER)
        sub = Subscriber(key, name=name, owner=owner, queue=self.queue)
        if name is not None:
            self._by_name.setdefault(name, set()).add(sub)
        elif owner is not None:
            self._by_owner.setdefault(owner, set()).add(sub)
        else:
            self._everyone.add(sub)
        self._per_user[key] += 1
        self._open += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """The stream has ended: forget it (safe to call twice)."""
        groups = [self._by_name.get(sub.name or ""), self._by_owner.get(sub.owner or ""), self._everyone]
        found = False
        for group in groups:
            if group is not None and sub in group:
                group.discard(sub)
                found = True
        if not found:
            return
        if sub.name is not None and not self._by_name.get(sub.name):
            self._by_name.pop(sub.name, None)
        if sub.owner is not None and not self._by_owner.get(sub.owner):
            self._by_owner.pop(sub.owner, None)
        self._per_user[sub.key] -= 1
        self._open -= 1
        if self._per_user[sub.key] <= 0:
            del self._per_user[sub.key]

    def current(self, task: GenerationTask) -> Change:
        """The state a task's own stream starts with."""
        return Change(task.metadata.name or "", _version(task.metadata.resource_version), task.spec.user_id, task,
                      render=self._render)

    def archived(self, record: Mapping[str, Any]) -> Change:
        """The one event of a task that only the history (MongoDB) still has."""
        return Change(str(record.get("name") or ""), _version(record.get("resourceVersion")),
                      str(record.get("userID") or ""), record=record, render=self._render)

    def backlog(self, sub: Subscriber, since: int | None) -> list[Change]:
        """What a stream of many tasks starts (or resyncs) with, in version order: with `since`, every
        task it may see changed after that version and the deletions since; without, the current state
        of its unfinished tasks. Only what the watch has brought: the rest comes live, in order."""
        top = self.watermark
        out: list[Change] = []
        for task in self.index.tasks():
            name, owner = task.metadata.name or "", task.spec.user_id
            if not sub.wants(name, owner):
                continue
            version = _version(task.metadata.resource_version)
            if version > top or (since is None and task.status.finished) or (since is not None and version <= since):
                continue
            out.append(Change(name, version, owner, task, render=self._render))
        if since is not None:
            out += [c for c in self._deleted if since < c.version <= top and sub.wants(c.name, c.owner)]
        out.sort(key=lambda c: c.version)
        return out

    async def stream(self, sub: Subscriber, first: list[Change], *, since: int | None,
                     one_task: bool) -> AsyncGenerator[bytes, None]:
        """The bytes of a stream: `retry:`, the first events, then each change as it comes, `: ping` when
        idle; a stream of one task ends after its final event; every stream ends when the hub closes,
        and after `lifetime` seconds (the client reconnects with Last-Event-ID, authenticated again)."""
        yield f"retry: {RETRY_MS}\n\n".encode()
        loop = asyncio.get_running_loop()
        end_at = loop.time() + self.lifetime
        last = since or 0
        batch = first
        while True:
            out = []
            ended = False
            for change in batch:
                if change.version <= last:
                    continue          # already sent (a snapshot's version, or the API's own write)
                out.append(change.frame)
                last = change.version
                if one_task and change.final:
                    ended = True
                    break
            if out:
                self.events_sent += len(out)
                yield b"".join(out)
            if ended:
                return
            if sub.closed:
                yield SHUTTING_DOWN
                return
            left = end_at - loop.time()
            if left <= 0:
                yield LIFETIME_OVER
                return
            batch = []
            if not await sub.wait(min(self.heartbeat, left)):
                if loop.time() < end_at:
                    yield PING
                continue
            if sub.overflowed:
                sub.overflowed = False
                sub.take()
                batch = self.backlog(sub, last) if not one_task else self._one(sub)
            else:
                batch = sub.take()

    def _one(self, sub: Subscriber) -> list[Change]:
        """A one-task stream's resync: the task's current state (or its deletion)."""
        task = self.index.get(sub.name or "")
        if task is not None:
            return [self.current(task)]
        return [c for c in self._deleted if c.name == sub.name][-1:]

    def close(self) -> None:
        """End every stream (shutdown): each sends a last comment and ends; new ones are refused."""
        self.closed = True
        for sub in [*self._everyone, *(s for g in self._by_name.values() for s in g),
                    *(s for g in self._by_owner.values() for s in g)]:
            sub.closed = True
            sub.wake.set()


def running_server() -> uvicorn.Server | None:
    """The uvicorn Server whose loop runs this code, if one does.

    uvicorn (0.54) does not tell an app that it is shutting down until every response has ended,
    and a stream does not end by itself: found here, its `should_exit` is what `follow_shutdown`
    watches. It is the coroutine `Server.serve` that the loop runs (also when served from a thread,
    where uvicorn installs no signal handlers), else the SIGTERM handler uvicorn installed."""
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        for _depth in range(8):
            frame_ = getattr(coro, "cr_frame", None)
            owner = frame_.f_locals.get("self") if frame_ is not None else None
            if isinstance(owner, uvicorn.Server):
                return owner
            coro = getattr(coro, "cr_await", None)
            if coro is None:
                break
    handler = signal.getsignal(signal.SIGTERM)
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, uvicorn.Server) else None


async def follow_shutdown(server: uvicorn.Server, hub: EventHub) -> None:
    """Close the hub as soon as uvicorn starts to shut down (SIGTERM, SIGINT, should_exit)."""
    while not (server.should_exit or server.force_exit):
        await asyncio.sleep(SHUTDOWN_POLL)
    log.info("shutting down: ending the event streams", extra={"streams": len(hub)})
    hub.close()
