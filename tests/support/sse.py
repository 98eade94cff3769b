"""A small server-sent events client for the tests: httpx streaming, the text/event-stream format
parsed here (as the WHATWG HTML standard's "event stream interpretation" says), read by a thread
so that a test can wait on what has arrived so far and close the connection when it likes."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.waits import wait_for

_END = object()


@dataclass
class Event:
    """One dispatched event: its id (the last one set), its name, its data (JSON-decoded when it is JSON)."""

    id: str | None
    event: str
    raw: str
    data: Any = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.data = json.loads(self.raw)
        except ValueError:
            self.data = self.raw


class Stream:
    """An open GET of a text/event-stream; `events`, `comments` and `retry` fill in as lines arrive."""

    def __init__(self, c: httpx.Client, path: str, *, headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None) -> None:
        self.path = path
        self._cm = c.stream("GET", path, headers=headers, params=params,
                            timeout=httpx.Timeout(30, read=None))
        self.response = self._cm.__enter__()
        self.events: list[Event] = []
        self.comments: list[str] = []
        self.lines: list[str] = []
        self.retry: int | None = None
        self.ended = False
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        if self.response.status_code == 200:
            self._thread = threading.Thread(target=self._read, name=f"sse {path}", daemon=True)
            self._thread.start()
        else:
            self.response.read()
            self.ended = True

    def _read(self) -> None:
        last_id: str | None = None
        name, data = "", []
        try:
            for line in self.response.iter_lines():
                self._queue.put(("line", line))
                if line == "":
                    if data:
                        self._queue.put(("event", Event(last_id, name or "message", "\n".join(data))))
                    name, data = "", []
                    continue
                if line.startswith(":"):
                    self._queue.put(("comment", line[1:].strip()))
                    continue
                key, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if key == "id":
                    last_id = value
                elif key == "event":
                    name = value
                elif key == "data":
                    data.append(value)
                elif key == "retry" and value.isdigit():
                    self._queue.put(("retry", int(value)))
        except (httpx.HTTPError, RuntimeError, ValueError):
            pass                          # closed by the test, or the server went away: the end either way
        finally:
            self._queue.put(_END)

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _END:
                self.ended = True
                continue
            kind, value = item
            if kind == "event":
                self.events.append(value)
            elif kind == "comment":
                self.comments.append(value)
            elif kind == "retry":
                self.retry = value
            else:
                self.lines.append(value)

    def snapshot(self) -> tuple[int, int, bool]:
        """(events, comments, ended) so far."""
        self._drain()
        return len(self.events), len(self.comments), self.ended

    def wait(self, until, what: str, timeout: float = 30) -> list[Event]:
        """The events so far, once until(events) holds; fails (with what arrived) if the stream ends first."""
        def seen() -> tuple[int, int, bool]:
            return self.snapshot()
        wait_for(seen, timeout, interval=0.02, until=lambda _: until(self.events),
                 abort=lambda s: s[2] and not until(self.events) and "the stream ended",
                 what=f"{what} on {self.path}", describe=self.describe)
        return list(self.events)

    def wait_end(self, what: str, timeout: float = 30) -> list[Event]:
        """The events, once the server has ended the stream."""
        wait_for(self.snapshot, timeout, interval=0.02, until=lambda s: s[2], what=f"{what}: the end of {self.path}",
                 describe=self.describe)
        return list(self.events)

    def describe(self) -> str:
        self._drain()
        shown = [f"{e.event} id={e.id} {_short(e.data)}" for e in self.events[-20:]]
        return (f"stream {self.path}: status {self.response.status_code}, ended={self.ended}, "
                f"{len(self.events)} events (last 20: {shown}), comments {self.comments[-5:]}")

    def close(self) -> None:
        """Disconnect (as a client that goes away)."""
        if not self._closed:
            self._closed = True
            self._cm.__exit__(None, None, None)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(data: Any) -> str:
    if isinstance(data, dict):
        keys = ("task_id", "phase", "message", "deleted")
        return str({k: data[k] for k in keys if k in data})
    return str(data)[:200]
