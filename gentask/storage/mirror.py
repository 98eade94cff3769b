"""The MongoDB mirror of GenerationTasks: one record per task uid, never moved backwards.

A record is replaced only by a newer view of its task: a higher (phaseRank, resourceVersion).
On MongoDB the guarded upsert is one atomic document operation. FerretDB v1 evaluates the filter
and writes the document in two steps, so two writers can both pass the guard; there every write
to a record first takes a short lease (an insert into `<collection>.leases`, which a unique _id
makes atomic) and gives it back after.

Names are unique among live records only: Kubernetes lets a name be reused once its resource is
gone, and the mirror keeps the old record (flagged deleted) beside the new one.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from gentask.domain.reasons import Phase
from gentask.domain.task import TaskType
from gentask.storage.mongo import StorageUnavailable, is_ferretdb, translate_errors

log = logging.getLogger(__name__)

LIMIT_MAX = 100
PHASES = tuple(p.value for p in Phase)
TYPES = tuple(t.value for t in TaskType)
LIST_ORDER = [("createdAt", DESCENDING), ("_id", ASCENDING)]
INDEXES = (
    IndexModel([("userID", ASCENDING), ("createdAt", DESCENDING)], name="user_created"),
    IndexModel([("userID", ASCENDING), ("type", ASCENDING), ("createdAt", DESCENDING)], name="user_type_created"),
    # the list's whole sort order after (userID, phase): one phase or several ($in, merged by
    # MongoDB from one index scan a phase) are served without an in-memory sort
    IndexModel([("userID", ASCENDING), ("phase", ASCENDING), ("createdAt", DESCENDING), ("_id", ASCENDING)],
               name="user_phase_created_id"),
    IndexModel([("type", ASCENDING), ("createdAt", ASCENDING)], name="type_created"),
    IndexModel([("phase", ASCENDING)], name="phase"),
    # tombstone is "" while the resource exists and the uid once it is gone: one live record a name
    IndexModel([("namespace", ASCENDING), ("name", ASCENDING), ("tombstone", ASCENDING)],
               name="namespace_name_unique", unique=True),
    IndexModel([("createdAt", DESCENDING), ("_id", ASCENDING)], name="created_id"),
)
# Fields a write never sets with $set: they belong to mark_deleted (or to the first insert).
_DELETION_FIELDS = ("deleted", "deletedAt", "tombstone")


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
        "conditions": list(status.get("conditions") or []),
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
                 lease_seconds: float = 60.0) -> None:
        """serialize_writes: take a per-record lease around writes; None = only on FerretDB."""
        self.collection = db[collection]
        self._leases = db[f"{collection}.leases"]
        self._db = db
        self._serialize = serialize_writes
        self._lease_seconds = lease_seconds

    # --- writes -------------------------------------------------------------------------------

    def ensure_indexes(self) -> list[str]:
        """Create the indexes the list queries use (idempotent); returns their names."""
        # one index a command: FerretDB v1.24 drops the connection when one createIndexes
        # command names two indexes that already exist
        with self._errors("creating the tasks indexes"):
            return [name for index in INDEXES for name in self.collection.create_indexes([index])]

    def upsert(self, obj: Mapping[str, Any]) -> bool:
        """Mirror a GenerationTask; True when written, False when the stored record is as new or newer."""
        record = record_from_task(obj)
        with self._errors(f"mirroring task {record['namespace']}/{record['name']}"):
            for _ in range(3):
                with self._exclusive(record["_id"]):
                    outcome = self._write(record)
                if outcome is None:
                    outcome = self._settle_name(record)
                if outcome is not None:
                    return outcome
            raise RuntimeError(f"task {record['namespace']}/{record['name']} ({record['_id']}) kept colliding "
                               "with another live record of the same name")

    def mark_deleted(self, uid: str, when: datetime | None = None) -> bool:
        """Flag the record of a task whose resource is gone; True when it was live until now."""
        if when is not None and not isinstance(when, datetime):
            raise ValueError(f"when must be a datetime (the deletion time) or None for now, got {when!r}")
        when = _ms(when) if when else _now()
        with self._errors(f"marking task {uid} deleted"), self._exclusive(uid):
            res = self.collection.update_one({"_id": uid, "deleted": False},
                                             {"$set": {"deleted": True, "deletedAt": when, "tombstone": uid}})
            return res.matched_count > 0

    def forget(self, uid: str, when: datetime | None = None) -> bool:
        """A task its user deleted: the record stays (deleted, forgotten) but leaves the history:
        get, get_by_name and list no longer return it. True when it was visible until now."""
        when = _ms(when) if when else _now()
        with self._errors(f"forgetting task {uid}"), self._exclusive(uid):
            visible = self.collection.find_one({"_id": uid, "forgotten": {"$ne": True}}, {"_id": 1}) is not None
            # upsert: a forget that overtakes the record's first write still hides it for good
            self.collection.update_one({"_id": uid}, {"$set": {"forgotten": True, "deleted": True, "tombstone": uid}},
                                       upsert=True)
            self.collection.update_one({"_id": uid, "deletedAt": {"$exists": False}}, {"$set": {"deletedAt": when}})
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
        if self.collection.find_one({"_id": record["_id"]}, {"_id": 1}) is not None:
            return False
        return None

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
        with self._exclusive(record["_id"]):
            return self._write(record, tombstone_at=_ms(other["createdAt"]))

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
        query = _list_query(user_id=user_id, type=type, phases=_phases(phase, phases), namespace=namespace,
                            include_deleted=include_deleted)
        _check_page(limit, offset)
        with self._errors("listing tasks"):
            page = [_shaped_doc(doc) for doc in self.collection.find(query).sort(LIST_ORDER).skip(offset).limit(limit)]
            return page, self.collection.count_documents(query)

    def uids(self, namespace: str | None = None) -> dict[str, int]:
        """Map uid -> resourceVersion of every live record, for a resync to find what it missed."""
        query: dict[str, Any] = {"deleted": False}
        if namespace is not None:
            query["namespace"] = namespace
        with self._errors("listing task uids"):
            return {d["_id"]: d["resourceVersion"] for d in self.collection.find(query, {"resourceVersion": 1})}

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

    def _serializing(self) -> bool:
        if self._serialize is None:
            self._serialize = is_ferretdb(self._db)
        return self._serialize

    @contextlib.contextmanager
    def _exclusive(self, uid: str) -> Iterator[None]:
        """Hold the write lease of one record (only where the server's updates are not atomic)."""
        if not self._serializing():
            yield
            return
        token = uuid.uuid4().hex
        self._acquire(uid, token)
        try:
            yield
        finally:
            try:
                self._leases.delete_one({"_id": uid, "owner": token})
            except Exception:  # noqa: BLE001 - the lease expires on its own; keep the original error
                log.warning("could not release the write lease of task %s; it expires in %.0f s",
                            uid, self._lease_seconds, exc_info=True)

    def _acquire(self, uid: str, token: str) -> None:
        deadline = time.monotonic() + self._lease_seconds + 10
        delay = 0.001
        while True:
            now = _now()
            try:
                self._leases.insert_one({"_id": uid, "owner": token,
                                         "expiresAt": now + timedelta(seconds=self._lease_seconds)})
                return
            except DuplicateKeyError:
                held = self._leases.find_one({"_id": uid})
            if held is not None and _ms(held["expiresAt"]) <= now:
                log.warning("breaking the expired write lease of task %s", uid)
                self._leases.delete_one({"_id": uid, "owner": held["owner"]})
                continue
            if time.monotonic() > deadline:
                raise StorageUnavailable(f"MongoDB kept the write lease of task {uid} busy for more than "
                                         f"{self._lease_seconds + 10:.0f} s")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)


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
