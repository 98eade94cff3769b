"""The task mirror against the real FerretDB: records, the monotonic guard, deletion, lists."""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes import client

from devcluster import postgres
from gentask.domain.task import GROUP, PLURAL, VERSION
from gentask.storage import TaskMirror
from gentask.storage.mirror import _shard_id

from ._objects import T0, minutes, task_obj

MANIFEST = """
apiVersion: gentask.io/v1alpha1
kind: GenerationTask
metadata:
  name: img-kitten
  labels: {gentask.io/type: image, gentask.io/priority: critical}
  annotations: {note: "kubectl keeps the whole manifest in last-applied-configuration"}
spec:
  type: image
  provider: volcengine
  model: doubao-seedream-3-0-t2i-250415
  prompt: "a kitten playing in a garden"
  userID: user123
  priority: critical
  params: {size: 1024x1024, responseFormat: url, seed: 42}
  fallbacks: [{provider: openai, model: gpt-image-1.5}]
"""
SHA = "ab" * 32
ROOT = Path(__file__).resolve().parents[3]


def _status(phase: str) -> dict:
    return {"status": {
        "phase": phase, "reason": "Completed", "message": "1 image", "attempts": 2,
        "servedBy": {"provider": "volcengine", "model": "doubao-seedream-3-0-t2i-250415"},
        "startTime": "2026-03-01T12:00:05Z", "completionTime": "2026-03-01T12:00:19Z",
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed", "message": "",
                        "lastTransitionTime": "2026-03-01T12:00:19Z"}],
        "result": {"images": [{"url": "https://ark.example/img.png", "artifact": "u/1/image-0.png",
                               "mimeType": "image/png", "sizeBytes": 1234, "sha256": SHA}],
                   "usage": {"generated_images": 1}},
    }}


def test_round_trip_of_a_task_read_from_the_api_server(cluster, namespace, mirror):
    applied = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=MANIFEST)
    assert applied.returncode == 0, applied.stderr
    api = client.CustomObjectsApi(cluster.api)
    obj = api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "img-kitten",
                                                    _status("Succeeded"))
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]

    assert mirror.upsert(obj) is True
    rec = mirror.get(obj["metadata"]["uid"])

    assert rec["_id"] == obj["metadata"]["uid"]
    assert (rec["namespace"], rec["name"], rec["userID"], rec["type"]) == (namespace, "img-kitten", "user123", "image")
    assert (rec["provider"], rec["model"]) == ("volcengine", "doubao-seedream-3-0-t2i-250415")
    assert rec["priority"] == "critical"
    assert rec["prompt"] == "a kitten playing in a garden"
    assert rec["params"] == {"size": "1024x1024", "responseFormat": "url", "seed": 42}
    assert rec["fallbacks"] == [{"provider": "openai", "model": "gpt-image-1.5"}]
    assert (rec["phase"], rec["phaseRank"], rec["reason"], rec["attempts"]) == ("Succeeded", 3, "Completed", 2)
    assert rec["result"] == _status("Succeeded")["status"]["result"]
    assert rec["conditions"][0]["reason"] == "Completed"
    assert rec["servedBy"] == {"provider": "volcengine", "model": "doubao-seedream-3-0-t2i-250415"}
    created = datetime.fromisoformat(obj["metadata"]["creationTimestamp"])
    assert rec["createdAt"] == created and rec["createdAt"].tzinfo is not None
    assert rec["completionTime"] == datetime.fromisoformat("2026-03-01T12:00:19+00:00")
    assert rec["resourceVersion"] == int(obj["metadata"]["resourceVersion"])
    assert rec["deleted"] is False and rec["deletedAt"] is None
    text = repr(rec)
    assert "last-applied" not in text and "managedFields" not in text and "kubectl keeps" not in text
    assert mirror.get_by_name(namespace, "img-kitten") == rec


def test_new_record_defaults_to_pending(mirror):
    assert mirror.upsert(task_obj("u1", 5)) is True
    rec = mirror.get("u1")
    assert (rec["phase"], rec["phaseRank"], rec["resourceVersion"]) == ("Pending", 0, 5)
    assert mirror.get("nope") is None and mirror.get_by_name("ns1", "nope") is None


@pytest.fixture(params=["lease", "filter-only"])
def guarded(request, db) -> TaskMirror:
    """Both write paths: with the per-record lease (as on FerretDB) and the bare guarded upsert (MongoDB)."""
    m = TaskMirror(db, serialize_writes=request.param == "lease")
    m.ensure_indexes()
    return m


def test_an_older_resource_version_never_overwrites_a_newer(guarded):
    assert guarded.upsert(task_obj("u1", 10, "Running", message="new")) is True
    assert guarded.upsert(task_obj("u1", 9, "Running", message="old")) is False
    assert guarded.upsert(task_obj("u1", 10, "Running", message="replayed")) is False
    rec = guarded.get("u1")
    assert (rec["resourceVersion"], rec["message"]) == (10, "new")
    assert guarded.upsert(task_obj("u1", 11, "Running", message="newer")) is True
    assert guarded.get("u1")["message"] == "newer"


def test_a_terminal_phase_never_goes_back_to_running(guarded):
    assert guarded.upsert(task_obj("u1", 10, "Succeeded", reason="Completed")) is True
    assert guarded.upsert(task_obj("u1", 12, "Running", reason="Started")) is False
    assert guarded.upsert(task_obj("u1", 13, "Queued", reason="JobCreated")) is False
    assert guarded.get("u1")["phase"] == "Succeeded"
    # a newer view of a terminal task (conditions updated, say) still lands
    assert guarded.upsert(task_obj("u1", 14, "Succeeded", reason="Completed", message="archived")) is True
    assert guarded.get("u1")["message"] == "archived"


def test_concurrent_writers_converge_to_the_newest(mirror):
    phases = ["Pending", "Queued", "Running", "Running", "Succeeded"]
    uids = [f"race-{i}" for i in range(4)]
    versions = [(uid, rv, phases[min(rv // 4, 4)]) for uid in uids for rv in range(1, 21)]
    random.Random(7).shuffle(versions)
    written: dict[str, int] = {uid: 0 for uid in uids}
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def writer(chunk):
        barrier.wait()
        try:
            for uid, rv, phase in chunk:
                if mirror.upsert(task_obj(uid, rv, phase)):
                    written[uid] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(versions[i::10],)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for uid in uids:
        rec = mirror.get(uid)
        assert (rec["phase"], rec["resourceVersion"]) == ("Succeeded", 20), uid
        assert written[uid] >= 1
    assert mirror.collection.database[f"{mirror.collection.name}.leases"].count_documents({}) == 0


@pytest.mark.parametrize("lease", [True, False], ids=["lease", "filter-only"])
def test_two_writers_of_one_new_task_both_racing_to_insert(db, lease):
    """Both find no record and insert; the newer one must still win (the loser's insert fails)."""
    for attempt in range(5):
        mirrors = [TaskMirror(db, serialize_writes=lease), TaskMirror(db, serialize_writes=lease)]
        uid = f"pair-{attempt}"
        barrier = threading.Barrier(2)
        results = {}

        def write(i, rv, phase, mirrors=mirrors, uid=uid, barrier=barrier, results=results):
            barrier.wait()
            results[rv] = mirrors[i].upsert(task_obj(uid, rv, phase))

        threads = [threading.Thread(target=write, args=(0, 3, "Queued")),
                   threading.Thread(target=write, args=(1, 4, "Running"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert mirrors[0].get(uid)["resourceVersion"] == 4
        assert results[4] is True


def test_deleted_flag_sticks(mirror):
    mirror.upsert(task_obj("u1", 10, "Succeeded"))
    when = minutes(30)
    assert mirror.mark_deleted("u1", when) is True
    rec = mirror.get("u1")
    assert rec["deleted"] is True and rec["deletedAt"] == when
    # a late event with a newer view is kept, but the resource stays gone
    assert mirror.upsert(task_obj("u1", 11, "Succeeded", message="late")) is True
    rec = mirror.get("u1")
    assert (rec["message"], rec["deleted"], rec["deletedAt"]) == ("late", True, when)
    assert mirror.mark_deleted("u1") is False
    assert mirror.mark_deleted("never-seen") is False
    with pytest.raises(ValueError, match="when must be a datetime"):
        mirror.mark_deleted("u1", "2026-03-01")
    assert mirror.list()[1] == 0
    assert [r["_id"] for r in mirror.list(include_deleted=True)[0]] == ["u1"]
    assert mirror.get_by_name("ns1", "img-u1")["deleted"] is True


def test_a_name_reused_after_its_task_was_deleted(mirror):
    """kubectl delete + apply of the same name: the old record stays (deleted), the new one is live."""
    mirror.upsert(task_obj("old", 10, "Succeeded", name="img-fox"))
    mirror.mark_deleted("old")
    assert mirror.upsert(task_obj("new", 20, "Pending", name="img-fox", created=minutes(5))) is True
    assert mirror.get_by_name("ns1", "img-fox")["_id"] == "new"
    assert mirror.get("old")["deleted"] is True


def test_a_missed_deletion_is_inferred_when_the_name_is_reused(mirror):
    mirror.upsert(task_obj("old", 10, "Running", name="img-fox"))  # its deletion never reached the mirror
    assert mirror.upsert(task_obj("new", 20, "Pending", name="img-fox", created=minutes(5))) is True
    old, new = mirror.get("old"), mirror.get("new")
    assert (old["deleted"], old["deletedAt"]) == (True, minutes(5))
    assert new["deleted"] is False
    # a stale event of the old task arriving after the new one exists is stored as deleted
    mirror.upsert(task_obj("older", 5, "Succeeded", name="img-fox"))
    assert mirror.get("older")["deleted"] is True
    assert mirror.get_by_name("ns1", "img-fox")["_id"] == "new"
    assert [r["_id"] for r in mirror.list()[0]] == ["new"]


@pytest.fixture(params=[None, True, False], ids=["server-default", "timeline", "paged-by-server"])
def paging_mirror(db, request) -> TaskMirror:
    """The mirror with each way of serving a list: the server's default (the timeline on FerretDB),
    the timeline, and the server's own sort, skip, limit and count (MongoDB's default)."""
    m = TaskMirror(db, timeline=request.param)
    m.ensure_indexes()
    return m


def test_list_filters_paging_and_stable_order(paging_mirror):
    mirror = paging_mirror
    # 30 tasks of user a, 10 of user b; three tasks share each creation minute, so the order
    # inside a minute comes from _id
    for i in range(40):
        user = "a" if i < 30 else "b"
        kind = ["image", "video", "text"][i % 3]
        phase = ["Pending", "Running", "Succeeded", "Failed"][i % 4]
        mirror.upsert(task_obj(f"t{i:02d}", 100 + i, phase, user=user, type=kind, created=minutes(i // 3),
                               namespace="ns1" if i % 2 else "ns2"))
    everything, total = mirror.list(limit=100)
    assert total == 40 and len(everything) == 40
    keys = [(r["createdAt"], r["_id"]) for r in everything]
    assert keys == sorted(keys, key=lambda k: (-k[0].timestamp(), k[1]))
    assert everything[0]["_id"] == "t39"

    pages = [mirror.list(user_id="a", limit=7, offset=o) for o in range(0, 35, 7)]
    assert {p[1] for p in pages} == {30}
    paged = [r["_id"] for page, _ in pages for r in page]
    assert paged == [r["_id"] for r in everything if r["userID"] == "a"]
    assert len(set(paged)) == 30
    assert mirror.list(user_id="a", limit=7, offset=28)[0] == pages[4][0] == pages[4][0][:2]

    videos, n = mirror.list(user_id="a", type="video", limit=100)
    assert n == 10 and {r["type"] for r in videos} == {"video"}
    failed, n = mirror.list(user_id="b", phase="Failed")
    assert n == len(failed) == sum(1 for i in range(30, 40) if i % 4 == 3)
    assert {r["userID"] for r in failed} == {"b"} and {r["phase"] for r in failed} == {"Failed"}
    unfinished, n = mirror.list(user_id="a", phases=["Pending", "Running"], limit=100)    # one $in query
    assert [r["_id"] for r in unfinished] == [r["_id"] for r in everything
                                              if r["userID"] == "a" and r["phase"] in ("Pending", "Running")]
    assert n == 16
    merged = [r["_id"] for o in range(0, 16, 5) for r in mirror.list(user_id="a", phases=["Running", "Pending"],
                                                                       limit=5, offset=o)[0]]
    assert merged == [r["_id"] for r in unfinished]                   # pages of it, in the one order
    assert mirror.list(user_id="a", phases=["Failed"]) == mirror.list(user_id="a", phase="Failed")
    assert mirror.list(user_id="a", phases=[])[1] == 0
    ns, n = mirror.list(namespace="ns1", limit=100)
    assert n == 20 and {r["namespace"] for r in ns} == {"ns1"}
    assert mirror.list(user_id="nobody") == ([], 0)
    assert mirror.list(offset=1000) == ([], 40)


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": 0}, "limit must be an integer from 1 to 100, got 0"),
    ({"limit": 101}, "limit must be an integer from 1 to 100, got 101"),
    ({"limit": "20"}, "limit must be an integer from 1 to 100, got '20'"),
    ({"offset": -1}, "offset must be an integer of 0 or more, got -1"),
    ({"type": "audio"}, "type must be one of image, video, text, got 'audio'"),
    ({"phase": "Done"}, "phase must be one of Pending, Queued, Running, Succeeded, Failed, Cancelled, got 'Done'"),
    ({"phases": ["Queued", "Done"]},
     "phase must be one of Pending, Queued, Running, Succeeded, Failed, Cancelled, got 'Done'"),
    ({"phases": "Queued"}, "phases must be a list of phases, got the string 'Queued'"),
])
def test_list_rejects_bad_arguments_naming_what_is_accepted(mirror, kwargs, message):
    with pytest.raises(ValueError) as err:
        mirror.list(**kwargs)
    assert str(err.value) == message


def test_list_accepts_the_bounds(mirror):
    for i in range(3):
        mirror.upsert(task_obj(f"t{i}", i + 1))
    assert len(mirror.list(limit=1)[0]) == 1
    assert len(mirror.list(limit=100)[0]) == 3


def test_indexes_exist_and_ensure_is_idempotent(paging_mirror):
    mirror = paging_mirror
    mirror.ensure_indexes()
    records = {ix["name"]: ix for ix in mirror.collection.list_indexes()}
    assert dict(records["name_namespace_unique"]["key"]) == {"name": 1, "namespace": 1, "tombstone": 1}
    assert records["name_namespace_unique"].get("unique") is True
    if mirror._timelined():
        timeline = {ix["name"]: ix for ix in mirror.timeline.list_indexes()}
        assert dict(timeline["user_ns"]["key"]) == {"user": 1, "ns": 1}
        assert "user_created" not in records                      # the records are not what lists read
        return
    assert {"user_created", "user_type_created", "user_phase_created_id", "type_created", "phase",
            "created_id"} <= set(records)
    assert dict(records["user_created"]["key"]) == {"userID": 1, "createdAt": -1}
    assert dict(records["user_phase_created_id"]["key"]) == {"userID": 1, "phase": 1, "createdAt": -1, "_id": 1}
    assert dict(records["created_id"]["key"]) == {"createdAt": -1, "_id": 1}


def _entries(mirror: TaskMirror) -> dict[str, tuple[str, bool, bool]]:
    """uid -> (entry, deleted, forgotten) of every timeline entry."""
    out = {}
    for doc in mirror.timeline.find():
        for key, entry in doc.get("e", {}).items():
            out[key] = (entry, key in doc.get("d", {}), key in doc.get("f", {}))
    return out


def test_the_timeline_follows_every_write_and_lists_only_what_the_records_hold(db):
    mirror = TaskMirror(db, timeline=True)
    mirror.ensure_indexes()
    mirror.upsert(task_obj("u1", 10, "Running", user="ann"))
    mirror.upsert(task_obj("u1", 9, "Pending", user="ann"))         # older: neither record nor entry moves
    entry, deleted, forgotten = _entries(mirror)["u1"]
    assert entry.startswith("2" + "10".zfill(20) + "|") and entry.endswith("|image|Running")
    assert (deleted, forgotten) == (False, False)
    shard = mirror.timeline.find_one()
    assert (shard["ns"], shard["user"]) == ("ns1", "ann")
    mirror.upsert(task_obj("u1", 12, "Succeeded", user="ann"))
    assert mirror.list(user_id="ann", phase="Succeeded")[1] == 1
    mirror.mark_deleted("u1")
    assert _entries(mirror)["u1"][1:] == (True, False)
    assert mirror.list(user_id="ann") == ([], 0)
    assert mirror.list(user_id="ann", include_deleted=True)[1] == 1
    mirror.forget("u1")
    assert _entries(mirror)["u1"][1:] == (True, True)
    assert mirror.list(user_id="ann", include_deleted=True) == ([], 0)
    # forgotten before its first write: the write that comes later is not listed either
    assert mirror.forget("early") is False
    assert mirror.upsert(task_obj("early", 3, "Pending", user="ann")) is False
    assert mirror.list(user_id="ann", include_deleted=True) == ([], 0)
    # a writer killed between a record and its entry: the record alone moved (as a mirror without
    # the timeline writes it). uids() gives the entry's older version, so the operator's audit
    # mirrors the task again, and that write, a no-op for the record, brings the entry level
    mirror.upsert(task_obj("ghost", 1, "Pending", user="ann"))
    TaskMirror(db, timeline=False).upsert(task_obj("ghost", 2, "Queued", user="ann"))
    assert mirror.uids()["ghost"] == 1
    assert mirror.upsert(task_obj("ghost", 2, "Queued", user="ann")) is False
    assert mirror.uids()["ghost"] == 2
    page, total = mirror.list(user_id="ann", phase="Queued")
    assert ([r["_id"] for r in page], total, page[0]["phase"]) == (["ghost"], 1, "Queued")
    # ... and one killed before the first entry: the record is not listed until the audit's write
    TaskMirror(db, timeline=False).upsert(task_obj("first", 1, "Pending", user="ann", name="img-first"))
    assert "first" not in mirror.uids()
    assert mirror.upsert(task_obj("first", 1, "Pending", user="ann", name="img-first")) is False
    assert "first" in {r["_id"] for r in mirror.list(user_id="ann")[0]}


def test_uids_with_dots_and_dollars_are_timeline_keys(db):
    mirror = TaskMirror(db, timeline=True)
    for i, uid in enumerate(["a.b", "$c", "d%2E", "e"]):
        mirror.upsert(task_obj(uid, 10 + i, "Running", name=f"img-{i}", created=minutes(i)))
    page, total = mirror.list()
    assert ([r["_id"] for r in page], total) == (["e", "d%2E", "$c", "a.b"], 4)
    assert mirror.mark_deleted("a.b") is True and mirror.list()[1] == 3


def test_records_mirrored_before_the_timeline_existed_are_listed(db):
    old = TaskMirror(db, timeline=False)
    for i in range(5):
        old.upsert(task_obj(f"t{i}", 10 + i, "Succeeded", created=minutes(i)))
    old.mark_deleted("t4")
    old.forget("t3")
    old.forget("never-written")
    mirror = TaskMirror(db, timeline=True)
    mirror.ensure_indexes()
    page, total = mirror.list(include_deleted=True)
    assert ([r["_id"] for r in page], total) == (["t4", "t2", "t1", "t0"], 4)
    assert mirror.list()[1] == 3
    mirror.timeline.delete_many({})                            # entered once: not again at every start
    mirror.ensure_indexes()
    assert mirror.list()[1] == 0


def test_insert_many_seeds_records_and_what_lists_read(paging_mirror):
    mirror = paging_mirror
    records = [TaskMirror.record_from_task(task_obj(f"s{i}", 10 + i, "Succeeded", user="bulk", created=minutes(i)))
               for i in range(30)]
    mirror.insert_many(records)
    mirror.insert_many([])
    page, total = mirror.list(user_id="bulk", limit=3)
    assert ([r["_id"] for r in page], total) == (["s29", "s28", "s27"], 30)
    assert mirror.get_by_name("ns1", "img-s5")["resourceVersion"] == 15
    assert mirror.upsert(task_obj("s5", 99, "Succeeded", user="bulk", created=minutes(5))) is True
    assert mirror.upsert(task_obj("s6", 1, "Running", user="bulk", created=minutes(6))) is False
    assert mirror.list(user_id="bulk", phase="Running")[1] == 0


def test_uids_and_counts_for_resync(mirror):
    mirror.upsert(task_obj("a", 3, "Running", namespace="x"))
    mirror.upsert(task_obj("b", 7, "Succeeded", namespace="x"))
    mirror.upsert(task_obj("c", 9, "Succeeded", namespace="y"))
    mirror.upsert(task_obj("d", 11, "Failed", namespace="y"))
    mirror.mark_deleted("d")
    assert mirror.uids() == {"a": 3, "b": 7, "c": 9}
    assert mirror.uids("x") == {"a": 3, "b": 7}
    assert mirror.count_by_phase() == {"Pending": 0, "Queued": 0, "Running": 1, "Succeeded": 2, "Failed": 1,
                                       "Cancelled": 0}
    assert mirror.count_by_phase(include_deleted=False)["Failed"] == 0


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o["metadata"].pop("uid"), "lacks metadata.uid"),
    (lambda o: o["metadata"].update(resourceVersion="abc"),
     "metadata.resourceVersion must be an integer string, got 'abc'"),
    (lambda o: o.pop("spec"), "lacks spec"),
    (lambda o: o.update(status={"phase": "Done"}), "status.phase must be one of Pending, Queued"),
    (lambda o: o["metadata"].update(creationTimestamp="yesterday"),
     "metadata.creationTimestamp must be an RFC 3339 time"),
])
def test_malformed_objects_are_refused_naming_the_field(mirror, mutate, message):
    obj = task_obj("u1", 1)
    mutate(obj)
    with pytest.raises(ValueError, match=message):
        mirror.upsert(obj)
    assert mirror.get("u1") is None


@pytest.mark.parametrize("timeline", [False, True], ids=["record-lease", "shard-lease"])
def test_a_held_lease_of_a_crashed_writer_expires(db, timeline):
    """A writer that died holding the lease blocks that record only until the lease expires."""
    m = TaskMirror(db, serialize_writes=True, timeline=timeline, lease_seconds=1)
    lease = _shard_id(("ns1", "user123", "u1")) if timeline else "u1"   # a record's shard holds its lease
    db["tasks.leases"].insert_one({"_id": lease, "owner": "dead", "expiresAt": T0})
    started = time.monotonic()
    assert m.upsert(task_obj("u1", 1, "Pending")) is True
    assert time.monotonic() - started < 5
    assert db["tasks.leases"].count_documents({}) == 0


def test_ferretdb_postgresql_serves_equality_filters_from_gin_twins(db, mirror):
    """The local cluster's PostgreSQL gives FerretDB's btree indexes GIN twins on their first field,
    so `_id`, name and user lookups are index scans there (devcluster/postgres.py GIN_TWINS)."""
    pg = postgres.connection(Path(os.environ.get("GENTASK_DEVCLUSTER_ROOT", ROOT / ".devcluster")))
    if pg is None:
        pytest.skip("the MongoDB under test is not the local cluster's FerretDB over PostgreSQL")
    mirror.upsert(task_obj("u1", 1, "Pending"))
    twins = pg.psql(f"SELECT t.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                    f"JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
                    f"WHERE n.nspname = '{db.name}' AND pg_get_indexdef(i.indexrelid) LIKE '%USING gin%'")
    fields = {(table.split("_")[0] + ("_timeline" if "_timeline_" in table else ""), defn.split("'")[1])
              for table, defn in (line.split("|", 1) for line in twins.splitlines())}
    assert {("tasks", "_id"), ("tasks", "name"), ("tasks_timeline", "_id"), ("tasks_timeline", "user")} <= fields
    # without GIN's pending list: a lookup never reads through rows not yet merged into the index
    options = pg.psql(f"SELECT c.relname, coalesce(array_to_string(c.reloptions, ','), '') FROM pg_index i "
                      f"JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                      f"JOIN pg_am am ON am.oid = c.relam WHERE n.nspname = '{db.name}' AND am.amname = 'gin'")
    rows = [line.split("|", 1) for line in options.splitlines()]
    assert rows and all(opts == "fastupdate=off" for _, opts in rows), rows


@pytest.mark.parametrize("timeline", [True, False], ids=["timeline", "records"])
def test_uids_give_each_live_record_its_latest_version_either_way(db, timeline):
    """The operator's audit compares these with the cluster: from the timeline on FerretDB (a few
    documents), from the records elsewhere; both must agree."""
    mirror = TaskMirror(db, timeline=timeline)
    mirror.ensure_indexes()
    mirror.upsert(task_obj("a", 3, "Running", namespace="x"))
    mirror.upsert(task_obj("a", 5, "Succeeded", namespace="x"))
    mirror.upsert(task_obj("b", 7, "Succeeded", namespace="x"))
    mirror.upsert(task_obj("c", 9, "Succeeded", namespace="y"))
    mirror.upsert(task_obj("d", 11, "Failed", namespace="y"))
    mirror.upsert(task_obj("e", 12, "Failed", namespace="y"))
    mirror.mark_deleted("d")
    mirror.forget("e")
    assert mirror.uids() == {"a": 5, "b": 7, "c": 9}
    assert mirror.uids("x") == {"a": 5, "b": 7}


@pytest.mark.parametrize("timeline", [True, False], ids=["shard-lease", "filter-only"])
def test_upsert_many_answers_for_each_task_as_upsert_would(db, timeline):
    """A writer's batch: new tasks, newer, older and replayed versions, a reused name and an object the
    mirror cannot take, each with its own outcome; the timeline agrees with the records after."""
    m = TaskMirror(db, serialize_writes=timeline, timeline=timeline)
    m.ensure_indexes()
    assert m.upsert(task_obj("old", 10, "Running")) is True
    assert m.upsert(task_obj("done", 10, "Succeeded", message="kept")) is True
    assert m.upsert(task_obj("same", 7, "Running")) is True
    assert m.upsert(task_obj("gone", 3, "Succeeded", name="reused")) is True
    bad = task_obj("bad", 1, "Pending")
    bad["status"]["phase"] = "Finished"
    batch = [task_obj(f"new{i}", 20 + i, "Pending") for i in range(12)] + [
        task_obj("old", 11, "Succeeded"),                 # newer: written
        task_obj("done", 12, "Running", message="lost"),  # back from a terminal phase: refused
        task_obj("same", 7, "Running"),                   # replayed: refused
        task_obj("fresh", 40, "Pending", name="reused"),  # the name's earlier task is gone
        bad]
    outcomes = m.upsert_many(batch)
    assert {uid: o for uid, o in outcomes.items() if uid != "bad"} == {
        **{f"new{i}": True for i in range(12)}, "old": True, "done": False, "same": False, "fresh": True}
    assert isinstance(outcomes["bad"], ValueError) and "Finished" in str(outcomes["bad"])
    assert m.get("bad") is None
    assert (m.get("old")["phase"], m.get("old")["resourceVersion"]) == ("Succeeded", 11)
    assert (m.get("done")["message"], m.get("done")["resourceVersion"]) == ("kept", 10)
    assert m.get("gone")["deleted"] is True and m.get_by_name("ns1", "reused")["_id"] == "fresh"
    assert m.uids() == {**{f"new{i}": 20 + i for i in range(12)}, "old": 11, "done": 10, "same": 7, "fresh": 40}
    page, total = m.list(user_id="user123", limit=100)
    assert total == 16 and {r["_id"] for r in page} == {*(f"new{i}" for i in range(12)), "old", "done", "same",
                                                        "fresh"}
    assert db["tasks.leases"].count_documents({}) == 0


def test_upsert_many_waits_for_a_shard_another_writer_holds_and_writes_the_rest_first(db):
    """A lease another writer holds (here one that died) delays only the tasks of its shard."""
    m = TaskMirror(db, serialize_writes=True, timeline=True, lease_seconds=1)
    m.ensure_indexes()
    uids = [f"s{i}" for i in range(40)]
    held = _shard_id(("ns1", "user123", uids[0]))
    db["tasks.leases"].insert_one({"_id": held, "owner": "dead", "expiresAt": T0})
    outcomes = m.upsert_many([task_obj(uid, 5, "Running") for uid in uids])
    assert outcomes == dict.fromkeys(uids, True)
    assert m.uids() == dict.fromkeys(uids, 5)
    assert db["tasks.leases"].count_documents({}) == 0


def test_batches_and_single_writers_racing_converge_to_the_newest(db):
    """Writers of batches (upsert_many, as MirrorWriters write) and of single upserts, in separate
    mirrors as separate processes would be, with every version of 3 tasks shuffled among them: no
    newer version is ever overwritten by an older one, in the records or their timeline entries."""
    phases = ["Pending", "Queued", "Running", "Running", "Succeeded"]
    uids = [f"race-{i}" for i in range(3)]
    versions = [(uid, rv, phases[min(rv // 8, 4)]) for uid in uids for rv in range(1, 41)]
    random.Random(11).shuffle(versions)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def writer(k: int, chunk: list) -> None:
        m = TaskMirror(db)
        barrier.wait()
        try:
            if k == 5:
                for uid, rv, phase in chunk:
                    m.upsert(task_obj(uid, rv, phase))
                return
            for i in range(0, len(chunk), 4):   # a batch holds one version a uid: the newest, as the writer's
                batch = {uid: (rv, phase) for uid, rv, phase in sorted(chunk[i:i + 4], key=lambda v: v[1])}
                m.upsert_many([task_obj(uid, rv, phase) for uid, (rv, phase) in batch.items()])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k, versions[k::6])) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    m = TaskMirror(db)
    for uid in uids:
        rec = m.get(uid)
        assert (rec["phase"], rec["resourceVersion"]) == ("Succeeded", 40), uid
    assert m.uids() == dict.fromkeys(uids, 40)
    assert db["tasks.leases"].count_documents({}) == 0
