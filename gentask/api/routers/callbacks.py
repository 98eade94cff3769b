"""GET /api/v1/ai/task/{task_id}/callbacks: how a task's webhook deliveries went (callback_url).

What status.notifications holds, in the API's words: one entry an event sent (or being sent)
to the task's callback_url, delivered, pending (with its next attempt) or failed (with why).
The same ownership as every task verb: another user's task is 404.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from gentask.api.deps import CallerDep, TasksDep
from gentask.api.routers.tasks import TASK_ERRORS, answer
from gentask.api.schemas import Envelope
from gentask.domain.webhooks import NotifyEvent

router = APIRouter(prefix="/api/v1/ai", tags=["tasks"])


class Delivery(BaseModel):
    """One event sent to the callback_url: its id (the webhook-id header), and how it went."""

    id: str = Field(description="the event id: the webhook-id header and the CloudEvent's id")
    event: NotifyEvent
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending: tried again at next_attempt_at; delivered: answered 2xx; failed: given up")
    attempts: int
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_error: str | None = None


class Callbacks(BaseModel):
    """A task's callback_url, the events it asked for, and each delivery so far."""

    task_id: str
    callback_url: str | None = Field(None, description="where the events go; null: the task has none")
    callback_events: list[NotifyEvent] = Field(default_factory=list)
    deliveries: list[Delivery] = Field(default_factory=list)


def callbacks_view(task_id: str, notify: Mapping[str, Any] | None, notes: Sequence[Mapping[str, Any]]) -> Callbacks:
    """spec.notify and status.notifications (as the API server or the mirror keeps them) -> the view."""
    notify = notify or {}
    events = notify.get("events") or (["succeeded", "failed", "cancelled"] if notify.get("url") else [])
    return Callbacks(task_id=task_id, callback_url=notify.get("url"), callback_events=events, deliveries=[
        Delivery(id=n.get("id", ""), event=n["event"], state=str(n.get("state") or "Pending").lower(),
                 attempts=n.get("attempts") or 0, last_attempt_at=n.get("lastAttemptTime"),
                 next_attempt_at=n.get("nextAttemptTime"), delivered_at=n.get("deliveredTime"),
                 last_error=n.get("lastError")) for n in notes if n.get("event")])


@router.get("/task/{task_id}/callbacks", response_model=Envelope[Callbacks], responses=TASK_ERRORS,
            summary="How a task's webhook deliveries (callback_url) went")
async def get_callbacks(task_id: str, caller: CallerDep, tasks: TasksDep) -> Response:
    """The task's callback_url, its event filter and every delivery: delivered, pending or failed."""
    found = await tasks.find(caller, task_id)
    if found.task is not None:
        spec = found.task.spec.notify
        notify = spec.model_dump(by_alias=True, mode="json") if spec is not None else None
        notes = [n.model_dump(by_alias=True, exclude_none=True, mode="json") for n in found.task.status.notifications]
    else:
        notify, notes = found.record.get("notify"), list(found.record.get("notifications") or [])
    return answer(Envelope[Callbacks](success=True, data=callbacks_view(task_id, notify, notes), message="ok"))
