"""What the endpoints do, without FastAPI: create, read, delete, cancel, list, download.

Tasks are GenerationTasks in the caller's namespace (its API key's, else GENTASK_NAMESPACE); task_id
is the resource's name. Every verb looks in the caller's namespace only (one index per namespace).
Reads go to the watch-fed index, then the API server, then the MongoDB mirror (where a task
stays after its TTL removed the resource). Ownership is checked on every verb: a task that is
not the caller's is reported as not found. Requests become specs in gentask.api.translate;
failures of the cluster and of MongoDB become API errors in gentask.api.faults.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from gentask.api.auth import Caller
from gentask.api.errors import Conflict, Forbidden, NotFound, TooManyRequests, Unavailable, Unprocessable, echo
from gentask.api.faults import RETRY_AFTER, cluster_errors, cluster_unavailable, storage_errors
from gentask.api.index import TaskIndex, UnreadableTask, parse_task
from gentask.api.metrics import Metrics
from gentask.api.quotas import QuotaCheck
from gentask.api.schemas import DeletedTask, TaskPage, TaskRequest, TaskView, UsageReport
from gentask.api.translate import build_spec, canonical_hash, manifest
from gentask.api.views import OLD_STATUS, PHASES_OF, find_artifact, is_finished, owner_of, record_of, task_view
from gentask.config import Settings
from gentask.domain.pricing import usage_summary
from gentask.domain.task import DNS_LABEL, GenerationTask, TaskType
from gentask.domain.webhooks import CallbackRefused
from gentask.kube.tasks import (
    ANNOTATION_REQUEST_HASH,
    ClusterUnavailable,
    TaskClient,
    TaskExists,
    idempotent_name,
    random_name,
    user_label,
)
from gentask.storage import ArtifactStream, MirrorWriter
from gentask.webhooks.address import Unresolved, policy_of, vet

log = logging.getLogger("gentask.api")

NAME = re.compile(DNS_LABEL)
CREATE_ATTEMPTS = 3
FULL_TEXT_MAX = 1 << 20
FORGET_WAIT = 3.0


def _typed(obj: Mapping[str, Any]) -> GenerationTask:
    """An object the API server returned, typed where it enters the API."""
    try:
        return parse_task(obj)
    except UnreadableTask as exc:
        raise Unavailable(f"the cluster returned a task the API cannot read: {exc}", retry_after=RETRY_AFTER) from exc


class _ClusterDown(Exception):
    """The cluster was unreachable for a read that the history may still answer."""

    def __init__(self, cause: ClusterUnavailable) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class Found:
    """A task the caller may see: the live task when the resource exists, else its history record."""

    task: GenerationTask | None
    archived: dict[str, Any] | None = None

    @cached_property
    def record(self) -> dict[str, Any]:
        """The task in the shape of a mirror record."""
        return record_of(self.task) if self.task is not None else dict(self.archived or {})

    @property
    def uid(self) -> str:
        """The task's uid (the mirror's key)."""
        return (self.task.metadata.uid if self.task is not None else None) or str(self.record.get("_id") or "")

    @property
    def owner(self) -> str:
        """The user the task belongs to."""
        return self.task.spec.user_id if self.task is not None else owner_of(self.record)

    @property
    def finished(self) -> bool:
        """The task is in a terminal phase."""
        return self.task.status.finished if self.task is not None else is_finished(self.record)

    def text_artifact(self) -> tuple[str, int] | None:
        """(name, size) of the stored long text of the result, if it has one."""
        if self.task is not None:
            result = self.task.status.result
            entry = result.text_artifact if result is not None else None
            return (entry.artifact, entry.size_bytes or 0) if entry is not None and entry.artifact else None
        stored = (self.record.get("result") or {}).get("textArtifact")
        if isinstance(stored, Mapping) and stored.get("artifact"):
            return str(stored["artifact"]), int(stored.get("sizeBytes") or 0)
        return None


class TaskService:
    """The REST API's verbs over the cluster (TaskClient, TaskIndex) and MongoDB (MirrorWriter)."""

    def __init__(self, settings: Settings, client: TaskClient, index: TaskIndex, storage: MirrorWriter,
                 metrics: Metrics, indexes: Mapping[str, TaskIndex] | None = None) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.indexes: dict[str, TaskIndex] = {**(indexes or {}), settings.namespace: index}
        self.enabled = set(settings.providers)
        self.client, self.index, self.storage, self.metrics = client, index, storage, metrics
        self.max_unfinished = settings.api_max_unfinished_per_user
        self.webhook_policy = policy_of(settings)
        self.quotas = QuotaCheck(client, storage, settings.price_table())     # 429 before a held-back create

    # --- namespaces (tenants) --------------------------------------------------------------

    def namespace_of(self, caller: Caller) -> str:
        """Where the caller's tasks live: its key's namespace, else GENTASK_NAMESPACE."""
        return caller.namespace or self.namespace

    def index_of(self, namespace: str) -> TaskIndex:
        """The index of one of the API's namespaces."""
        return self.indexes[namespace]

    def _namespace_of_link(self, task_id: str, uid: str) -> str:
        """The namespace of the task a signed link names (by its uid): an index's, else the history's."""
        for namespace, index in self.indexes.items():
            task = index.get(task_id)
            if task is not None and task.metadata.uid == uid:
                return namespace
        try:
            record = self.storage.open_mirror().get(uid)
        except Exception:  # noqa: BLE001 - MongoDB away: the default namespace answers (404 if not there)
            record = None
        namespace = str((record or {}).get("namespace") or "")
        return namespace if namespace in self.indexes else self.namespace

    # --- ownership ----------------------------------------------------------------------

    @staticmethod
    def owner_for(caller: Caller, requested: str | None) -> str:
        """Whose task a create makes: the caller's, or (admin only) the user_id given."""
        if caller.anonymous:
            if not requested:
                raise Unprocessable("user_id is required when authentication is off", errors=[
                    {"field": "user_id", "value": None, "message": "Field required",
                     "accepted": "a user id (required when GENTASK_AUTH_DISABLED is on)"}])
            return requested
        if requested is None or requested == caller.user_id:
            return caller.user_id or ""
        if caller.admin:
            return requested
        raise Forbidden(f"user_id {echo(requested)!r} is not yours; only an admin may act for another user")

    @staticmethod
    def visible(caller: Caller, found: Found) -> bool:
        """The caller may see this task: theirs, or the caller is admin."""
        return caller.admin or found.owner == caller.user_id

    # --- create -------------------------------------------------------------------------

    async def create(self, caller: Caller, type_: TaskType, req: TaskRequest,
                     idempotency_key: str | None) -> tuple[TaskView, bool]:
        """(task view, replayed): replayed is True when an Idempotency-Key found its earlier task."""
        owner = self.owner_for(caller, req.user_id)
        namespace = self.namespace_of(caller)
        index = self.index_of(namespace)
        await self._check_callback(req.callback_url)
        spec = build_spec(type_, owner, req, self.enabled)
        request_hash = canonical_hash(type_, owner, req)
        user_key = user_label(owner)
        if idempotency_key:
            replay = self._replay(index, idempotency_key, type_, owner, request_hash)
            if replay is not None:
                return replay, True
        if self.max_unfinished and index.unfinished(user_key) >= self.max_unfinished:
            self.metrics.rejected["unfinished"] += 1
            raise TooManyRequests(f"user {owner!r} has {self.max_unfinished} unfinished tasks, the most allowed "
                                  "(GENTASK_API_MAX_UNFINISHED_PER_USER); wait for some to finish or cancel them",
                                  retry_after=RETRY_AFTER)
        try:
            await self.quotas.check(namespace, owner, spec, index)
        except TooManyRequests:
            self.metrics.rejected["quota"] += 1
            raise
        index.reserve(user_key)
        try:
            with cluster_errors():
                obj, replayed = await self._create(namespace, type_, owner, spec, request_hash, idempotency_key)
            task = _typed(obj)
            index.put(task)
        finally:
            index.release(user_key)
        if not replayed:
            self.metrics.created[type_.value] += 1
            if self.settings.api_mirror_creates and not self.storage.put(obj):
                self.metrics.mirror_dropped += 1
        return index.view(task), replayed

    async def _check_callback(self, url: str | None) -> None:
        """422 naming callback_url when gentask may not call it (the operator checks it again before
        every send); a name that cannot be resolved now is accepted and checked then."""
        if url is None:
            return
        try:
            await vet(url, self.webhook_policy, "callback_url")
        except CallbackRefused as exc:
            raise Unprocessable(f"invalid callback_url: {exc}", errors=[
                {"field": "callback_url", "value": echo(url), "message": str(exc),
                 "accepted": "an http(s) URL of a public receiver (https when ENVIRONMENT=production), or "
                             + self.webhook_policy.describe()}]) from None
        except Unresolved:
            log.info("callback_url not resolvable now; the operator checks it before sending")

    def _replay(self, index: TaskIndex, key: str, type_: TaskType, owner: str, request_hash: str) -> TaskView | None:
        """The task an Idempotency-Key made before, if the index knows it (409 if the body differs)."""
        task = index.get(idempotent_name(type_.value, owner, key))
        if task is None:
            return None
        self._same_request(task.metadata.annotations.get(ANNOTATION_REQUEST_HASH), request_hash)
        return index.view(task)

    @staticmethod
    def _same_request(known: str | None, request_hash: str) -> None:
        if known != request_hash:
            raise Conflict("this Idempotency-Key was used before with a different request body; "
                           "use a new key for a new task")

    async def _create(self, namespace: str, type_: TaskType, owner: str, spec: dict[str, Any], request_hash: str,
                      key: str | None) -> tuple[dict[str, Any], bool]:
        """Create the resource under a fresh name, or find the one this Idempotency-Key made."""
        name = idempotent_name(type_.value, owner, key) if key else random_name(type_.value)
        for _attempt in range(CREATE_ATTEMPTS):
            try:
                body = manifest(name, namespace, type_, owner, spec, request_hash)
                return await self.client.create(namespace, body), False
            except TaskExists:
                pass
            if not key:
                name = random_name(type_.value)           # a random name collided: draw another
                continue
            existing = await self.client.get(namespace, name)
            if existing is None:
                continue                                  # deleted in between: create it again
            known = ((existing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_REQUEST_HASH)
            self._same_request(known, request_hash)
            return existing, True
        raise Unavailable("could not create the task: its name kept colliding; try again", retry_after=1)

    # --- read ---------------------------------------------------------------------------

    async def find(self, caller: Caller, task_id: str, namespace: str | None = None) -> Found:
        """The task if the caller may see it; NotFound otherwise (also for other users' tasks, and for
        tasks of other namespaces than the caller's). `namespace`: look there instead (signed links)."""
        if len(task_id) > 63 or not NAME.match(task_id):
            raise NotFound(f"task {echo(task_id)!r} not found")
        namespace = namespace or self.namespace_of(caller)
        task = self.index_of(namespace).get(task_id)
        cluster_down: ClusterUnavailable | None = None
        if task is None:
            try:
                with cluster_errors():
                    obj = await self._get_or_down(namespace, task_id)
            except _ClusterDown as down:            # not an error yet: the history may still know it
                obj, cluster_down = None, down.cause
            task = _typed(obj) if obj is not None else None
        if task is not None:
            found = Found(task)
        else:
            record = await self._archived(namespace, task_id, cluster_down)
            if record is None:
                if cluster_down is not None:
                    raise cluster_unavailable(cluster_down)
                raise NotFound(f"task {task_id!r} not found")
            found = Found(None, record)
        if not self.visible(caller, found):
            raise NotFound(f"task {task_id!r} not found")
        return found

    async def _get_or_down(self, namespace: str, task_id: str) -> dict[str, Any] | None:
        """The API server's object; _ClusterDown (not an API error) when the cluster is unreachable."""
        try:
            return await self.client.get(namespace, task_id)
        except ClusterUnavailable as exc:
            raise _ClusterDown(exc) from exc

    async def _archived(self, namespace: str, task_id: str, cluster_down: ClusterUnavailable | None
                        ) -> dict[str, Any] | None:
        """The mirror's record of a task the API server no longer has."""
        try:
            with storage_errors():
                record = await asyncio.to_thread(lambda: self.storage.open_mirror().get_by_name(namespace, task_id))
        except Unavailable:
            if cluster_down is not None:
                raise cluster_unavailable(cluster_down) from None
            raise
        if record is None or record.get("forgotten"):
            return None
        return record

    async def result(self, caller: Caller, task_id: str) -> TaskView:
        """The task's view, with a long text read whole from the artifact store."""
        found = await self.find(caller, task_id)
        full_text = await self._full_text(found)
        if found.task is not None and full_text is None:
            return self.index_of(self.namespace_of(caller)).view(found.task)   # built once per version
        return task_view(found.record, full_text)

    async def _full_text(self, found: Found) -> str | None:
        """A long text lives in the artifact store; old clients expect it whole in text_result."""
        stored = found.text_artifact()
        if stored is None or stored[1] > FULL_TEXT_MAX:
            return None
        name = stored[0]

        def read() -> str | None:
            stream = self.storage.open_artifacts().open(name)
            return None if stream is None else b"".join(stream).decode("utf-8", errors="replace")
        try:
            return await asyncio.to_thread(read)
        except Exception:  # noqa: BLE001 - the preview in status.result.text is still an answer
            return None

    # --- delete, cancel -----------------------------------------------------------------

    async def delete(self, caller: Caller, task_id: str) -> DeletedTask:
        """Delete the resource (stopping its Job), then the task's history record and its artifacts."""
        found = await self.find(caller, task_id)
        uid = found.uid
        namespace = self.namespace_of(caller)
        if found.task is not None:
            with cluster_errors():
                await self.client.delete(namespace, task_id, uid)
            self.index_of(namespace).remove(task_id, uid)
        try:
            with storage_errors():
                await asyncio.wait_for(self.storage.forget(uid), FORGET_WAIT)
        except (Unavailable, TimeoutError) as exc:
            if found.task is None:      # only the history had it: without MongoDB nothing was deleted
                if isinstance(exc, Unavailable):
                    raise
                raise Unavailable(f"MongoDB is unavailable: {self.storage.last_error or 'no answer'}",
                                  retry_after=RETRY_AFTER) from None
            log.warning("deleted task stays in the history for now", extra={"task": task_id, "error": str(exc)})
        return DeletedTask(task_id=task_id, deleted=True)

    async def cancel(self, caller: Caller, task_id: str) -> TaskView:
        """Set spec.cancel of a task that has not finished (409 for a finished one)."""
        found = await self.find(caller, task_id)
        if found.task is None or found.finished:
            word = OLD_STATUS.get(found.record.get("phase") or "", "finished")
            raise Conflict(f"task {task_id!r} has already finished ({word}); there is nothing to cancel")
        namespace = self.namespace_of(caller)
        with cluster_errors():
            obj = await self.client.cancel(namespace, task_id)
        if obj is None:
            raise NotFound(f"task {task_id!r} not found")
        task = _typed(obj)
        index = self.index_of(namespace)
        index.put(task)
        return index.view(task)

    # --- artifacts ----------------------------------------------------------------------

    async def artifact(self, caller: Caller, task_id: str, name: str,
                       uid: str | None = None) -> tuple[ArtifactStream, Mapping[str, Any]]:
        """(an open ArtifactStream, the result's entry for it).

        `uid` (a signed link's, already verified): the file of that task only; a task that has
        reused the name since is not the one the link was made for."""
        namespace = await asyncio.to_thread(self._namespace_of_link, task_id, uid) if uid is not None else None
        found = await self.find(caller, task_id, namespace)
        if uid is not None and found.uid != uid:
            raise NotFound(f"task {task_id!r} not found: the task this link was made for no longer exists")
        entry = find_artifact(found.record.get("result"), name)
        if entry is None:
            raise NotFound(f"task {task_id!r} has no artifact {echo(name)!r}")
        stored = str(entry["artifact"])
        with storage_errors():
            stream = await asyncio.to_thread(lambda: self.storage.open_artifacts().open(stored))
        if stream is None:
            raise NotFound(f"artifact {echo(name)!r} of task {task_id!r} is no longer stored")
        return stream, entry

    # --- list ---------------------------------------------------------------------------

    async def list(self, caller: Caller, *, user_id: str | None, type_: str | None, status: str | None,
                   limit: int, offset: int) -> TaskPage:
        """A page of the caller's history (or any user's, for an admin), newest first: one mirror query."""
        if user_id is not None and not caller.admin and user_id != caller.user_id:
            raise Forbidden(f"user_id {echo(user_id)!r} is not yours; only an admin may list another user's tasks")
        owner = user_id if caller.admin else caller.user_id
        phases = PHASES_OF[status] if status else None
        namespace = self.namespace_of(caller)

        def page() -> tuple[list[dict[str, Any]], int]:
            return self.storage.open_mirror().list(user_id=owner, type=type_, phases=phases, namespace=namespace,
                                                 include_deleted=True, limit=limit, offset=offset)
        with storage_errors():
            records, total = await asyncio.to_thread(page)
        return TaskPage(tasks=[task_view(r) for r in records], total=total, limit=limit, offset=offset)


    # --- usage ----------------------------------------------------------------------------

    async def usage(self, caller: Caller, *, user_id: str | None, since: datetime | None, until: datetime | None,
                    group_by: str) -> UsageReport:
        """Totals of the caller's finished tasks (an admin: any user's, or every user's) in [since, until)."""
        if user_id is not None and not caller.admin and user_id != caller.user_id:
            raise Forbidden(f"user_id {echo(user_id)!r} is not yours; only an admin may read another user's usage")
        since, until = _utc(since, "from"), _utc(until, "to")
        if since is not None and until is not None and since >= until:
            raise Unprocessable(f"from must be before to: from {since.isoformat()} is not before to "
                                f"{until.isoformat()}", errors=[
                {"field": "from", "value": since.isoformat(), "accepted": f"a time before to ({until.isoformat()})",
                 "message": "from must be before to"}])
        owner = user_id if caller.admin else caller.user_id

        def read() -> list[dict[str, Any]]:
            return self.storage.open_mirror().usage_records(namespace=self.namespace, user_id=owner, since=since,
                                                             until=until)
        with storage_errors():
            records = await asyncio.to_thread(read)
        summary = usage_summary(records, group_by)
        return UsageReport.model_validate({"user_id": owner, "from": since, "to": until, "group_by": group_by,
                                           **summary})


def _utc(value: datetime | None, name: str) -> datetime | None:
    """A time without an offset is UTC; one that is not a time in UTC (year 0 or 10000 there) is a 422."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise Unprocessable(f"{name} is out of range", errors=[
            {"field": name, "value": value.isoformat(), "accepted": "an RFC 3339 time from year 1 to 9999 in UTC",
             "message": "out of range"}]) from None
