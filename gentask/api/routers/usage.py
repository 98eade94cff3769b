"""GET /api/v1/ai/usage: what a user's finished tasks consumed and cost, grouped, from the MongoDB mirror."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from gentask.api.deps import CallerDep, TasksDep
from gentask.api.routers.tasks import answer, error_responses
from gentask.api.schemas import NO_NUL, Envelope, UsageReport

router = APIRouter(prefix="/api/v1/ai", tags=["usage"])


@router.get("/usage", response_model=Envelope[UsageReport], responses=error_responses(401, 403, 422, 429, 503),
            summary="Usage and cost of finished tasks, totalled and grouped")
async def get_usage(
    caller: CallerDep, tasks: TasksDep,
    user_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=NO_NUL["pattern"],
                                         description="the caller's own user id (the default), or any user's "
                                                     "(admin; an admin without user_id gets every user's)")] = None,
    from_: Annotated[datetime | None, Query(alias="from", description="tasks completed at or after this time, "
                                            "RFC 3339 (e.g. 2026-12-01T00:00:00Z; no offset: UTC)")] = None,
    to: Annotated[datetime | None, Query(description="tasks completed before this time, RFC 3339")] = None,
    group_by: Annotated[Literal["model", "provider", "day", "user"], Query(
        description="model: per provider/model of each attempt; provider; day: per UTC day of completion; "
                    "user: per user")] = "model",
) -> Response:
    """Totals of the tasks that finished in [from, to): how many, their usage units and their cost per
    currency, by the price table in force when each finished (docs/pricing.md)."""
    report = await tasks.usage(caller, user_id=user_id, since=from_, until=to, group_by=group_by)
    return answer(Envelope[UsageReport](success=True, data=report, message="ok"))
