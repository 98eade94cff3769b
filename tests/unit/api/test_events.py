"""The event hub on its own: fan-out, coalescing, a slow stream resynced from the index, resumes,
limits and shutdown. The index is a real TaskIndex, filled the way its watch fills it."""

from __future__ import annotations

import asyncio
import json

import pytest

from gentask.api.errors import TooManyRequests, Unavailable
from gentask.api.events import EventHub
from gentask.api.index import TaskIndex


def _obj(name: str, rv: int, user: str = "alice", phase: str = "Running") -> dict:
    return {"apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": str(rv),
                         "creationTimestamp": "2026-12-01T10:00:00Z"},
            "spec": {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "p", "userID": user},
            "status": {"phase": phase}}


def _hub(queue: int = 100, **limits: int) -> tuple[TaskIndex, EventHub]:
    index = TaskIndex(None, "ns")  # type: ignore[arg-type]  # never run: filled by `watched` below
    hub = EventHub(index, max_streams=limits.get("max_streams", 100), max_per_user=limits.get("max_per_user", 100),
                   queue=queue, heartbeat=0.05, lifetime=60)
    index.listener = hub
    return index, hub


def watched(index: TaskIndex, hub: EventHub, obj: dict) -> None:
    """What TaskIndex.run does with one ADDED/MODIFIED event of its watch."""
    task = index.put_object(obj)
    assert task is not None
    hub.changed(task)
    hub.advanced(int(obj["metadata"]["resourceVersion"]))


def parse(chunks: list[bytes]) -> list[tuple[int, str, dict]]:
    out = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith((":", "retry")))
        if fields:
            out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return out


async def take(stream, n: int) -> list[bytes]:
    return [await anext(stream) for _ in range(n)]


async def test_a_stream_gets_each_change_in_order_and_only_what_it_may_see():
    index, hub = _hub()
    sub = hub.subscribe("alice", owner="alice")
    stream = hub.stream(sub, hub.backlog(sub, None), since=None, one_task=False)
    assert await anext(stream) == b"retry: 3000\n\n"
    watched(index, hub, _obj("a", 10))
    events = parse(await take(stream, 1))
    watched(index, hub, _obj("b", 11, user="bob"))
    watched(index, hub, _obj("c", 12))
    watched(index, hub, _obj("a", 13, phase="Succeeded"))
    events += parse(await take(stream, 1))
    assert [(i, d["task_id"], d["phase"]) for i, _, d in events] == [
        (10, "a", "Running"), (12, "c", "Running"), (13, "a", "Succeeded")]
    assert hub.events_sent == 3


async def test_changes_a_stream_has_not_taken_yet_are_coalesced_per_task():
    index, hub = _hub()
    sub = hub.subscribe("alice")
    for rv, phase in ((10, "Queued"), (11, "Running"), (12, "Succeeded")):
        watched(index, hub, _obj("a", rv, phase=phase))
    assert [(c.name, c.version) for c in sub.take()] == [("a", 12)]


async def test_a_slow_stream_is_resynced_from_the_index_with_the_latest_states():
    index, hub = _hub(queue=2)
    sub = hub.subscribe("alice")
    stream = hub.stream(sub, [], since=None, one_task=False)
    await anext(stream)
    watched(index, hub, _obj("a", 10))
    for rv, name in ((11, "b"), (12, "c"), (13, "a"), (14, "d")):   # 4 tasks > queue 2: the backlog is dropped
        watched(index, hub, _obj(name, rv, phase="Succeeded" if name == "a" else "Running"))
    assert sub.overflowed and hub.resyncs == 1 and not sub.pending    # counted once, nothing more queued
    events = parse(await take(stream, 1))
    assert [(i, d["task_id"]) for i, _, d in events] == [(11, "b"), (12, "c"), (13, "a"), (14, "d")]
    assert events[2][2]["phase"] == "Succeeded"                 # a's Running (10) was coalesced away


async def test_a_resume_sends_what_changed_since_and_no_write_the_watch_has_not_brought():
    index, hub = _hub()
    for rv, name in ((5, "old"), (8, "a"), (9, "b")):
        watched(index, hub, _obj(name, rv))
    hub.deleted("gone", "alice", 10)
    hub.advanced(10)
    index.put_object(_obj("mine", 12))          # the API's own write: in the index, not yet in the watch
    sub = hub.subscribe("alice", owner="alice")
    first = hub.backlog(sub, since=7)
    assert [(c.version, c.name, c.deleted) for c in first] == [(8, "a", False), (9, "b", False), (10, "gone", True)]
    assert parse([c.frame for c in first])[-1][1:] == ("deleted", {"task_id": "gone", "deleted": True})
    fresh = hub.backlog(sub, since=None)        # a new stream: the unfinished tasks the watch has brought
    assert [c.name for c in fresh] == ["old", "a", "b"]


async def test_a_task_stream_ends_after_the_final_event():
    index, hub = _hub()
    watched(index, hub, _obj("a", 10))
    sub = hub.subscribe("alice", name="a")
    stream = hub.stream(sub, [hub.current(index.get("a"))], since=None, one_task=True)
    chunks = await take(stream, 2)
    watched(index, hub, _obj("other", 11))
    watched(index, hub, _obj("a", 12, phase="Failed"))
    chunks += [chunk async for chunk in stream]
    assert [(i, d["phase"]) for i, _, d in parse(chunks)] == [(10, "Running"), (12, "Failed")]


async def test_idle_streams_ping_and_limits_count_open_streams():
    index, hub = _hub(max_streams=3, max_per_user=2)
    one, _two = hub.subscribe("alice"), hub.subscribe("alice")
    with pytest.raises(TooManyRequests, match="GENTASK_API_SSE_MAX_STREAMS_PER_USER"):
        hub.subscribe("alice")
    hub.subscribe("bob", owner="bob")
    with pytest.raises(TooManyRequests, match=r"\(GENTASK_API_SSE_MAX_STREAMS\)"):
        hub.subscribe("carol")
    hub.unsubscribe(one)
    hub.unsubscribe(one)                        # twice is harmless
    assert len(hub) == 2
    stream = hub.stream(hub.subscribe("alice"), [], since=None, one_task=False)
    assert await take(stream, 2) == [b"retry: 3000\n\n", b": ping\n\n"]


async def test_closing_the_hub_ends_every_stream_and_refuses_new_ones():
    _index, hub = _hub()
    streams = [hub.stream(hub.subscribe(u, owner=u), [], since=None, one_task=False) for u in ("alice", "bob")]
    for s in streams:
        await anext(s)
    pending = [asyncio.ensure_future(anext(s)) for s in streams]
    await asyncio.sleep(0)
    hub.close()
    assert all(b"shutting down" in chunk for chunk in await asyncio.gather(*pending))
    with pytest.raises(Unavailable):
        hub.subscribe("alice")


async def test_a_new_list_after_the_watch_broke_tells_the_streams_what_it_missed():
    index, hub = _hub()
    for rv, name in ((5, "same"), (6, "moved"), (7, "gone")):
        watched(index, hub, _obj(name, rv))
    sub = hub.subscribe("alice")
    index._replace([_obj("same", 5), _obj("moved", 9, phase="Succeeded"), _obj("new", 10)], "12")
    assert [(c.name, c.version, c.deleted) for c in sub.take()] == [
        ("moved", 9, False), ("new", 10, False), ("gone", 12, True)]
    assert hub.watermark == 12
