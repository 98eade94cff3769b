"""What a client sees of a task: one shape for a live GenerationTask and for its MongoDB record."""

from __future__ import annotations

import posixpath
from typing import Any

from gentask.domain.task import Params

API_PREFIX = "/api/v1/ai"

# phase -> the old server's status word
OLD_STATUS = {"Pending": "pending", "Queued": "pending", "Running": "processing", "Succeeded": "completed",
              "Failed": "failed", "Cancelled": "cancelled"}
# old status word -> the phases it covers (list filters)
PHASES_OF = {"pending": ["Pending", "Queued"], "processing": ["Running"], "completed": ["Succeeded"],
             "failed": ["Failed"], "cancelled": ["Cancelled"]}
TERMINAL = ("Succeeded", "Failed", "Cancelled")

# the resource's camelCase parameter names -> the API's snake_case ones
_PARAM_NAMES = {(f.alias or name): name for name, f in Params.model_fields.items()}


def api_param(name: str) -> str:
    return _PARAM_NAMES.get(name, name)


def record_of(obj: dict) -> dict:
    """A GenerationTask as the API server returns it -> the fields of a mirror record."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return {
        "_id": meta.get("uid"), "name": meta.get("name"), "namespace": meta.get("namespace"),
        "userID": spec.get("userID", ""), "type": spec.get("type"), "provider": spec.get("provider"),
        "model": spec.get("model"), "priority": spec.get("priority", "default"), "prompt": spec.get("prompt", ""),
        "params": spec.get("params") or {}, "fallbacks": spec.get("fallbacks") or [],
        "cancel": bool(spec.get("cancel")), "phase": status.get("phase") or "Pending",
        "reason": status.get("reason"), "message": status.get("message"), "attempts": status.get("attempts") or 0,
        "servedBy": status.get("servedBy"), "result": status.get("result"),
        "createdAt": meta.get("creationTimestamp"), "startTime": status.get("startTime"),
        "completionTime": status.get("completionTime"),
    }


def artifact_name(entry: dict) -> str | None:
    name = entry.get("artifact")
    return posixpath.basename(name) if name else None


def artifact_entries(result: dict | None) -> list[tuple[str, dict]]:
    """(kind, entry) for every stored file a result references."""
    result = result or {}
    out = [("image", e) for e in result.get("images") or [] if isinstance(e, dict)]
    if isinstance(result.get("video"), dict):
        out.append(("video", result["video"]))
    if isinstance(result.get("textArtifact"), dict):
        out.append(("text", result["textArtifact"]))
    return out


def find_artifact(result: dict | None, name: str) -> dict | None:
    """The entry whose stored file is `name` (its file name, or its full artifact name)."""
    for _kind, entry in artifact_entries(result):
        if entry.get("artifact") and name in (entry["artifact"], artifact_name(entry)):
            return entry
    return None


def _link(task_id: str, entry: dict) -> str | None:
    name = artifact_name(entry)
    return f"{API_PREFIX}/task/{task_id}/artifacts/{name}" if name else None


def result_view(task_id: str, result: dict | None, full_text: str | None = None) -> dict | None:
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
                              if isinstance(e, dict)) if u]
    video = result.get("video") if isinstance(result.get("video"), dict) else None
    usage = {k: v for k, v in (result.get("usage") or {}).items() if isinstance(v, int) and not isinstance(v, bool)}
    return {
        "image_url": image_urls[0] if image_urls else None, "image_urls": image_urls,
        "video_url": (video.get("url") or _link(task_id, video)) if video else None,
        "text_result": full_text if full_text is not None else result.get("text"),
        "artifacts": artifacts, "usage": usage,
    }


def task_view(rec: dict, full_text: str | None = None) -> dict:
    """A mirror record (or record_of(obj)) -> the API's TaskView."""
    phase = rec.get("phase") or "Pending"
    if phase not in OLD_STATUS:
        phase = "Pending"
    task_id = rec.get("name") or ""
    served = rec.get("servedBy")
    return {
        "task_id": task_id, "user_id": rec.get("userID") or "", "type": rec.get("type") or "",
        "provider": rec.get("provider") or "", "model": rec.get("model") or "", "prompt": rec.get("prompt") or "",
        "priority": rec.get("priority") or "default", "status": OLD_STATUS[phase], "phase": phase,
        "reason": rec.get("reason"), "message": rec.get("message") or None,
        "error": (rec.get("message") or rec.get("reason")) if phase == "Failed" else None,
        "attempts": rec.get("attempts") or 0,
        "served_by": served if isinstance(served, dict) and served.get("provider") else None,
        "params": {api_param(k): v for k, v in (rec.get("params") or {}).items()},
        "fallbacks": [f for f in rec.get("fallbacks") or [] if isinstance(f, dict)],
        "cancel_requested": bool(rec.get("cancel")),
        "result": result_view(task_id, rec.get("result"), full_text),
        "created_at": rec.get("createdAt"), "started_at": rec.get("startTime"),
        "completed_at": rec.get("completionTime"),
    }


def owner_of(rec: dict) -> str:
    return rec.get("userID") or ""


def is_finished(rec: dict) -> bool:
    return (rec.get("phase") or "") in TERMINAL


def param_problem_field(field: str) -> str:
    """A catalog problem's field ('spec.params.maxTokens', 'spec.fallbacks[0].model') -> the API's name."""
    name = field.removeprefix("spec.")
    if name.startswith("params."):
        return api_param(name.removeprefix("params."))
    return name


def api_words(text: str) -> str:
    """Catalog messages name parameters the resource's way; say them the API's way."""
    for alias, name in _PARAM_NAMES.items():
        if alias != name:
            text = text.replace(alias, name)
    return text


__all__: list[Any] = ["OLD_STATUS", "PHASES_OF", "api_param", "find_artifact", "record_of", "task_view"]
