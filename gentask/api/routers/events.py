"""Server-sent events: one task's changes, or all of a caller's tasks' changes, as text/event-stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gentask.api.deps import CallerDep, Services, ServicesDep
from gentask.api.errors import Forbidden, TooManyRequests, echo
from gentask.api.events import RETRY_MS, EventHub, Subscriber
from gentask.api.routers.tasks import error_responses
from gentask.api.schemas import NO_NUL

router = APIRouter(prefix="/api/v1/ai", tags=["events"])

EVENT_ID = r"^[0-9]{1,20}$"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

FORMAT = f"""A stream of server-sent events (text/event-stream), each of them

    id: <the task's resourceVersion>
    event: task | deleted
    data: <one line of JSON>

`task`: `data` is the task as `GET /api/v1/ai/task/result/{{task_id}}` shows it (schema TaskView),
after each change of its phase, its worker's progress message or its result. `deleted`: the task
left the cluster (deleted, or removed by its TTL after it finished); `data` is
`{{"task_id": ..., "deleted": true}}` (schema DeletedTask). The stream starts with `retry: {RETRY_MS}`
and sends `: ping` comments while idle. Reconnect with `Last-Event-ID` (or `last_event_id`): the
stream then sends, for every task changed since that id, its latest state (intermediate states may
be coalesced; the latest is never lost)."""

EXAMPLE = ('retry: 3000\n\nid: 48213\nevent: task\ndata: {"task_id": "img-4k2x9qa7", "status": "processing", '
           '"phase": "Running", ...}\n\n: ping\n\nid: 48230\nevent: task\ndata: {"task_id": "img-4k2x9qa7", '
           '"status": "completed", "phase": "Succeeded", ...}\n\n')

# one event, as OpenAPI 3.2 describes a text/event-stream (FastAPI's own SSE routes write the same)
ITEM_SCHEMA = {
    "type": "object", "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": EVENT_ID, "description": "the task's resourceVersion"},
        "event": {"type": "string", "enum": ["task", "deleted"]},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"oneOf": [
            {"$ref": "#/components/schemas/TaskView"}, {"$ref": "#/components/schemas/DeletedTask"}]}},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def stream_responses(*codes: int, one_task: bool) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of a stream route: the event format, 204 for a task stream, the errors."""
    out: dict[int | str, dict[str, Any]] = {200: {
        "description": FORMAT, "content": {"text/event-stream": {
            # OpenAPI 3.2: `itemSchema` is one event, `schema` the whole stream
            "schema": {"type": "array", "items": ITEM_SCHEMA}, "itemSchema": ITEM_SCHEMA, "example": EXAMPLE}}}}
    if one_task:
        out[204] = {"description": "resumed (Last-Event-ID) after the task's final event: nothing more will "
                                   "come (an EventSource stops reconnecting)"}
    for code, entry in error_responses(*codes).items():
        # as JSON: given as a model, FastAPI would file the envelope under the route's text/event-stream
        out[code] = {"description": entry["description"] + (" or event streams" if code == 429 else ""),
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
                     **({"headers": entry["headers"]} if "headers" in entry else {})}
    return out


LastEventIdHeader = Annotated[str | None, Header(
    alias="Last-Event-ID", pattern=EVENT_ID,
    description="resume after this event id (an EventSource sends it when it reconnects)")]
LastEventIdQuery = Annotated[str | None, Query(
    pattern=EVENT_ID, description="the same, for a first connection that cannot set headers; the header wins")]


class EventStreamResponse(StreamingResponse):
    """A text/event-stream response that frees its subscription however it ends (finished, client gone,
    cancelled, or never started)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncGenerator[bytes, None], release: Callable[[], None]) -> None:
        super().__init__(content, headers=HEADERS, media_type=self.media_type)
        self._content = content
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream, then release the subscription (and close the generator) whatever happened."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._content.aclose()
            finally:
                self._release()


def _since(header: str | None, query: str | None) -> int | None:
    value = header if header is not None else query
    return int(value) if value is not None else None


def _subscribe(services: Services, hub: EventHub, key: str, **which: str | None) -> Subscriber:
    try:
        sub: Subscriber = hub.subscribe(key, **which)
    except TooManyRequests:
        services.metrics.rejected["streams"] += 1
        raise
    return sub


def _respond(hub: EventHub, sub: Subscriber, body: AsyncGenerator[bytes, None]) -> EventStreamResponse:
    return EventStreamResponse(body, release=lambda: hub.unsubscribe(sub))


@router.get("/task/{task_id}/events", response_class=EventStreamResponse, status_code=200,
            responses=stream_responses(401, 404, 422, 429, 503, one_task=True),
            summary="Follow one task's changes (server-sent events)")
async def task_events(task_id: str, caller: CallerDep, services: ServicesDep, request: Request,
                      last_event_id_header: LastEventIdHeader = None,
                      last_event_id: LastEventIdQuery = None) -> Response:
    """The task's state now, then each change, until its final event (Succeeded, Failed, Cancelled,
    deleted), then the end. A task only the history still has: its one event, then the end."""
    found = await services.tasks.find(caller, task_id)      # 404 as on the result endpoint
    since = _since(last_event_id_header, last_event_id)
    hub: EventHub = services.hub_of(caller)
    live = hub.index.get(task_id) or found.task
    first = [hub.current(live) if live is not None else hub.archived(found.record)]
    if since is not None and first[0].version <= since and first[0].final:
        return Response(status_code=204, headers=HEADERS)
    sub = _subscribe(services, hub, caller.limit_key, name=task_id)
    return _respond(hub, sub, hub.stream(sub, first, since=since, one_task=True, base=str(request.base_url)))


@router.get("/events", response_class=EventStreamResponse, status_code=200,
            responses=stream_responses(401, 403, 422, 429, 503, one_task=False),
            summary="Follow the changes of all the caller's tasks (server-sent events)")
async def all_events(caller: CallerDep, services: ServicesDep, request: Request,
                     user_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=NO_NUL["pattern"],
                                                          description="the caller's own user id, or any (admin)")]
                     = None,
                     last_event_id_header: LastEventIdHeader = None,
                     last_event_id: LastEventIdQuery = None) -> Response:
    """Every change of the caller's tasks (an admin: every user's, or one user's with user_id). A new
    stream starts with the state of each unfinished task; a resumed one with what changed since."""
    if user_id is not None and not caller.admin and user_id != caller.user_id:
        raise Forbidden(f"user_id {echo(user_id)!r} is not yours; only an admin may follow another user's tasks")
    owner = user_id if caller.admin else caller.user_id
    since = _since(last_event_id_header, last_event_id)
    hub: EventHub = services.hub_of(caller)
    sub = _subscribe(services, hub, caller.limit_key, owner=owner)
    first = hub.backlog(sub, since)          # taken with the subscription: nothing falls between the two
    return _respond(hub, sub, hub.stream(sub, first, since=since, one_task=False, base=str(request.base_url)))
