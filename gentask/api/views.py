"""What a client sees of a task: one TaskView for a live GenerationTask and for its MongoDB record.

A live task is typed (parsed once where it enters the API: gentask.api.index.parse_task); its
`record_of` is the shape of a mirror record, so `task_view` builds the one view from either.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from gentask.api.schemas import TaskView
from gentask.domain.names import to_snake
from gentask.domain.reasons import Phase
from gentask.domain.task import GenerationTask

API_PREFIX = "/api/v1/ai"

# phase -> the old server's status word
OLD_STATUS = {Phase.PENDING.value: "pending", Phase.QUEUED.value: "pending", Phase.RUNNING.value: "processing",
              Phase.SUCCEEDED.value: "completed", Phase.FAILED.value: "failed", Phase.CANCELLED.value: "cancelled"}
# old status word -> the phases it covers (list filters)
PHASES_OF = {"pending": [Phase.PENDING.value, Phase.QUEUED.value], "processing": [Phase.RUNNING.value],
             "completed": [Phase.SUCCEEDED.value], "failed": [Phase.FAILED.value],
             "cancelled": [Phase.CANCELLED.value]}


def record_of(task: GenerationTask) -> dict[str, Any]:
    """A typed GenerationTask -> the fields of a mirror record (what task_view reads)."""
    meta, spec, status = task.metadata, task.spec, task.status
    return {
        "_id": meta.uid, "name": meta.name, "namespace": meta.namespace,
        "userID": spec.user_id, "type": spec.type.value, "provider": spec.provider, "model": spec.model,
        "priority": spec.priority.value, "prompt": spec.prompt,
        "params": spec.params.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "fallbacks": [f.model_dump() for f in spec.fallbacks], "cancel": spec.cancel,
        "phase": (status.phase or Phase.PENDING).value, "reason": status.reason, "message": status.message,
        "attempts": status.attempts or 0,
        "servedBy": status.served_by.model_dump() if status.served_by is not None else None,
        "result": status.result.model_dump(by_alias=True, exclude_none=True, mode="json")
        if status.result is not None else None,
        "usage": status.usage.model_dump(by_alias=True, exclude_none=True) if status.usage is not None else None,
        "cost": status.cost.model_dump(by_alias=True, exclude_none=True) if status.cost is not None else None,
        "createdAt": meta.creation_timestamp, "startTime": status.start_time,
        "completionTime": status.completion_time,
    }


def artifact_name(entry: Mapping[str, Any]) -> str | None:
    """The file name of a result entry's stored artifact ('image-0.png'), if it has one."""
    name = entry.get("artifact")
    return posixpath.basename(name) if name else None


def artifact_entries(result: Mapping[str, Any] | None) -> list[tuple[str, Mapping[str, Any]]]:
    """(kind, entry) for every stored file a result references."""
    result = result or {}
    out: list[tuple[str, Mapping[str, Any]]] = [("image", e) for e in result.get("images") or []
                                                if isinstance(e, Mapping)]
    if isinstance(result.get("video"), Mapping):
        out.append(("video", result["video"]))
    if isinstance(result.get("textArtifact"), Mapping):
        out.append(("text", result["textArtifact"]))
    return out


def find_artifact(result: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    """The entry whose stored file is `name` (its file name, or its full artifact name)."""
    for _kind, entry in artifact_entries(result):
        if entry.get("artifact") and name in (entry["artifact"], artifact_name(entry)):
            return entry
    return None


def _link(task_id: str, entry: Mapping[str, Any]) -> str | None:
    name = artifact_name(entry)
    return f"{API_PREFIX}/task/{task_id}/artifacts/{name}" if name else None


def result_view(task_id: str, result: Mapping[str, Any] | None, full_text: str | None = None) -> dict[str, Any] | None:
    """A status.result (camelCase, as stored) -> the view's result: old-style URLs and artifact links."""
    if not result:
        return None
    artifacts = []
    for kind, entry in artifact_entries(result):
        link = _link(task_id, entry)
        if link:
            artifacts.append({"name": artifact_name(entry), "url": link, "kind": kind,
                              "mime_type": entry.get("mimeType"), "size_bytes": entry.get("sizeBytes"),
                              "sha256": entry.get("sha256"), "source_url": entry.get("url")})
    image_urls = [u for u in ((e.get("url") or _link(task_id, e)) for e in result.get("images") or []
                              if isinstance(e, Mapping)) if u]
    video = result.get("video") if isinstance(result.get("video"), Mapping) else None
    usage = {k: v for k, v in (result.get("usage") or {}).items() if isinstance(v, int) and not isinstance(v, bool)}
    return {
        "image_url": image_urls[0] if image_urls else None, "image_urls": image_urls,
        "video_url": (video.get("url") or _link(task_id, video)) if video else None,
        "text_result": full_text if full_text is not None else result.get("text"),
        "artifacts": artifacts, "usage": usage,
    }


def usage_view(usage: Any) -> dict[str, int] | None:
    """A status usage (camelCase units) -> the view's (snake_case units)."""
    if not isinstance(usage, Mapping):
        return None
    return {to_snake(k): v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}


def cost_view(cost: Any) -> dict[str, Any] | None:
    """A status cost (camelCase) -> the view's (snake_case)."""
    if not isinstance(cost, Mapping):
        return None
    attempts = [{**{to_snake(k): v for k, v in a.items() if k != "usage"}, "usage": usage_view(a.get("usage")) or {}}
                for a in cost.get("attempts") or [] if isinstance(a, Mapping)]
    return {"amount": cost.get("amount"), "currency": cost.get("currency"),
            "totals": [t for t in cost.get("totals") or [] if isinstance(t, Mapping)], "attempts": attempts}


def last_change(*times: Any) -> Any:
    """The old server's `updated`: the latest of a task's times (None when it has none).

    The start and completion times come from the worker's node and the creation time from the API
    server's; across nodes whose clocks differ by a second, a quick task's completion can read
    earlier than its creation, and a change never precedes what it changed."""
    return max((t for t in times if t is not None), default=None)


def task_view(rec: Mapping[str, Any], full_text: str | None = None) -> TaskView:
    """A mirror record (or record_of(task)) -> the API's TaskView."""
    phase = rec.get("phase") or Phase.PENDING.value
    if phase not in OLD_STATUS:
        phase = Phase.PENDING.value
    task_id = rec.get("name") or ""
    served = rec.get("servedBy")
    result = result_view(task_id, rec.get("result"), full_text)
    created, started, completed = rec.get("createdAt"), rec.get("startTime"), rec.get("completionTime")
    view = TaskView.model_validate({
        "task_id": task_id, "id": task_id, "user_id": rec.get("userID") or "", "type": rec.get("type") or "",
        "provider": rec.get("provider") or "", "model": rec.get("model") or "", "prompt": rec.get("prompt") or "",
        "priority": rec.get("priority") or "default", "status": OLD_STATUS[phase], "phase": phase,
        "reason": rec.get("reason"), "message": rec.get("message") or None,
        "error": (rec.get("message") or rec.get("reason")) if phase == Phase.FAILED.value else None,
        "attempts": rec.get("attempts") or 0,
        "served_by": served if isinstance(served, Mapping) and served.get("provider") else None,
        "params": {to_snake(k): v for k, v in (rec.get("params") or {}).items()},
        "fallbacks": [f for f in rec.get("fallbacks") or [] if isinstance(f, Mapping)],
        "cancel_requested": bool(rec.get("cancel")),
        "result": result,
        "usage": usage_view(rec.get("usage")), "cost": cost_view(rec.get("cost")),
        "created_at": created, "started_at": started, "completed_at": completed,
        # the old server's fields: created, updated (its last change) and the result's at the top
        "created": created, "updated": last_change(created, started, completed),
        "image_url": result["image_url"] if result else None, "video_url": result["video_url"] if result else None,
        "text_result": result["text_result"] if result else None,
    })
    view._uid = str(rec.get("_id") or "")
    return view


def owner_of(rec: Mapping[str, Any]) -> str:
    """The user a record belongs to."""
    return str(rec.get("userID") or "")


def is_finished(rec: Mapping[str, Any]) -> bool:
    """The record's phase is terminal (Succeeded, Failed, Cancelled)."""
    phase = rec.get("phase") or Phase.PENDING.value
    return phase in OLD_STATUS and Phase(phase).terminal
