"""The old server's six endpoints, and cancel and artifact downloads.

Every view a route answers goes through `LinkSigner.apply`: its artifact links become absolute
and signed (gentask.api.signing), so they work without a header until they expire."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from gentask.api.auth import ANONYMOUS, Caller
from gentask.api.deps import CallerDep, IdempotencyKeyDep, LinksDep, TasksDep, get_caller
from gentask.api.schemas import (
    NO_NUL,
    DeletedTask,
    Envelope,
    ErrorEnvelope,
    ImageTaskRequest,
    OldStatus,
    TaskPage,
    TaskRequest,
    TaskView,
    TextTaskRequest,
    VideoTaskRequest,
)
from gentask.api.service import TaskService
from gentask.api.signing import LinkSigner
from gentask.api.views import artifact_name
from gentask.domain.task import TaskType

PREFIX = "/api/v1/ai"
router = APIRouter(prefix=PREFIX, tags=["tasks"])


RETRY_AFTER_HEADER = {"Retry-After": {"description": "seconds to wait before trying again", "required": True,
                                      "schema": {"type": "integer", "minimum": 1}}}
HEADERS = {401: {"WWW-Authenticate": {"description": 'Bearer realm="gentask"', "required": True,
                                      "schema": {"type": "string"}}},
           429: RETRY_AFTER_HEADER, 503: RETRY_AFTER_HEADER}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of the error answers an operation may give (with their headers)."""
    words = {400: "malformed JSON, or a provider or model this server does not serve: unknown, of another "
                  "task type, retired (its successor is named) or not enabled (GENTASK_PROVIDERS); errors "
                  "lists the supported ones",
             401: "missing or unknown API key", 403: "user_id is not the caller's",
             404: "no such task, or not the caller's", 409: "conflict (see message)",
             413: "request body larger than GENTASK_API_MAX_BODY_BYTES (default 131072 bytes)",
             422: "invalid field, or a parameter value the model does not take: errors lists field, value "
                  "and accepted values",
             429: "rate limit (GENTASK_API_RATE_PER_USER) or unfinished-task cap reached; see Retry-After",
             503: "the cluster or MongoDB is unreachable; see Retry-After"}
    return {code: {"model": ErrorEnvelope, "description": words[code], **({"headers": HEADERS[code]}
                                                                        if code in HEADERS else {})}
            for code in codes}


# Every /api operation: 401 (the key) and 429 (the rate limit) come from the caller dependency.
CREATE_ERRORS = error_responses(400, 401, 403, 409, 413, 422, 429, 503)
CREATE_ERRORS[429] = {**CREATE_ERRORS[429], "description": "rate limit (GENTASK_API_RATE_PER_USER), unfinished-task "
                      "cap, or a GenerationQuota of the namespace that would hold the task back (the message names "
                      "it; docs/tenants.md, Quotas); see Retry-After"}
TASK_ERRORS = error_responses(401, 404, 429, 503)


def _operation(method: str, path: str) -> str:
    """An OpenAPI link's operationRef: the operation of this router at `path` (JSON Pointer escaped)."""
    return "#/paths/" + (PREFIX + path).replace("~", "~0").replace("/", "~1") + "/" + method


# Where a created task leads (OpenAPI links): clients, and the stateful phase of the schemathesis
# test, follow these with the task_id of the answer.
_TASK_ID = {"task_id": "$response.body#/data/task_id"}
TASK_LINKS = {
    "GetTaskResult": {"operationRef": _operation("get", "/task/result/{task_id}"), "parameters": _TASK_ID,
                      "description": "the created task's status and result"},
    "CancelTask": {"operationRef": _operation("post", "/task/{task_id}/cancel"), "parameters": _TASK_ID,
                   "description": "cancel it"},
    "DeleteTask": {"operationRef": _operation("delete", "/task/{task_id}"), "parameters": _TASK_ID,
                   "description": "delete it"},
}
CREATE_RESPONSES = {200: {"description": "the task, pending", "links": TASK_LINKS, "headers": {
    "Idempotent-Replayed": {"description": "true when an Idempotency-Key found the task it made before",
                            "schema": {"type": "string", "enum": ["true"]}}}}, **CREATE_ERRORS}
# a result names the task's files: each one's download
RESULT_RESPONSES = {200: {"description": "the task", "links": {
    **TASK_LINKS, "GetArtifact": {"operationRef": _operation("get", "/task/{task_id}/artifacts/{name}"),
                                  "description": "download its first stored file",
                                  "parameters": {**_TASK_ID, "name": "$response.body#/data/result/artifacts/0/name"}},
}}, **TASK_ERRORS}


def answer(envelope: BaseModel, headers: dict[str, str] | None = None) -> Response:
    """The envelope as JSON, serialized once by pydantic.

    Returned as a Response, FastAPI sends it as it is; a returned model would be dumped to a dict,
    validated again against response_model and serialized a second time, for every answer. The
    routes keep response_model for the OpenAPI document."""
    return Response(envelope.model_dump_json(by_alias=True), media_type="application/json", headers=headers)


def linked(view: TaskView, links: LinkSigner, request: Request) -> TaskView:
    """The view with absolute signed artifact links, on GENTASK_API_PUBLIC_URL or the request's base URL."""
    return links.apply(view, str(request.base_url))


async def _create(type_: TaskType, body: TaskRequest, caller: Caller, tasks: TaskService,
                  idempotency_key: str | None, links: LinkSigner, request: Request) -> Response:
    view, replayed = await tasks.create(caller, type_, body, idempotency_key)
    message = "task already created with this Idempotency-Key" if replayed else "task created"
    return answer(Envelope[TaskView](success=True, data=linked(view, links, request), message=message),
                  {"Idempotent-Replayed": "true"} if replayed else None)


@router.post("/image/task", response_model=Envelope[TaskView], responses=CREATE_RESPONSES,
             summary="Create an image task")
async def create_image_task(body: ImageTaskRequest, caller: CallerDep, tasks: TasksDep, links: LinksDep,
                            request: Request, idempotency_key: IdempotencyKeyDep = None) -> Response:
    """Create an image task (a GenerationTask of type image)."""
    return await _create(TaskType.IMAGE, body, caller, tasks, idempotency_key, links, request)


@router.post("/video/task", response_model=Envelope[TaskView], responses=CREATE_RESPONSES,
             summary="Create a video task")
async def create_video_task(body: VideoTaskRequest, caller: CallerDep, tasks: TasksDep, links: LinksDep,
                            request: Request, idempotency_key: IdempotencyKeyDep = None) -> Response:
    """Create a video task (a GenerationTask of type video)."""
    return await _create(TaskType.VIDEO, body, caller, tasks, idempotency_key, links, request)


@router.post("/text/task", response_model=Envelope[TaskView], responses=CREATE_RESPONSES,
             summary="Create a text task")
async def create_text_task(body: TextTaskRequest, caller: CallerDep, tasks: TasksDep, links: LinksDep,
                           request: Request, idempotency_key: IdempotencyKeyDep = None) -> Response:
    """Create a text task (a GenerationTask of type text)."""
    return await _create(TaskType.TEXT, body, caller, tasks, idempotency_key, links, request)


@router.get("/task/result/{task_id}", response_model=Envelope[TaskView], responses=RESULT_RESPONSES,
            summary="A task's status and result")
async def get_task_result(task_id: str, caller: CallerDep, tasks: TasksDep, links: LinksDep,
                          request: Request) -> Response:
    """A task's status and result, live or from the history; artifact links are absolute and signed."""
    view = linked(await tasks.result(caller, task_id), links, request)
    return answer(Envelope[TaskView](success=True, data=view, message="ok"))


@router.delete("/task/{task_id}", response_model=Envelope[DeletedTask], responses=TASK_ERRORS,
               summary="Delete a task (a running one is stopped)")
async def delete_task(task_id: str, caller: CallerDep, tasks: TasksDep) -> Response:
    """Delete a task: the resource (stopping its Job), its history record and its stored files."""
    deleted = await tasks.delete(caller, task_id)
    return answer(Envelope[DeletedTask](success=True, data=deleted, message="task deleted"))


@router.post("/task/{task_id}/cancel", response_model=Envelope[TaskView],
             responses={**TASK_ERRORS, **error_responses(409, 413)}, summary="Cancel a task that has not finished")
async def cancel_task(task_id: str, caller: CallerDep, tasks: TasksDep, links: LinksDep,
                      request: Request) -> Response:
    """Ask the operator to stop a task that has not finished."""
    view = linked(await tasks.cancel(caller, task_id), links, request)
    return answer(Envelope[TaskView](success=True, data=view, message="cancel requested"))


# Types a browser shows without running anything: served as stored. Any other type is a download.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "video/mp4", "text/plain"})
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def artifact_headers(stored_type: str | None, entry: Mapping[str, Any], name: str) -> tuple[str, dict[str, str]]:
    """(media type, headers) of a download: an allowlisted type inline, anything else as an attachment.

    Every download carries nosniff and a sandbox CSP, so no file can run script on the API's origin."""
    base = (stored_type or "").split(";", 1)[0].strip().lower()
    filename = _FILENAME_UNSAFE.sub("_", artifact_name(entry) or name) or "artifact"
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    if base in INLINE_TYPES:
        headers["Content-Disposition"] = f'inline; filename="{filename}"'
        return ("text/plain; charset=utf-8" if base == "text/plain" else base), headers
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return "application/octet-stream", headers


ARTIFACT_DESCRIPTION = """Stream a stored file of a task, with its length and SHA-256 ETag.

Two ways in: the API key in a header (`Authorization` or `X-API-Key`; another user's task is 404),
or a **signed link** as a result gives it (`result.artifacts[].url`, and the image and video URLs
that point at this API): its query carries `uid`, `expires` and `signature`, and it needs no
header at all, so it works in an `<img src>` and in plain curl. An expired link, or one whose
task, file, expiry or signature was altered, is 403 with the reason. See docs/api.md, "Signed links".

Types: image/png, image/jpeg, image/webp, image/gif, video/mp4 and text/plain are served as
stored (inline); any other is served as application/octet-stream with
`Content-Disposition: attachment`. Every download carries `X-Content-Type-Options: nosniff` and
`Content-Security-Policy: sandbox`."""


@router.get("/task/{task_id}/artifacts/{name}", response_class=StreamingResponse, responses={
    200: {"description": "the file: an allowlisted type as stored, anything else as application/octet-stream "
                         "(attachment)",
          "content": {t: {"schema": {"type": "string", "format": "binary"}}
                      for t in (*sorted(INLINE_TYPES), "application/octet-stream")},
          "headers": {"ETag": {"description": "the file's SHA-256, quoted", "schema": {"type": "string"}},
                      "Content-Length": {"description": "the file's size", "required": True,
                                         "schema": {"type": "integer", "minimum": 0}}}},
    **TASK_ERRORS, **error_responses(422),
    403: {"model": ErrorEnvelope, "description": "a signed link that has expired (the message says when), or "
                                                 "whose signature does not match its task, file and expiry"}},
    summary="Download a produced file (with the API key, or through a signed link without any header)",
    description=ARTIFACT_DESCRIPTION,
    openapi_extra={"security": [{"bearer": []}, {"apiKey": []}, {}]})
async def get_artifact(
    task_id: str, name: str, request: Request, tasks: TasksDep, links: LinksDep,
    uid: Annotated[str | None, Query(max_length=128, description="signed link: the task's uid")] = None,
    expires: Annotated[str | None, Query(max_length=20, description="signed link: when it expires, Unix "
                                                                    "seconds")] = None,
    signature: Annotated[str | None, Query(max_length=128, description="signed link: HMAC-SHA256, "
                                                                       "base64url")] = None,
) -> StreamingResponse:
    """A stored file of a task, by API key or by signed link."""
    if uid is None and expires is None and signature is None:
        caller = await get_caller(request)              # the header path, as before: 401, 404 for others' tasks
        stream, entry = await tasks.artifact(caller, task_id, name)
        cache = "private, max-age=3600"
    else:                                               # judged by its signature alone, whatever the headers
        until = links.verify(task_id, name, uid, expires, signature)
        stream, entry = await tasks.artifact(ANONYMOUS, task_id, name, uid=uid)
        cache = f"private, max-age={max(0, min(3600, until - int(time.time())))}"
    media_type, headers = artifact_headers(stream.mime_type or entry.get("mimeType"), entry, name)
    headers.update({"Cache-Control": cache, "Content-Length": str(stream.size_bytes)})
    digest = stream.sha256 or entry.get("sha256")
    if digest:
        headers["ETag"] = f'"{digest}"'
    return StreamingResponse(iter(stream), media_type=media_type, headers=headers)


@router.get("/tasks", response_model=Envelope[TaskPage], responses=error_responses(401, 403, 422, 429, 503),
            summary="Page through a user's tasks (newest first)")
async def list_tasks(
    caller: CallerDep, tasks: TasksDep, links: LinksDep, request: Request,
    user_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=NO_NUL["pattern"],
                                         description="the caller's own user id, or any (admin)")] = None,
    type: Annotated[Literal["image", "video", "text"] | None, Query(description="task type")] = None,
    status: Annotated[OldStatus | None, Query(description="pending | processing | completed | failed | "
                                                           "cancelled")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="page size: 1..100")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="tasks to skip: 0..1000000 whatever the "
                                 "filters; past the last task the page is empty")] = 0,
) -> Response:
    """A page of the caller's history from MongoDB, filtered by type and status."""
    page = await tasks.list(caller, user_id=user_id, type_=type, status=status, limit=limit, offset=offset)
    page = page.model_copy(update={"tasks": [linked(v, links, request) for v in page.tasks]})
    return answer(Envelope[TaskPage](success=True, data=page, message="ok"))
