"""MirrorWriter against the real FerretDB: coalescing, backoff while MongoDB is away, lag, forget, stop."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from gentask.config import Settings
from gentask.storage import ArtifactStore, MirrorWriter, StorageUnavailable, TaskMirror, connect
from tests.support.waits import wait_for_async

from ._objects import task_obj


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dead_db():
    return connect(Settings(mongo_url=f"mongodb://127.0.0.1:{_closed_port()}/gentask"), timeout_ms=200)


def _writer(target: dict, **options) -> MirrorWriter:
    options = {"backoff_initial": 0.05, "backoff_max": 0.2, "reconnect_seconds": 0.1, **options}
    return MirrorWriter(database=lambda: target["db"], **options)


async def _drained(writer: MirrorWriter, what: str) -> None:
    """Until the writer has nothing pending; progress is the pending count moving, the failure shows its stats."""
    await wait_for_async(lambda: writer.pending, 10, interval=0.02, until=lambda n: n == 0, what=what,
                         describe=lambda: repr(writer.stats()))


async def test_changes_of_one_uid_coalesce_to_the_newest(db):
    writer = _writer({"db": db})
    for rv, phase in ((1, "Pending"), (3, "Running"), (2, "Queued")):   # the older version arrives last
        writer.put(task_obj("u1", rv, phase))
    writer.put(task_obj("u2", 5, "Succeeded"))
    writer.delete("u2")
    assert writer.pending == 2
    writer.start()
    await _drained(writer, "the changes written")
    mirror = TaskMirror(db)
    assert (mirror.get("u1")["resourceVersion"], mirror.get("u1")["phase"]) == (3, "Running")
    record = mirror.get("u2")             # put, then delete: the record is written and marked deleted
    assert record["phase"] == "Succeeded" and record["deleted"] is True
    assert writer.healthy and writer.last_error == "" and writer.lag == 0.0
    await writer.stop()


async def test_a_held_put_waits_its_hold_unless_a_newer_change_of_its_uid_comes(db):
    """The operator holds a just-created task's first view (GENTASK_MIRROR_HOLD_SECONDS): a quick task's
    first view and its outcome are one write; a task that stays as it was is written once the hold ends."""
    writer = _writer({"db": db})
    writer.start()
    mirror = TaskMirror(db)
    writer.put(task_obj("quick", 1, "Pending"), hold=30.0)
    writer.put(task_obj("slow", 1, "Pending"), hold=5.0)
    writer.put(task_obj("now", 1, "Pending"))                  # no hold: written at once
    await wait_for_async(lambda: (mirror.get("now"), writer.pending), 10, interval=0.02,
                         until=lambda r: r[0] is not None and r[1] == 2,
                         what="the record put without a hold written, the two held ones waiting",
                         describe=lambda: repr(writer.stats()))
    assert mirror.get("quick") is None and mirror.get("slow") is None    # held: not written yet
    assert writer.lag == 0.0                                            # a held change is not behind
    writer.put(task_obj("quick", 2, "Succeeded"))               # its outcome: written at once, as one write
    await wait_for_async(lambda: mirror.get("quick"), 10, interval=0.02, until=lambda r: r is not None,
                         what="the held record's outcome", describe=lambda: repr(writer.stats()))
    assert (mirror.get("quick")["resourceVersion"], mirror.get("quick")["phase"]) == (2, "Succeeded")
    await wait_for_async(lambda: mirror.get("slow"), 10, interval=0.05, until=lambda r: r is not None,
                         what="the held record once its hold ended", describe=lambda: repr(writer.stats()))
    assert mirror.get("slow")["phase"] == "Pending"
    writer.put(task_obj("late", 1, "Pending"), hold=30.0)
    await writer.stop()                                         # stopping writes what is held, at once
    assert mirror.get("late")["phase"] == "Pending"


async def test_backoff_while_mongodb_is_away_keeps_every_change(db):
    target = {"db": _dead_db()}
    writer = _writer(target, reconnect_seconds=1.0)
    writer.start()
    for i in range(3):
        writer.put(task_obj(f"t{i}", 1, "Pending"))
    writer.put(task_obj("t0", 2, "Running"))
    await asyncio.sleep(1.0)
    stats = writer.stats()
    assert stats.pending == 3 and not stats.healthy and "unavailable" in stats.last_error
    assert stats.lag_seconds >= 0.9                                      # the age of the oldest change waiting
    assert writer.mirror is None
    with pytest.raises(StorageUnavailable):
        writer.open_mirror()
    # a reader within the throttle gets the last error without a new attempt (a writer not started, so
    # that only the reader's calls count)
    attempts: list[float] = []
    idle = MirrorWriter(database=lambda: attempts.append(time.monotonic()) or _dead_db(), reconnect_seconds=60)
    with pytest.raises(StorageUnavailable) as first:
        idle.open_mirror()
    with pytest.raises(StorageUnavailable) as second:
        idle.open_mirror()
    assert len(attempts) == 1 and str(second.value) == str(first.value) and "unavailable" in str(first.value)

    target["db"] = db                                            # MongoDB is back
    await _drained(writer, "catching up")
    assert writer.healthy and writer.lag == 0.0 and writer.mirror is not None
    records, total = TaskMirror(db).list(limit=10)
    assert total == 3 and {r["_id"]: r["phase"] for r in records} == {"t0": "Running", "t1": "Pending",
                                                                      "t2": "Pending"}
    await writer.stop()


async def test_forget_leaves_the_history_and_removes_the_artifacts(db):
    writer = _writer({"db": db})
    writer.start()
    artifacts = ArtifactStore(db)
    artifacts.put("u1/1/image-0.png", b"png-bytes", mime_type="image/png", task_uid="u1")
    artifacts.put("u2/1/image-0.png", b"other", mime_type="image/png", task_uid="u2")
    writer.put(task_obj("u1", 4, "Succeeded"))
    assert await asyncio.wait_for(writer.forget("u1"), 10) is True
    assert TaskMirror(db).get("u1") is None and TaskMirror(db).list(include_deleted=True)[1] == 0
    assert artifacts.open("u1/1/image-0.png") is None and artifacts.list_for_task("u1") == []
    assert db["artifacts.files"].count_documents({"metadata.taskUID": "u1"}) == 0
    assert artifacts.open("u2/1/image-0.png").read() == b"other"             # another task's stay
    assert await asyncio.wait_for(writer.forget("u1"), 10) is False            # already gone
    await writer.stop()


async def test_forget_while_away_fails_fast_and_is_applied_later(db):
    TaskMirror(db).upsert(task_obj("u1", 4, "Succeeded"))
    target = {"db": _dead_db()}
    writer = _writer(target)
    writer.start()
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(writer.forget("u1"), 5)
    assert writer.pending == 1
    target["db"] = db
    await _drained(writer, "the forget retried")
    assert TaskMirror(db).get("u1") is None
    await writer.stop()


async def test_stop_drains_what_waits_and_a_full_writer_drops_new_uids(db):
    writer = _writer({"db": db}, max_pending=2)
    writer.start()
    assert writer.put(task_obj("a", 1)) and writer.put(task_obj("b", 1))
    assert writer.put(task_obj("a", 2))                          # a known uid coalesces
    assert writer.put(task_obj("c", 1)) is False and writer.dropped == 1
    await writer.stop()
    assert set(TaskMirror(db).uids()) == {"a", "b"} and TaskMirror(db).get("a")["resourceVersion"] == 2


async def test_stop_gives_up_when_mongodb_stays_away():
    writer = _writer({"db": _dead_db()})
    writer.start()
    writer.put(task_obj("a", 1))
    forgotten = writer.forget("b")
    started = time.monotonic()
    await writer.stop(timeout=1.0)
    assert time.monotonic() - started < 3
    with pytest.raises(StorageUnavailable):
        await forgotten
    assert writer.pending == 0


async def test_a_batch_of_many_tasks_is_written_several_at_a_time_and_listed(db):
    writer = _writer({"db": db}, concurrency=4)
    for i in range(40):
        writer.put(task_obj(f"t{i:02d}", 1, "Pending", user="many"))
    for i in range(0, 40, 2):
        writer.put(task_obj(f"t{i:02d}", 2, "Running", user="many"))    # coalesces into the same write
    writer.start()
    await _drained(writer, "40 tasks written")
    page, total = TaskMirror(db).list(user_id="many", limit=100)
    assert total == 40
    assert {r["_id"]: r["resourceVersion"] for r in page} == {f"t{i:02d}": 2 if i % 2 == 0 else 1 for i in range(40)}
    assert writer.healthy and writer.lag == 0.0
    await writer.stop()


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True, "4"])
def test_concurrency_must_be_a_positive_integer(db, concurrency):
    with pytest.raises(ValueError, match=f"concurrency must be an integer of 1 or more, got {concurrency!r}"):
        MirrorWriter(database=lambda: db, concurrency=concurrency)


async def test_a_batch_of_parts_writes_every_task_and_a_bad_object_drops_only_itself(db):
    """120 changes (three parts of up to 50, written at once): an object the mirror cannot take is
    dropped alone, and the deletion that came with another still applies."""
    mirror = TaskMirror(db)
    mirror.ensure_indexes()
    mirror.upsert(task_obj("gone", 1, "Succeeded", user="u0"))
    writer = _writer({"db": db}, concurrency=4)
    for i in range(118):
        writer.put(task_obj(f"p{i:03d}", 5, "Running", user=f"u{i % 7}"))
    bad, bad_too = task_obj("bad", 2, "Running", user="u1"), task_obj("gone", 3, "Running", user="u0")
    bad["status"]["phase"] = bad_too["status"]["phase"] = "Finished"
    writer.put(bad)
    writer.put(bad_too)
    writer.delete("gone")
    writer.start()
    await _drained(writer, "120 changes written")
    assert writer.healthy and writer.dropped == 0
    assert mirror.uids() == {f"p{i:03d}": 5 for i in range(118)}
    assert mirror.get("bad") is None
    gone = mirror.get("gone")
    assert (gone["deleted"], gone["resourceVersion"], gone["phase"]) == (True, 1, "Succeeded")
    assert db["tasks.leases"].count_documents({}) == 0
    await writer.stop()
