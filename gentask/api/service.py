"""What the endpoints do, without FastAPI: create, read, delete, cancel, list, download.

Tasks are GenerationTasks in one namespace (GENTASK_NAMESPACE); task_id is the resource's name.
Reads go to the watch-fed index, then the API server, then the MongoDB mirror (where a task
stays after its TTL removed the resource). Ownership is checked on every verb: a task that is
not the caller's is reported as not found.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from gentask.api.auth import Caller
from gentask.api.errors import (BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unavailable, Unprocessable,
                                echo, validation_errors)
from gentask.api.index import TaskIndex
from gentask.api.metrics import Metrics
from gentask.api.schemas import TaskRequest
from gentask.api.store import Store
from gentask.api.views import (OLD_STATUS, PHASES_OF, api_words, find_artifact, is_finished, owner_of,
                               param_problem_field, record_of, task_view)
from gentask.config import Settings
from gentask.domain import catalog
from gentask.domain.task import API_VERSION, DNS_LABEL, KIND, GenerationTaskSpec, Params, TaskType
from gentask.kube.tasks import (ANNOTATION_REQUEST_HASH, LABEL_CREATED_BY, LABEL_PRIORITY, LABEL_TYPE, LABEL_USER,
                                ClusterUnavailable, KubeError, TaskClient, TaskExists, idempotent_name, random_name,
                                user_label)

log = logging.getLogger("gentask.api")

NAME = re.compile(DNS_LABEL)
CREATE_ATTEMPTS = 3
RETRY_AFTER = 5
FULL_TEXT_MAX = 1 << 20
FORGET_WAIT = 3.0
MERGED_WINDOW = 1000
# API field names of the resource's spec fields, for messages
_SPEC_FIELDS = {"userID": "user_id", "timeoutSeconds": "timeout", "ttlSecondsAfterFinished": "ttl_seconds_after_finished"}
_PARAM_ALIASES = {name: (f.alias or name) for name, f in Params.model_fields.items()}


def _cluster_error(exc: ClusterUnavailable) -> Unavailable:
    return Unavailable(f"{exc}; try again shortly", retry_after=exc.retry_after or RETRY_AFTER)


def _kube_refusal(exc: KubeError) -> Exception:
    """The API server refused a request the API built: its schema (422) or the server's setup."""
    if exc.status in (400, 422):
        causes = (exc.details or {}).get("causes") or []
        errors = [{"field": _SPEC_FIELDS.get(str(c.get("field", "")).removeprefix("spec."), str(c.get("field", ""))),
                   "value": None, "accepted": str(c.get("message", "")), "message": str(c.get("message", ""))}
                  for c in causes] or None
        return Unprocessable(f"the cluster refused the task: {exc.message}", errors=errors)
    log.error("the API server refused a request", extra={"status": exc.status, "reason": exc.reason,
                                                          "detail": exc.message})
    return Unavailable(f"the cluster refused the request ({exc.status} {exc.reason}); "
                       "check the API's namespace and permissions", retry_after=RETRY_AFTER)


def canonical_hash(type_: TaskType, owner: str, request: TaskRequest) -> str:
    """The same request, whatever its spacing, key order or omitted defaults, hashes the same."""
    doc = {"type": type_.value, "user": owner, "request": request.model_dump(mode="json", exclude={"user_id"})}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Found:
    """A task the caller may see: its record shape, and the live object when the resource exists."""

    record: dict
    obj: dict | None

    @property
    def name(self) -> str:
        return self.record.get("name") or ""


class TaskService:
    def __init__(self, settings: Settings, client: TaskClient, index: TaskIndex, store: Store,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.enabled = set(settings.providers)
        self.client, self.index, self.store, self.metrics = client, index, store, metrics
        self.max_unfinished = settings.api_max_unfinished_per_user

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
    def visible(caller: Caller, record: dict) -> bool:
        return caller.admin or owner_of(record) == caller.user_id

    # --- create -------------------------------------------------------------------------

    def _spec(self, type_: TaskType, owner: str, req: TaskRequest) -> dict:
        """The GenerationTask spec; BadRequest for an unknown provider or model, Unprocessable for the rest."""
        candidates = [("", req.provider, req.model)] + [(f"fallbacks[{i}].", f.provider, f.model)
                                                         for i, f in enumerate(req.fallbacks)]
        known = catalog.providers()
        unknown = [{"field": f"{where}provider", "value": echo(provider), "message": "unknown provider",
                    "accepted": f"supported providers: {', '.join(known)}"}
                   for where, provider, _ in candidates if provider not in known]
        if unknown:
            raise BadRequest(f"unknown provider {unknown[0]['value']!r}; supported providers: {', '.join(known)}",
                             errors=unknown)
        body: dict[str, Any] = {
            "type": type_.value, "provider": req.provider, "model": req.model, "prompt": req.prompt,
            "userID": owner, "priority": req.priority.value,
            "params": {_PARAM_ALIASES[k]: v for k, v in req.params().items()},
            "fallbacks": [f.model_dump() for f in req.fallbacks],
        }
        for key, value in (("timeoutSeconds", req.timeout), ("retries", req.retries),
                           ("ttlSecondsAfterFinished", req.ttl_seconds_after_finished)):
            if value is not None:
                body[key] = value
        try:
            spec = GenerationTaskSpec.model_validate(body)
        except ValidationError as exc:
            items = validation_errors(exc.errors())
            entry = catalog.lookup(req.provider, req.model)
            for item in items:
                head, _, rest = item["field"].partition(".")
                if head != "params":
                    item["field"] = _SPEC_FIELDS.get(item["field"], item["field"])
                    continue
                item["field"] = param_problem_field("params." + rest)
                rule = entry.params.get(item["field"]) if entry is not None else None
                if rule is not None:     # the catalog says it better than a regular expression
                    item["accepted"] = api_words(f"{entry.provider}/{entry.model} accepts {rule.accepted}")
            raise Unprocessable(f"invalid {items[0]['field']}: {items[0]['message']}", errors=items) from None
        try:
            catalog.validate_spec(spec, enabled=self.enabled)
        except catalog.InvalidSpecError as exc:
            self._catalog_problems(exc)
        return spec.model_dump(by_alias=True, exclude_none=True, mode="json")

    @staticmethod
    def _catalog_problems(exc: catalog.InvalidSpecError) -> None:
        items, model_problem = [], False
        for p in exc.problems:
            field = param_problem_field(p.field)
            if field.endswith(("provider", "model")) and not p.accepted.startswith("each "):
                model_problem = True
            items.append({"field": field, "value": echo(p.value), "accepted": api_words(p.accepted),
                          "message": "retired model" if p.reason == "ModelRetired" else "not accepted"})
        first = next((i for i in items if i["field"].endswith(("provider", "model"))), items[0])
        message = f"{first['field']} {first['value']!r} is not accepted: {first['accepted']}"
        if model_problem:
            raise BadRequest(message, errors=items)
        raise Unprocessable(message, errors=items)

    def _manifest(self, name: str, type_: TaskType, owner: str, spec: dict, request_hash: str) -> dict:
        return {
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {
                "name": name, "namespace": self.namespace,
                "labels": {LABEL_TYPE: type_.value, LABEL_PRIORITY: spec.get("priority", "default"),
                           LABEL_USER: user_label(owner), LABEL_CREATED_BY: "api"},
                "annotations": {ANNOTATION_REQUEST_HASH: request_hash},
            },
            "spec": spec,
        }

    async def create(self, caller: Caller, type_: TaskType, req: TaskRequest,
                     idempotency_key: str | None) -> tuple[dict, bool]:
        """(task view, replayed): replayed is True when an Idempotency-Key found its earlier task."""
        owner = self.owner_for(caller, req.user_id)
        spec = self._spec(type_, owner, req)
        request_hash = canonical_hash(type_, owner, req)
        user_key = user_label(owner)
        if idempotency_key:
            replay = self._replay(idempotency_key, type_, owner, request_hash)
            if replay is not None:
                return replay, True
        if self.max_unfinished and self.index.unfinished(user_key) >= self.max_unfinished:
            self.metrics.rejected["unfinished"] += 1
            raise TooManyRequests(f"user {owner!r} has {self.max_unfinished} unfinished tasks, the most allowed "
                                  "(GENTASK_API_MAX_UNFINISHED_PER_USER); wait for some to finish or cancel them",
                                  retry_after=RETRY_AFTER)
        self.index.reserve(user_key)
        try:
            obj, replayed = await self._create(type_, owner, spec, request_hash, idempotency_key)
            self.index.put(obj)
        finally:
            self.index.release(user_key)
        if not replayed:
            self.metrics.created[type_.value] += 1
            if self.settings.api_mirror_creates:
                self.store.submit("upsert", obj)
        return task_view(record_of(obj)), replayed

    def _replay(self, key: str, type_: TaskType, owner: str, request_hash: str) -> dict | None:
        """The task an Idempotency-Key made before, if the index knows it (409 if the body differs)."""
        obj = self.index.get(idempotent_name(type_.value, owner, key))
        if obj is None:
            return None
        self._same_request(obj, request_hash)
        return task_view(record_of(obj))

    @staticmethod
    def _same_request(obj: dict, request_hash: str) -> None:
        known = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_REQUEST_HASH)
        if known != request_hash:
            raise Conflict("this Idempotency-Key was used before with a different request body; "
                           "use a new key for a new task")

    async def _create(self, type_: TaskType, owner: str, spec: dict, request_hash: str,
                      key: str | None) -> tuple[dict, bool]:
        try:
            return await self._create_named(type_, owner, spec, request_hash, key)
        except ClusterUnavailable as exc:
            raise _cluster_error(exc) from exc
        except KubeError as exc:
            raise _kube_refusal(exc) from exc

    async def _create_named(self, type_: TaskType, owner: str, spec: dict, request_hash: str,
                            key: str | None) -> tuple[dict, bool]:
        name = idempotent_name(type_.value, owner, key) if key else random_name(type_.value)
        for _attempt in range(CREATE_ATTEMPTS):
            try:
                return await self.client.create(self.namespace, self._manifest(name, type_, owner, spec,
                                                                               request_hash)), False
            except TaskExists:
                pass
            if not key:
                name = random_name(type_.value)           # a random name collided: draw another
                continue
            existing = await self.client.get(self.namespace, name)
            if existing is None:
                continue                                  # deleted in between: create it again
            self._same_request(existing, request_hash)
            return existing, True
        raise Unavailable("could not create the task: its name kept colliding; try again", retry_after=1)

    # --- read ---------------------------------------------------------------------------

    async def find(self, caller: Caller, task_id: str) -> Found:
        """The task if the caller may see it; NotFound otherwise (also for other users' tasks)."""
        if len(task_id) > 63 or not NAME.match(task_id):
            raise NotFound(f"task {echo(task_id)!r} not found")
        obj = self.index.get(task_id)
        cluster_down: ClusterUnavailable | None = None
        if obj is None:
            try:
                obj = await self.client.get(self.namespace, task_id)
            except ClusterUnavailable as exc:
                cluster_down = exc
            except KubeError as exc:
                raise _kube_refusal(exc) from exc
        if obj is not None:
            found = Found(record_of(obj), obj)
        else:
            record = await self._archived(task_id, cluster_down)
            if record is None:
                if cluster_down is not None:
                    raise _cluster_error(cluster_down)
                raise NotFound(f"task {task_id!r} not found")
            found = Found(record, None)
        if not self.visible(caller, found.record):
            raise NotFound(f"task {task_id!r} not found")
        return found

    async def _archived(self, task_id: str, cluster_down: ClusterUnavailable | None) -> dict | None:
        """The mirror's record of a task the API server no longer has."""
        try:
            record = await asyncio.to_thread(self._mirror_get, task_id)
        except Unavailable:
            if cluster_down is not None:
                raise _cluster_error(cluster_down) from None
            raise
        if record is None or record.get("forgotten"):
            return None
        return record

    def _mirror_get(self, task_id: str) -> dict | None:
        try:
            return self.store.mirror().get_by_name(self.namespace, task_id)
        except self.store.errors() as exc:
            raise self.store.unavailable(exc) from exc

    async def result(self, caller: Caller, task_id: str) -> dict:
        found = await self.find(caller, task_id)
        return task_view(found.record, await self._full_text(found.record))

    async def _full_text(self, record: dict) -> str | None:
        """A long text lives in the artifact store; old clients expect it whole in text_result."""
        entry = (record.get("result") or {}).get("textArtifact")
        if not isinstance(entry, dict) or not entry.get("artifact") or (entry.get("sizeBytes") or 0) > FULL_TEXT_MAX:
            return None

        def read() -> str | None:
            stream = self.store.artifacts().open(entry["artifact"])
            return None if stream is None else b"".join(stream).decode("utf-8", errors="replace")
        try:
            return await asyncio.to_thread(read)
        except Exception:  # noqa: BLE001 - the preview in status.result.text is still an answer
            return None

    # --- delete, cancel -----------------------------------------------------------------

    async def delete(self, caller: Caller, task_id: str) -> dict:
        found = await self.find(caller, task_id)
        uid = found.record.get("_id")
        if found.obj is not None:
            try:
                await self.client.delete(self.namespace, task_id, uid)
            except ClusterUnavailable as exc:
                raise _cluster_error(exc) from exc
            except KubeError as exc:
                raise _kube_refusal(exc) from exc
            self.index.remove(task_id, uid)
        forgotten = self.store.submit("forget", uid)
        try:
            await asyncio.wait_for(asyncio.wrap_future(forgotten), FORGET_WAIT)
        except Exception as exc:  # noqa: BLE001
            if found.obj is None:      # only the history had it: without MongoDB nothing was deleted
                raise exc if isinstance(exc, Unavailable) else self.store.unavailable(exc) from None
            log.warning("deleted task stays in the history for now", extra={"task": task_id, "error": str(exc)})
        return {"task_id": task_id, "deleted": True}

    async def cancel(self, caller: Caller, task_id: str) -> dict:
        found = await self.find(caller, task_id)
        if found.obj is None or is_finished(found.record):
            word = OLD_STATUS.get(found.record.get("phase") or "", "finished")
            raise Conflict(f"task {task_id!r} has already finished ({word}); there is nothing to cancel")
        try:
            obj = await self.client.cancel(self.namespace, task_id)
        except ClusterUnavailable as exc:
            raise _cluster_error(exc) from exc
        except KubeError as exc:
            raise _kube_refusal(exc) from exc
        if obj is None:
            raise NotFound(f"task {task_id!r} not found")
        self.index.put(obj)
        return task_view(record_of(obj))

    # --- artifacts ----------------------------------------------------------------------

    async def artifact(self, caller: Caller, task_id: str, name: str) -> tuple[Any, dict]:
        """(an open ArtifactStream, the result's entry for it)."""
        found = await self.find(caller, task_id)
        entry = find_artifact(found.record.get("result"), name)
        if entry is None:
            raise NotFound(f"task {task_id!r} has no artifact {echo(name)!r}")

        def open_stream() -> Any:
            try:
                return self.store.artifacts().open(entry["artifact"])
            except self.store.errors() as exc:
                raise self.store.unavailable(exc) from exc
        stream = await asyncio.to_thread(open_stream)
        if stream is None:
            raise NotFound(f"artifact {echo(name)!r} of task {task_id!r} is no longer stored")
        return stream, entry

    # --- list ---------------------------------------------------------------------------

    async def list(self, caller: Caller, *, user_id: str | None, type_: str | None, status: str | None,
                   limit: int, offset: int) -> dict:
        if user_id is not None and not caller.admin and user_id != caller.user_id:
            raise Forbidden(f"user_id {echo(user_id)!r} is not yours; only an admin may list another user's tasks")
        owner = user_id if caller.admin else caller.user_id
        phases = PHASES_OF.get(status) if status else [None]
        query = {"user_id": owner, "type": type_, "namespace": self.namespace, "include_deleted": True}

        def page() -> tuple[list[dict], int]:
            try:
                return self._page(self.store.mirror(), query, phases, limit, offset)
            except self.store.errors() as exc:
                raise self.store.unavailable(exc) from exc
        records, total = await asyncio.to_thread(page)
        return {"tasks": [task_view(r) for r in records], "total": total, "limit": limit, "offset": offset}

    @staticmethod
    def _page(mirror: Any, query: dict, phases: list, limit: int, offset: int) -> tuple[list[dict], int]:
        """One page over one phase, or merged over several (status=pending is Pending or Queued).

        The mirror filters one phase a query, so several are merged here in the mirror's order
        (newest first, then uid), reading each phase's first offset+limit records."""
        if len(phases) == 1:
            return mirror.list(**query, phase=phases[0], limit=limit, offset=offset)
        if offset + limit > MERGED_WINDOW:
            raise Unprocessable(f"offset {offset} is too deep for a status that covers several phases", errors=[
                {"field": "offset", "value": offset, "message": "too deep",
                 "accepted": f"offset + limit <= {MERGED_WINDOW} with this status"}])
        merged, total = [], 0
        for phase in phases:
            got, taken = [], 0
            while taken < offset + limit:
                chunk, count = mirror.list(**query, phase=phase, limit=min(100, offset + limit - taken), offset=taken)
                got += chunk
                taken += len(chunk)
                if not chunk or taken >= count:
                    break
            merged += got
            total += count
        merged.sort(key=lambda r: (-_epoch(r.get("createdAt")), str(r.get("_id"))))
        return merged[offset:offset + limit], total


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
