"""The MongoDB mirror of GenerationTasks: one record per task uid, never moved backwards.

A record is replaced only by a newer view of its task: a higher (phaseRank, resourceVersion).
On MongoDB the guarded upsert is one atomic document operation. FerretDB v1 evaluates the filter
and writes the document in two steps, so two writers can both pass the guard; there every write
to an existing record first takes a short lease (an insert into `<collection>.leases`, which a
unique _id makes atomic) and gives it back after. A record is first created by an insert, which
the unique _id makes atomic everywhere.

Names are unique among live records only: Kubernetes lets a name be reused once its resource is
gone, and the mirror keeps the old record (flagged deleted) beside the new one.

Lists. On MongoDB a list is one query of the records, served by their indexes (filter, sort,
skip, limit) and a count. FerretDB v1 pushes only equality filters down to PostgreSQL and then
decodes every matching document in Go and sorts, skips and counts there, at a cost per document
that makes one user's 2,000 records take seconds (docs/benchmarks.md). So where the server is
FerretDB (or `timeline=True`) the mirror also keeps a timeline, `<collection>.timeline`: for each
(namespace, user) a few documents (a task's shard is a hash of its uid) that hold one short
string per task ("<phaseRank><resourceVersion>|<createdAt ms>|<type>|<phase>" in `e`, keyed by
uid) and the uids that are deleted (`d`) or forgotten (`f`). A list reads the user's shards
(one equality query), filters, sorts and counts their entries here, and reads the page's records
by _id. Every write of a record writes the record first, then its timeline entry, both under
the lease of the shard (which covers every uid of it, so it is also the record's lease): an
entry never runs ahead of its record. A writer's batch (upsert_many) takes the leases of all its
shards with one insert, gives them back with one delete and writes the entries of one shard
with one update; each record stays one guarded upsert of its own. The operator's audit reads
the versions from the timeline (`uids`), so a writer killed between the two leaves an entry
older than the cluster's resource, which the audit mirrors again: the record's write is then a
no-op and the entry catches up.
On FerretDB over PostgreSQL reads by _id and equality filters are index scans only with GIN
indexes on FerretDB's JSONB expressions, a deploy-time step of the database (docs/architecture.md, "MongoDB mirror").
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import random
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from gentask.domain.reasons import Phase
from gentask.domain.task import TaskType
from gentask.storage.mongo import StorageUnavailable, is_ferretdb, translate_errors

log = logging.getLogger(__name__)

LIMIT_MAX = 100
PHASES = tuple(p.value for p in Phase)
TYPES = tuple(t.value for t in TaskType)
LIST_ORDER = [("createdAt", DESCENDING), ("_id", ASCENDING)]
# tombstone is "" while the resource exists and the uid once it is gone: one live record a name.
# The name leads: it is what a lookup by name selects on (and what an index on FerretDB's
# PostgreSQL has to serve). Databases made before keep their namespace_name_unique beside it.
NAME_INDEX = IndexModel([("name", ASCENDING), ("namespace", ASCENDING), ("tombstone", ASCENDING)],
                        name="name_namespace_unique", unique=True)
# the records' list indexes, where the server pages lists (MongoDB)
LIST_INDEXES = (
    IndexModel([("userID", ASCENDING), ("createdAt", DESCENDING)], name="user_created"),
    IndexModel([("userID", ASCENDING), ("type", ASCENDING), ("createdAt", DESCENDING)], name="user_type_created"),
    # the list's whole sort order after (userID, phase): one phase or several ($in, merged by
    # MongoDB from one index scan a phase) are served without an in-memory sort
    IndexModel([("userID", ASCENDING), ("phase", ASCENDING), ("createdAt", DESCENDING), ("_id", ASCENDING)],
               name="user_phase_created_id"),
    IndexModel([("type", ASCENDING), ("createdAt", ASCENDING)], name="type_created"),
    IndexModel([("phase", ASCENDING)], name="phase"),
    IndexModel([("createdAt", DESCENDING), ("_id", ASCENDING)], name="created_id"),
    # the usage endpoint's range of one user's finished tasks (usage_totals)
    IndexModel([("userID", ASCENDING), ("completionTime", ASCENDING)], name="user_completed"),
)
INDEXES = (*LIST_INDEXES, NAME_INDEX)
TIMELINE_INDEXES = (IndexModel([("user", ASCENDING), ("ns", ASCENDING)], name="user_ns"),)
TIMELINE_SHARDS = 32      # documents a (namespace, user): each small enough to update cheaply
_ALL_AT_ONCE = 10_000     # documents in one reply, not FerretDB's first batch of 101 and more after
_PAGE_READERS = 4         # records of a page read at once where they are read one by one
# Fields a write never sets with $set: they belong to mark_deleted (or to the first insert).
_DELETION_FIELDS = ("deleted", "deletedAt", "tombstone")
_DUPLICATE_KEY = 11000


def _now() -> datetime:
    return _ms(datetime.now(UTC))


def _ms(value: datetime) -> datetime:
    """UTC, truncated to the millisecond BSON keeps, so a record reads back equal to what was written."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _time(value: Any, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return _ms(value)
    if isinstance(value, str):
        try:
            return _ms(datetime.fromisoformat(value))
        except ValueError:
            pass
    raise ValueError(f"{field} must be an RFC 3339 time such as 2026-01-31T12:00:00Z, got {value!r}")


def record_from_task(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The mirror record of a GenerationTask object as the Kubernetes API returns it.

    Nothing from metadata.annotations or metadata.managedFields is kept: kubectl's
    last-applied-configuration may hold anything.
    """
    if not isinstance(obj, Mapping):
        raise ValueError("expected a GenerationTask object (a dict with metadata, spec, status), "
                         f"got {type(obj).__name__}")
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec"), obj.get("status") or {}
    missing = [f"metadata.{k}" for k in ("uid", "name", "namespace", "resourceVersion", "creationTimestamp")
               if not meta.get(k)]
    if not isinstance(spec, Mapping):
        missing.append("spec")
        spec = {}
    if missing:
        raise ValueError(f"GenerationTask {meta.get('namespace')}/{meta.get('name')} lacks {', '.join(missing)}; "
                         "pass the object as the API server returns it")
    try:
        resource_version = int(meta["resourceVersion"])
    except (TypeError, ValueError):
        raise ValueError("metadata.resourceVersion must be an integer string, "
                         f"got {meta['resourceVersion']!r}") from None
    phase = status.get("phase") or Phase.PENDING.value
    if phase not in PHASES:
        raise ValueError(f"status.phase must be one of {', '.join(PHASES)}, got {phase!r}")
    return {
        "_id": str(meta["uid"]),
        "name": meta["name"],
        "namespace": meta["namespace"],
        "userID": spec.get("userID", ""),
        "type": spec.get("type"),
        "provider": spec.get("provider"),
        "model": spec.get("model"),
        "priority": spec.get("priority", "default"),
        "prompt": spec.get("prompt"),
        "params": dict(spec.get("params") or {}),
        "fallbacks": list(spec.get("fallbacks") or []),
        "phase": phase,
        "phaseRank": Phase(phase).rank,
        "reason": status.get("reason"),
        "message": status.get("message"),
        "attempts": status.get("attempts"),
        "servedBy": status.get("servedBy"),
        "providerTaskID": status.get("providerTaskID"),
        "providerFailures": list(status.get("providerFailures") or []),
        "result": status.get("result"),
        "usage": status.get("usage"),
        "cost": status.get("cost"),
        "conditions": list(status.get("conditions") or []),
        "notify": spec.get("notify"),                                   # webhooks: where, which events
        "notifications": list(status.get("notifications") or []),       # and how their delivery went
        "createdAt": _time(meta["creationTimestamp"], "metadata.creationTimestamp"),
        "startTime": _time(status.get("startTime"), "status.startTime"),
        "completionTime": _time(status.get("completionTime"), "status.completionTime"),
        "updatedAt": _now(),
        "resourceVersion": resource_version,
        "deleted": False,
    }


def _guard(record: Mapping[str, Any]) -> dict[str, Any]:
    """Matches the stored record only when it is older than `record` in (phaseRank, resourceVersion)."""
    rank, rv = record["phaseRank"], record["resourceVersion"]
    return {"_id": record["_id"],
            "$or": [{"phaseRank": {"$lt": rank}}, {"phaseRank": rank, "resourceVersion": {"$lt": rv}}]}


class TaskMirror:
    """The `tasks` collection: upserts from the operator, queries for the REST API."""

    record_from_task = staticmethod(record_from_task)

    def __init__(self, db: Database[Any], collection: str = "tasks", *, serialize_writes: bool | None = None,
                 timeline: bool | None = None, lease_seconds: float = 60.0) -> None:
        """serialize_writes: take a lease around the writes of a record; None = only on FerretDB.
        timeline: keep the timeline and list from it; None = only on FerretDB."""
        self.collection = db[collection]
        self.timeline = db[f"{collection}.timeline"]
        self._leases = db[f"{collection}.leases"]
        self._meta = db[f"{collection}.meta"]
        self._db = db
        self._serialize = serialize_writes
        self._timeline = timeline
        self._ferretdb: bool | None = None
        self._lease_seconds = lease_seconds

    # --- writes -------------------------------------------------------------------------------

    def ensure_indexes(self) -> list[str]:
        """Create the indexes the reads use (idempotent); returns their names. With the timeline,
        also enters the records written before it existed (once: `<collection>.meta` says so)."""
        # one index a command: FerretDB v1.24 drops the connection when one createIndexes
        # command names two indexes that already exist
        with self._errors("creating the tasks indexes"):
            if not self._timelined():
                return [name for index in INDEXES for name in self.collection.create_indexes([index])]
            names = [name for index in (NAME_INDEX,) for name in self.collection.create_indexes([index])]
            names += [name for index in TIMELINE_INDEXES for name in self.timeline.create_indexes([index])]
            if self._meta.find_one({"_id": "timeline"}) is None:
                fields = ("_id", "namespace", "userID", "type", "phase", "phaseRank", "resourceVersion", "createdAt",
                          "deleted", "forgotten")
                found = [d for d in self.collection.find({}, dict.fromkeys(fields, 1), batch_size=_ALL_AT_ONCE)
                         if "phaseRank" in d]
                self._enter_all(found)
                if found:
                    log.info("entered %d mirrored task(s) written before the timeline existed", len(found))
                self._meta.update_one({"_id": "timeline"}, {"$set": {"complete": True, "at": _now()}}, upsert=True)
            return names

    def insert_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Insert new records (record_from_task output) in bulk, and their timeline entries: seeding
        and imports, never beside a running writer (it is unguarded). DuplicateKeyError names a uid
        or live name already stored."""
        if not records:
            return
        docs = [{"tombstone": r["_id"] if r.get("deleted") else ""} | dict(r) for r in records]
        with self._errors(f"inserting {len(docs)} task record(s)"):
            if self._timelined():
                self._enter_all(docs)
            self.collection.insert_many(docs, ordered=False)

    def upsert(self, obj: Mapping[str, Any]) -> bool:
        """Mirror a GenerationTask; True when written, False when the stored record is as new or newer."""
        record = record_from_task(obj)
        with self._errors(f"mirroring task {record['namespace']}/{record['name']}"):
            for _ in range(3):
                with self._exclusive(record):
                    outcome = self._write(record)
                    if outcome is not None:
                        self._enter(record)       # after the record: see the module's docstring
                if outcome is None:
                    outcome = self._settle_name(record)
                if outcome is not None:
                    return outcome
            raise RuntimeError(f"task {record['namespace']}/{record['name']} ({record['_id']}) kept colliding "
                               "with another live record of the same name")

    def upsert_many(self, objs: Sequence[Mapping[str, Any]]) -> dict[str, bool | Exception]:
        """Mirror several GenerationTasks (one object a uid) as upsert() mirrors each: per uid True when
        written, False when the stored record is as new or newer, or the ValueError (or other error)
        that kept its object out.

        Each record is still one guarded upsert of its own: FerretDB v1.24 runs no update command of
        several statements safely (unordered, it stopped at the first write error and left n and
        nModified out of its reply; one of 100 statements hung it, its PostgreSQL connection pool
        exhausted, until it was restarted). What is shared: where writes take leases, the leases of
        all the objects' shards are taken with one insert and given back with one delete, and the
        entries of one shard are written with one update. A record whose lease another writer
        holds, or whose name another live record has, goes through upsert() after the leases are
        given back (which waits for that lease, or settles the name)."""
        outcomes: dict[str, bool | Exception] = {}
        by_uid: dict[str, Mapping[str, Any]] = {}
        records: list[dict[str, Any]] = []
        for obj in objs:
            uid = str(((obj.get("metadata") or {}) if isinstance(obj, Mapping) else {}).get("uid"))
            try:
                records.append(record_from_task(obj))
                by_uid[uid] = obj
            except ValueError as exc:
                outcomes[uid] = exc
        later: list[dict[str, Any]] = []
        with self._errors(f"mirroring {len(records)} task(s)"):
            token = uuid.uuid4().hex
            held = self._acquire_many({self._lease_of(_owner_of(r)) for r in records}, token)
            try:
                written: builtins.list[dict[str, Any]] = []
                replayed: builtins.list[dict[str, Any]] = []
                for record in records:
                    if not self._holds(held, record):
                        later.append(record)
                        continue
                    outcome = self._write(record)
                    if outcome is None:
                        later.append(record)      # the name is another live record's: upsert() settles it
                        continue
                    outcomes[record["_id"]] = outcome
                    (written if outcome else replayed).append(record)
                self._enter_many(written)         # after the records: see the module's docstring
                for record in replayed:           # an entry a crash left behind catches up
                    self._enter(record)
            finally:
                self._release_many(held, token)
        for record in later:
            try:
                outcomes[record["_id"]] = self.upsert(by_uid[record["_id"]])
            except StorageUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - one task's failure is its own outcome
                outcomes[record["_id"]] = exc
        return outcomes

    def lease_key(self, obj: Mapping[str, Any]) -> str:
        """What the writes of a GenerationTask object share with others (its lease, its timeline
        shard): objects of different keys can be written at once without waiting for each other."""
        meta = (obj.get("metadata") or {}) if isinstance(obj, Mapping) else {}
        spec = (obj.get("spec") or {}) if isinstance(obj, Mapping) else {}
        spec = spec if isinstance(spec, Mapping) else {}
        owner = (str(meta.get("namespace")), str(spec.get("userID") or ""), str(meta.get("uid")))
        return self._lease_of(owner) if self._serializing() else owner[2]

    def mark_deleted(self, uid: str, when: datetime | None = None) -> bool:
        """Flag the record of a task whose resource is gone; True when it was live until now."""
        if when is not None and not isinstance(when, datetime):
            raise ValueError(f"when must be a datetime (the deletion time) or None for now, got {when!r}")
        when = _ms(when) if when else _now()
        with self._errors(f"marking task {uid} deleted"):
            owner = self._owner(uid)
            if owner is None:
                return False
            with self._exclusive(owner):
                self._flag(owner, "d")
                res = self.collection.update_one({"_id": uid, "deleted": False},
                                                 {"$set": {"deleted": True, "deletedAt": when, "tombstone": uid}})
            return res.matched_count > 0

    def forget(self, uid: str, when: datetime | None = None) -> bool:
        """A task its user deleted: the record stays (deleted, forgotten) but leaves the history:
        get, get_by_name and list no longer return it. True when it was visible until now."""
        when = _ms(when) if when else _now()
        with self._errors(f"forgetting task {uid}"):
            owner = self._owner(uid)
            if owner is None:
                # a forget that overtakes the record's first write still hides it for good: the
                # insert is atomic, and the write that comes later finds a record it cannot replace
                try:
                    self.collection.insert_one({"_id": uid, "forgotten": True, "deleted": True, "tombstone": uid,
                                                "deletedAt": when})
                    return False
                except DuplicateKeyError:
                    owner = self._owner(uid)      # that first write came in between
                    if owner is None:
                        return False              # ... or another forget
            with self._exclusive(owner):
                visible = self.collection.find_one({"_id": uid, "forgotten": {"$ne": True}}, {"_id": 1}) is not None
                self._flag(owner, "d", "f")
                self.collection.update_one({"_id": uid}, {"$set": {"forgotten": True, "deleted": True,
                                                                   "tombstone": uid}})
                self.collection.update_one({"_id": uid, "deletedAt": {"$exists": False}},
                                           {"$set": {"deletedAt": when}})
            return visible

    def _write(self, record: dict[str, Any], tombstone_at: datetime | None = None) -> bool | None:
        """The guarded upsert: True written, False not newer, None another live record has the name."""
        fields = {k: v for k, v in record.items() if k != "_id" and k not in _DELETION_FIELDS}
        # FerretDB v1 drops null values from $setOnInsert, so a live record gets no deletedAt
        # (reads add it back as None) and a non-null tombstone
        on_insert: dict[str, Any] = {"deleted": False, "tombstone": ""}
        if tombstone_at is not None:
            on_insert = {"deleted": True, "deletedAt": tombstone_at, "tombstone": record["_id"]}
        update = {"$set": fields, "$setOnInsert": on_insert}
        guard = _guard(record)
        try:
            res = self.collection.update_one(guard, update, upsert=True)
            return res.upserted_id is not None or res.matched_count > 0
        except DuplicateKeyError:
            pass  # the record exists and is not older, or a racing writer inserted it, or the name is taken
        if self.collection.update_one(guard, update).matched_count:
            return True
        stored = self.collection.find_one({"_id": record["_id"]}, {"deleted": 1, "forgotten": 1})
        if stored is None:
            return None
        if self._timelined() and (stored.get("deleted") or stored.get("forgotten")):
            # e.g. forgotten before its first write: its entry, made here, must say so too
            self._enter(record)
            self._flag(_owner_of(record), *(("d", "f") if stored.get("forgotten") else ("d",)))
        return False

    def _settle_name(self, record: dict[str, Any]) -> bool | None:
        """Another live record holds this (namespace, name): the earlier of the two is gone.

        Resource versions order them: a name is reused only after its resource is deleted, so
        every version of the old resource is below every version of the new one. Returns None
        when the other record was retired (write again), else the outcome of writing this one
        as already deleted.
        """
        other = self.collection.find_one({"namespace": record["namespace"], "name": record["name"],
                                          "tombstone": "", "_id": {"$ne": record["_id"]}})
        if other is None:
            return None
        if other["resourceVersion"] < record["resourceVersion"]:
            self.mark_deleted(other["_id"], when=record["createdAt"])
            return None
        with self._exclusive(record):
            outcome = self._write(record, tombstone_at=_ms(other["createdAt"]))
            self._enter(record)
            self._flag(_owner_of(record), "d")
            return outcome

    # --- the timeline -------------------------------------------------------------------------

    def _enter(self, record: Mapping[str, Any]) -> None:
        """The guarded write of a record's timeline entry: an entry as new or newer stays as it is."""
        if not self._timelined():
            return
        shard, key, entry = _shard_id(_owner_of(record)), _key(record["_id"]), _entry(record)
        guard = {"_id": shard, "$or": [{f"e.{key}": {"$exists": False}}, {f"e.{key}": {"$lt": entry}}]}
        try:
            self.timeline.update_one(guard, {"$set": {f"e.{key}": entry, "ns": record["namespace"],
                                                      "user": record["userID"]}}, upsert=True)
        except DuplicateKeyError:
            pass  # the shard exists and its entry is not older

    def _enter_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """_enter for records just written: one guarded update a shard for all its entries. Their
        records were older than these before the write, so their entries were too (an entry never
        runs ahead of its record); if the guard still fails (a writer whose lease expired), each
        entry is written with its own guard."""
        if not self._timelined():
            return
        shards: dict[str, list[Mapping[str, Any]]] = {}
        for record in records:
            shards.setdefault(_shard_id(_owner_of(record)), []).append(record)
        for shard, entered in shards.items():
            if len(entered) == 1:
                self._enter(entered[0])
                continue
            fields: dict[str, Any] = {"ns": entered[0]["namespace"], "user": entered[0]["userID"]}
            guards = []
            for record in entered:
                key, entry = _key(record["_id"]), _entry(record)
                fields[f"e.{key}"] = entry
                guards.append({"$or": [{f"e.{key}": {"$exists": False}}, {f"e.{key}": {"$lt": entry}}]})
            try:
                res = self.timeline.update_one({"_id": shard, "$and": guards}, {"$set": fields}, upsert=True)
                if res.upserted_id is not None or res.matched_count:
                    continue
            except DuplicateKeyError:
                pass  # the shard exists and one of these entries is not older
            for record in entered:
                self._enter(record)

    def _flag(self, owner: tuple[str, str, str], *flags: str) -> None:
        """Mark a task's timeline entry deleted ("d") and/or forgotten ("f")."""
        if self._timelined():
            key = _key(owner[2])
            self.timeline.update_one({"_id": _shard_id(owner)}, {"$set": {f"{flag}.{key}": True for flag in flags}})

    def _enter_all(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Unguarded bulk entry, one update a shard (seeding, and records older than the timeline)."""
        shards: dict[str, dict[str, Any]] = {}
        for r in records:
            owner = _owner_of(r)
            fields = shards.setdefault(_shard_id(owner), {"ns": r["namespace"], "user": r["userID"]})
            key = _key(r["_id"])
            fields[f"e.{key}"] = _entry(r)
            if r.get("deleted"):
                fields[f"d.{key}"] = True
            if r.get("forgotten"):
                fields[f"f.{key}"] = True
        for shard, fields in shards.items():
            self.timeline.update_one({"_id": shard}, {"$set": fields}, upsert=True)

    def _owner(self, uid: str) -> tuple[str, str, str] | None:
        """(namespace, user, uid) of a stored record (they never change), None when none is stored."""
        doc = self.collection.find_one({"_id": uid}, {"namespace": 1, "userID": 1})
        if doc is None or "namespace" not in doc:
            return None
        return doc["namespace"], doc.get("userID") or "", uid

    def _timeline_page(self, *, user_id: str | None, type: str | None,  # noqa: A002 - the field's name
                       phases: list[str] | None, namespace: str | None, include_deleted: bool,
                       limit: int, offset: int) -> tuple[list[str], int]:
        """The page's uids and the total, from the timeline's entries (sorted and counted here)."""
        shards: dict[str, Any] = {}
        if user_id is not None:
            shards["user"] = user_id
        if namespace is not None:
            shards["ns"] = namespace
        rows: list[tuple[str, str]] = []
        for doc in self.timeline.find(shards, batch_size=_ALL_AT_ONCE):
            gone, forgotten = doc.get("d") or {}, doc.get("f") or {}
            for key, entry in (doc.get("e") or {}).items():
                if key in forgotten or (key in gone and not include_deleted):
                    continue
                _, created, kind, phase = entry.split("|", 3)
                if (type is None or kind == type) and (phases is None or phase in phases):
                    rows.append((created, _uid(key)))
        rows.sort(key=lambda row: row[1])
        rows.sort(key=lambda row: row[0], reverse=True)  # stable: the uid breaks the ties
        return [uid for _, uid in rows[offset:offset + limit]], len(rows)

    # --- reads --------------------------------------------------------------------------------

    def get(self, uid: str) -> dict[str, Any] | None:
        """The record of a task uid (its `deleted` field says whether the resource still exists)."""
        with self._errors(f"reading task {uid}"):
            return _shaped(self.collection.find_one({"_id": uid, "forgotten": {"$ne": True}}))

    def get_by_name(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The latest record with this name: the live one, else the most recently deleted."""
        with self._errors(f"reading task {namespace}/{name}"):
            found = self.collection.find({"namespace": namespace, "name": name, "forgotten": {"$ne": True}}) \
                .sort([("resourceVersion", DESCENDING)]).limit(1)
            return _shaped(next(iter(found), None))

    def list(self, *, user_id: str | None = None, type: str | None = None,  # noqa: A002 - the field's name
             phase: str | None = None, phases: Sequence[str] | None = None, namespace: str | None = None,
             limit: int = 20, offset: int = 0, include_deleted: bool = False) -> tuple[list[dict[str, Any]], int]:
        """One page of records, newest first (createdAt, then _id), and how many match in all.

        `phases` keeps records in any of several phases (one `$in` query, served on MongoDB by
        the index user_phase_created_id); `phase` is the one-phase shorthand."""
        chosen = _phases(phase, phases)
        query = _list_query(user_id=user_id, type=type, phases=chosen, namespace=namespace,
                            include_deleted=include_deleted)
        _check_page(limit, offset)
        with self._errors("listing tasks"):
            if not self._timelined():
                page = [_shaped_doc(d) for d in self.collection.find(query).sort(LIST_ORDER).skip(offset).limit(limit)]
                return page, self.collection.count_documents(query)
            ids, total = self._timeline_page(user_id=user_id, type=type, phases=chosen, namespace=namespace,
                                             include_deleted=include_deleted, limit=limit, offset=offset)
            # FerretDB pushes no $in down: one read by _id a record, a few at a time
            with ThreadPoolExecutor(min(_PAGE_READERS, max(1, len(ids)))) as pool:
                found = list(pool.map(lambda uid: self.collection.find_one({"_id": uid}), ids))
            # a record is missing only for an instant (its entry is written first)
            return [_shaped_doc(d) for d in found if d is not None and not d.get("forgotten")], total

    def uids(self, namespace: str | None = None) -> dict[str, int]:
        """Map uid -> resourceVersion of every live record, for a resync to find what it missed.

        Where the mirror keeps a timeline (FerretDB) it is read from there, from a few documents
        instead of every record: an entry is written after its record, so a version read here is
        never newer than the record's, and what a crash left behind shows as older."""
        query: dict[str, Any] = {"deleted": False}
        if namespace is not None:
            query["namespace"] = namespace
        with self._errors("listing task uids"):
            if not self._timelined():
                return {d["_id"]: d["resourceVersion"] for d in self.collection.find(query, {"resourceVersion": 1})}
            found: dict[str, int] = {}
            shards = {"ns": namespace} if namespace is not None else {}
            for doc in self.timeline.find(shards, batch_size=_ALL_AT_ONCE):
                gone = (doc.get("d") or {}).keys() | (doc.get("f") or {}).keys()
                for key, entry in (doc.get("e") or {}).items():
                    if key not in gone:
                        found[_uid(key)] = int(entry.split("|", 1)[0][1:])
            return found

    def usage_records(self, *, namespace: str, user_id: str | None, since: datetime | None,
                      until: datetime | None) -> builtins.list[dict[str, Any]]:
        """The cost and usage of the tasks that finished in [since, until): one user's (or all users'),
        deleted and forgotten ones included (what they cost was spent). Fields: userID, provider,
        model, completionTime, usage, cost.

        One query, the same on both servers: equality on namespace and userID, a range on
        completionTime, only those fields returned. MongoDB serves it with the index user_completed
        (a range scan of the user's tasks in the window). FerretDB v1 pushes the equality down and
        applies the range after decoding each of the user's records, so there it costs in
        proportion to the user's tasks, like a list (docs/pricing.md, "The usage endpoint")."""
        query: dict[str, Any] = {"namespace": namespace, "completionTime": {"$ne": None}}
        if user_id is not None:
            query["userID"] = user_id
        window: dict[str, Any] = {}
        if since is not None:
            window["$gte"] = _ms(since)
        if until is not None:
            window["$lt"] = _ms(until)
        if window:
            query["completionTime"] = window
        projection = dict.fromkeys(("userID", "provider", "model", "completionTime", "usage", "cost"), 1)
        with self._errors("reading usage"):
            return [d for d in self.collection.find(query, projection, batch_size=_ALL_AT_ONCE)
                    if d.get("completionTime") is not None]

    def admitted_since(self, *, namespace: str, user_id: str | None, since: datetime) -> builtins.list[str]:
        """The uids of the tasks created since `since` that an executor was given (status.attempts set at
        Queued; a task refused before, by its spec or a quota, never has it): one user's or all users',
        deleted and forgotten ones included. What a GenerationQuota's tasksPerDay counts."""
        query: dict[str, Any] = {"namespace": namespace, "createdAt": {"$gte": _ms(since)},
                                 "attempts": {"$ne": None}}
        if user_id is not None:
            query["userID"] = user_id
        with self._errors("counting admitted tasks"):
            return [str(d["_id"]) for d in self.collection.find(query, {"_id": 1, "attempts": 1},
                                                                batch_size=_ALL_AT_ONCE)
                    if d.get("attempts") is not None]

    def count_by_phase(self, *, include_deleted: bool = True) -> dict[str, int]:
        """How many records are in each phase (every phase present, zero when none)."""
        pipeline: list[dict[str, Any]] = [{"$group": {"_id": "$phase", "n": {"$sum": 1}}}]
        if not include_deleted:
            pipeline.insert(0, {"$match": {"deleted": False}})
        with self._errors("counting tasks by phase"):
            counts = {doc["_id"]: doc["n"] for doc in self.collection.aggregate(pipeline)}
        return {phase: counts.get(phase, 0) for phase in PHASES} | \
            {k: v for k, v in counts.items() if k not in PHASES}

    # --- machinery ------------------------------------------------------------------------------

    def _errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self._db.client, doing)

    def _on_ferretdb(self) -> bool:
        if self._ferretdb is None:
            self._ferretdb = is_ferretdb(self._db)
        return self._ferretdb

    def _timelined(self) -> bool:
        if self._timeline is None:
            self._timeline = self._on_ferretdb()
        return self._timeline

    def _serializing(self) -> bool:
        if self._serialize is None:
            self._serialize = self._on_ferretdb()
        return self._serialize

    @contextlib.contextmanager
    def _exclusive(self, of: Mapping[str, Any] | tuple[str, str, str]) -> Iterator[None]:
        """Hold the write lease of a record (a record, or its (namespace, user, uid)), only where the
        server's updates are not atomic. With the timeline it is the lease of the record's shard,
        whose entries share one document."""
        if not self._serializing():
            yield
            return
        owner = of if isinstance(of, tuple) else _owner_of(of)
        lease = self._lease_of(owner)
        token = uuid.uuid4().hex
        self._acquire(lease, token)
        try:
            yield
        finally:
            try:
                self._leases.delete_one({"_id": lease, "owner": token})
            except Exception:  # noqa: BLE001 - the lease expires on its own; keep the original error
                log.warning("could not release the write lease %r; it expires in %.0f s",
                            lease, self._lease_seconds, exc_info=True)

    def _lease_of(self, owner: tuple[str, str, str]) -> str:
        """The lease a write of this record takes: its timeline shard's, else its own."""
        return _shard_id(owner) if self._timelined() else owner[2]

    def _holds(self, held: builtins.set[str] | None, record: Mapping[str, Any]) -> bool:
        return held is None or self._lease_of(_owner_of(record)) in held

    def _acquire_many(self, leases: builtins.set[str], token: str) -> builtins.set[str] | None:
        """Take the leases that are free, with one insert: those taken (None: writes take no leases).
        One another writer holds is left to upsert(), which waits for it or breaks it once expired."""
        if not self._serializing() or not leases:
            return None
        expires = _now() + timedelta(seconds=self._lease_seconds)
        docs = [{"_id": lease, "owner": token, "expiresAt": expires} for lease in sorted(leases)]
        try:
            self._leases.insert_many(docs, ordered=False)
            return builtins.set(leases)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                self._release_many(builtins.set(leases), token)
                raise
            # which ones are ours, as stored: a server that stops an unordered insert at its first
            # error (FerretDB v1 did so with updates) must not leave a lease counted as held that is not
            return {d["_id"] for d in self._leases.find({"_id": {"$in": sorted(leases)}, "owner": token}, {"_id": 1})}

    def _release_many(self, held: builtins.set[str] | None, token: str) -> None:
        if not held:
            return
        try:
            self._leases.delete_many({"_id": {"$in": sorted(held)}, "owner": token})
        except Exception:  # noqa: BLE001 - the leases expire on their own; keep the original error
            log.warning("could not release %d write lease(s); they expire in %.0f s", len(held),
                        self._lease_seconds, exc_info=True)

    def _acquire(self, lease: str, token: str) -> None:
        deadline = time.monotonic() + self._lease_seconds + 10
        delay = 0.001
        while True:
            now = _now()
            try:
                self._leases.insert_one({"_id": lease, "owner": token,
                                         "expiresAt": now + timedelta(seconds=self._lease_seconds)})
                return
            except DuplicateKeyError:
                held = self._leases.find_one({"_id": lease})
            if held is not None and _ms(held["expiresAt"]) <= now:
                log.warning("breaking the expired write lease %r", lease)
                self._leases.delete_one({"_id": lease, "owner": held["owner"]})
                continue
            if time.monotonic() > deadline:
                raise StorageUnavailable(f"MongoDB kept the write lease {lease!r} busy for more than "
                                         f"{self._lease_seconds + 10:.0f} s")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)


def _owner_of(record: Mapping[str, Any]) -> tuple[str, str, str]:
    return record["namespace"], record.get("userID") or "", record["_id"]


def _shard_id(owner: tuple[str, str, str]) -> str:
    """The timeline document of a task: its (namespace, user) and a hash of its uid."""
    namespace, user, uid = owner
    return f"{namespace}\n{user}\n{zlib.crc32(uid.encode()) % TIMELINE_SHARDS}"


def _entry(record: Mapping[str, Any]) -> str:
    """A task's timeline entry; entries of one task compare (as strings) like their versions."""
    created = int(record["createdAt"].timestamp() * 1000)
    return (f"{record['phaseRank']}{record['resourceVersion']:020d}|{created:015d}|{record.get('type') or ''}|"
            f"{record['phase']}")


def _key(uid: str) -> str:
    """A uid as a field name (no dots, no leading $)."""
    return uid.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


def _uid(key: str) -> str:
    return key.replace("%24", "$").replace("%2E", ".").replace("%25", "%")


def _shaped(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record as reads return it: deletedAt present (None while live), whatever the server dropped."""
    return None if doc is None else _shaped_doc(doc)


def _shaped_doc(doc: dict[str, Any]) -> dict[str, Any]:
    doc.setdefault("deletedAt", None)
    return doc


def _phases(phase: str | None, phases: Sequence[str] | None) -> list[str] | None:
    """The phases a list keeps: `phase`, `phases`, both (their union) or None for any."""
    if phase is None and phases is None:
        return None
    if isinstance(phases, str):
        raise ValueError(f"phases must be a list of phases, got the string {phases!r}")
    chosen = ([phase] if phase is not None else []) + list(phases or [])
    for value in chosen:
        if value not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {value!r}")
    return sorted(set(chosen), key=PHASES.index)


def _list_query(*, user_id: str | None, type: str | None, phases: list[str] | None,  # noqa: A002 - the field's name
                namespace: str | None, include_deleted: bool) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for field, value in (("userID", user_id), ("namespace", namespace)):
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{field} filter must be a string, got {value!r}")
            query[field] = value
    if type is not None:
        if type not in TYPES:
            raise ValueError(f"type must be one of {', '.join(TYPES)}, got {type!r}")
        query["type"] = type
    if phases is not None:
        # one phase is an equality, several an $in: both are index bounds on (userID, phase, ...)
        query["phase"] = phases[0] if len(phases) == 1 else {"$in": phases}
    if not include_deleted:
        query["deleted"] = False
    query["forgotten"] = {"$ne": True}
    return query


def _check_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
        raise ValueError(f"limit must be an integer from 1 to {LIMIT_MAX}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an integer of 0 or more, got {offset!r}")
