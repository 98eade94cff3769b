"""A task's timeline: the live resource's conditions and the Kubernetes Events about it, or, for a
task only the history (MongoDB) still has, the times the history kept.

The REST view of a task (TaskView) carries neither conditions nor Events; the web console's task
page shows them, from `GET /api/v1/ai/task/{task_id}/timeline`. Ownership is the result
endpoint's: `TaskService.find` answers 404 for another user's task.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from gentask.api.faults import RETRY_AFTER
from gentask.api.service import Found, TaskService
from gentask.api.views import OLD_STATUS
from gentask.domain.reasons import Phase
from gentask.domain.task import KIND
from gentask.kube.tasks import ClusterUnavailable, KubeError

EVENTS_MAX = 200


class ConditionView(BaseModel):
    """One of the resource's status.conditions, as the Kubernetes API conventions define them."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime | None = Field(None, description="RFC 3339, UTC")


class EventView(BaseModel):
    """A Kubernetes Event about the task (what `kubectl describe gt NAME` lists)."""

    type: str = Field(description="Normal | Warning")
    reason: str
    message: str = ""
    count: int = 1
    first_time: datetime | None = Field(None, description="RFC 3339, UTC")
    last_time: datetime | None = Field(None, description="RFC 3339, UTC")
    source: str = Field("", description="the component that recorded it")


class FailureView(BaseModel):
    """How one provider and model failed before the task moved on (to a fallback, or to Failed)."""

    provider: str
    model: str
    reason: str
    message: str = ""


class TimelineView(BaseModel):
    """What happened to a task, in order: its times, its conditions and its Events."""

    task_id: str
    status: str = Field(description="the old server's word for the phase")
    phase: str
    live: bool = Field(description="the resource exists; false: only the history (MongoDB) still has the task, "
                                   "which keeps its times but no conditions or Events")
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    conditions: list[ConditionView] = Field(default_factory=list)
    events: list[EventView] = Field(default_factory=list, description="oldest first")
    provider_failures: list[FailureView] = Field(default_factory=list)
    events_note: str | None = Field(None, description="why the Events could not be read, when they could not")


def _time(event: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = event.get(key)
        if value:
            return str(value)
    return None


def event_view(event: Mapping[str, Any]) -> EventView | None:
    """A core/v1 Event as the API server returns it -> its view (None if it cannot be read)."""
    source = event.get("source") or {}
    created = (event.get("metadata") or {}).get("creationTimestamp")
    first = _time(event, "firstTimestamp", "eventTime") or created
    last = _time(event, "lastTimestamp", "eventTime") or first
    try:
        return EventView(type=str(event.get("type") or "Normal"), reason=str(event.get("reason") or ""),
                         message=str(event.get("message") or ""), count=int(event.get("count") or 1),
                         first_time=first, last_time=last,
                         source=str(event.get("reportingComponent") or source.get("component") or ""))
    except (ValidationError, ValueError, TypeError):
        return None


async def task_events(tasks: TaskService, task_id: str, uid: str, namespace: str | None = None) -> list[EventView]:
    """The Events about this incarnation of the task (a name used again has its own), oldest first;
    `namespace`: the task's (else GENTASK_NAMESPACE)."""
    selector = f"involvedObject.kind={KIND},involvedObject.name={task_id}"
    items = await tasks.client.list_events(namespace or tasks.namespace, field_selector=selector)
    views = [v for e in items
             if not uid or (e.get("involvedObject") or {}).get("uid") in (None, "", uid)
             if (v := event_view(e)) is not None]
    views.sort(key=lambda v: when.timestamp() if (when := v.last_time or v.first_time) is not None else 0.0)
    return views[-EVENTS_MAX:]


async def timeline(tasks: TaskService, found: Found) -> TimelineView:
    """The timeline of a task the caller may see."""
    record = found.record
    phase = str(record.get("phase") or Phase.PENDING.value)
    view = TimelineView(task_id=str(record.get("name") or ""), status=OLD_STATUS.get(phase, "pending"), phase=phase,
                        live=found.task is not None, created_at=record.get("createdAt"),
                        started_at=record.get("startTime"), completed_at=record.get("completionTime"))
    if found.task is None:
        return view
    status = found.task.status
    view.conditions = [ConditionView(type=c.type, status=c.status, reason=c.reason, message=c.message,
                                     last_transition_time=c.last_transition_time) for c in status.conditions]
    view.provider_failures = [FailureView(**f.model_dump()) for f in status.provider_failures]
    try:
        view.events = await task_events(tasks, view.task_id, found.uid, found.task.metadata.namespace)
    except ClusterUnavailable as exc:
        view.events_note = f"the cluster's Events could not be read ({exc}); try again in {RETRY_AFTER} s"
    except KubeError as exc:       # e.g. 403: the API's Role lacks list on events
        view.events_note = f"the cluster refused to list the task's Events ({exc.status} {exc.reason})"
    return view
