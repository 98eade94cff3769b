"""GET /api/v1/ai/usage: what a user's finished tasks consumed and cost, grouped, from the MongoDB mirror."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from gentask.api.deps import CallerDep, TasksDep
from gentask.api.errors import Unprocessable, echo
from gentask.api.routers.tasks import answer, error_responses
from gentask.api.schemas import CHECKED_BY_SERVER, NO_NUL, Envelope, UsageReport

router = APIRouter(prefix="/api/v1/ai", tags=["usage"])
# what no JSON Schema of a query parameter can say: a 422 names the parameter
WINDOW = {CHECKED_BY_SERVER: "from before to; a real time from year 1 to 9999 once in UTC", "format": "date-time"}
# a date, T, a time with optional fractions, an optional offset: numbers (Unix times) are refused
RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})?$"


def _time(value: str | None, name: str) -> datetime | None:
    """An RFC 3339 time of the query; one the pattern lets through but no clock has (month 13) is a 422."""
    if value is None:
        return None
    text = value.replace("z", "Z").replace("t", "T")
    whole, dot, rest = text.partition(".")
    if dot:                                   # Python reads at most 6 digits of a fraction
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{whole}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise Unprocessable(f"{name} is not a time: {echo(value)!r}", errors=[
            {"field": name, "value": value, "accepted": "an RFC 3339 time such as 2026-12-01T00:00:00Z",
             "message": "not a time"}]) from None


@router.get("/usage", response_model=Envelope[UsageReport], responses=error_responses(401, 403, 422, 429, 503),
            summary="Usage and cost of finished tasks, totalled and grouped")
async def get_usage(
    caller: CallerDep, tasks: TasksDep,
    user_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=NO_NUL["pattern"],
                                         description="the caller's own user id (the default), or any user's "
                                                     "(admin; an admin without user_id gets every user's)")] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=40, pattern=RFC3339,
                                       description="tasks completed at or after this time, RFC 3339 (e.g. "
                                                   "2026-12-01T00:00:00Z; no offset: UTC)",
                                       json_schema_extra=WINDOW)] = None,
    to: Annotated[str | None, Query(max_length=40, pattern=RFC3339, description="tasks completed before this time, "
                                    "RFC 3339", json_schema_extra=WINDOW)] = None,
    group_by: Annotated[Literal["model", "provider", "day", "user"], Query(
        description="model: per provider/model of each attempt; provider; day: per UTC day of completion; "
                    "user: per user")] = "model",
) -> Response:
    """Totals of the tasks that finished in [from, to): how many, their usage units and their cost per
    currency, by the price table in force when each finished (docs/pricing.md)."""
    report = await tasks.usage(caller, user_id=user_id, since=_time(from_, "from"), until=_time(to, "to"),
                               group_by=group_by)
    return answer(Envelope[UsageReport](success=True, data=report, message="ok"))
