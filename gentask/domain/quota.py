"""GenerationQuota: how many tasks a namespace (or one user of it) may run at once, a day, and for how much.

The models here are the source of the CRD (`make crds`, gentask.domain.crd) like the task's; the
arithmetic the operator enforces them with is here too, without I/O (gentask.operator.quota does the
counting and the writes).

A quota applies to the tasks of its namespace, all of them (no `spec.user`) or those of one user
(`spec.user` == the task's `spec.userID`). Each limit is optional:

- `concurrent`: tasks admitted and unfinished (Queued or Running) at once; a task over it waits
  (Queued, reason QuotaWait: no executor has it yet) and starts when room frees, highest priority first, then oldest.
- `tasksPerDay`: tasks admitted in the current UTC day (counted by creation time); one over it fails
  (QuotaExceeded) before any vendor call.
- `costPerMonth`: what the tasks of the current UTC calendar month cost, plus what the admitted,
  unfinished ones are estimated to cost; a task whose estimate would take the total over fails
  (QuotaExceeded) before any vendor call. Only costs in the quota's currency count (one quota per
  currency where models of two currencies are used).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from gentask.domain.names import to_camel
from gentask.domain.pricing import MICRO, Price, PriceTable, amount_text
from gentask.domain.task import GROUP, VERSION, GenerationTaskSpec, Money, ObjectMeta, Priority, TaskType

KIND = "GenerationQuota"
PLURAL = "generationquotas"
SINGULAR = "generationquota"
SHORT_NAMES = ["gq"]

# What a task's cost is estimated from where its parameters do not say (docs/tenants.md, "Quotas").
VIDEO_SECONDS_DEFAULT = 5            # the vendors' default clip length
VIDEO_TOKENS_PER_SECOND = 21600      # Seedance: 1280 x 720 x 24 fps / 1024 tokens a second (720p)
IMAGE_OUTPUT_TOKENS = 1056           # token-billed images (gpt-image-*): a 1024x1024 image at medium quality
TEXT_MAX_TOKENS_DEFAULT = 1024       # a text task without params.maxTokens
CHARS_PER_TOKEN = 4                  # prompt tokens, estimated from its length

PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.DEFAULT: 1, Priority.LOW: 2}


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", alias_generator=to_camel)


class QuotaLimits(_Model):
    """The limits; each is optional (absent: no limit of that kind)."""

    concurrent: int | None = Field(None, ge=0, le=100000,
                                   description="tasks admitted and unfinished at once; more wait (QuotaWait)")
    tasks_per_day: int | None = Field(None, ge=0, le=10000000,
                                      description="tasks admitted a UTC day; more fail (QuotaExceeded)")
    cost_per_month: Money | None = Field(None, description="what the tasks of a UTC calendar month may cost, in "
                                                           "one currency; a task that would exceed it fails")


class GenerationQuotaSpec(_Model):
    """Whose tasks the quota counts and its limits."""

    user: str | None = Field(None, min_length=1, max_length=128,
                             description="the tasks of this spec.userID only; absent: every task of the namespace")
    limits: QuotaLimits = Field(default_factory=QuotaLimits)


class QuotaUsed(_Model):
    """What is used now, as the operator counted it (derived from the tasks and the mirror)."""

    concurrent: int = Field(0, ge=0, description="tasks admitted and unfinished")
    waiting: int = Field(0, ge=0, description="tasks waiting for room (QuotaWait)")
    tasks_today: int = Field(0, ge=0, description="tasks admitted this UTC day")
    cost_this_month: Money | None = Field(None, description="spent this UTC month plus the estimates of the "
                                                            "admitted, unfinished tasks")


class GenerationQuotaStatus(_Model):
    """The operator's count, and the same as `used/limit` text for `kubectl get generationquota`."""

    used: QuotaUsed | None = None
    concurrent: str | None = Field(None, description="used/limit, e.g. 2/2 (- when no limit)")
    today: str | None = Field(None, description="tasks today used/limit, e.g. 5/100")
    month: str | None = Field(None, description="cost this month used/limit, e.g. 1.2/50 USD")
    observed_at: datetime | None = Field(None, description="when the operator counted")
    observed_generation: int | None = None


class GenerationQuota(BaseModel):
    """A whole GenerationQuota object."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", alias_generator=to_camel)
    api_version: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: GenerationQuotaSpec = Field(default_factory=GenerationQuotaSpec)
    status: GenerationQuotaStatus = Field(default_factory=GenerationQuotaStatus)

    @property
    def name(self) -> str:
        """metadata.name."""
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        """metadata.namespace."""
        return self.metadata.namespace or ""

    def applies(self, namespace: str, user_id: str) -> bool:
        """The quota counts the task of this namespace and user."""
        return namespace == self.namespace and (self.spec.user is None or self.spec.user == user_id)

    @property
    def who(self) -> str:
        """Whose tasks it counts, in words."""
        return f"user {self.spec.user}" if self.spec.user is not None else "the namespace"


# --- the arithmetic ------------------------------------------------------------------------------

def day_start(now: datetime) -> datetime:
    """The start of `now`'s UTC day."""
    now = now.astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    """The start of `now`'s UTC calendar month."""
    return day_start(now).replace(day=1)


def next_day(now: datetime) -> datetime:
    """When the UTC day after `now`'s starts."""
    return day_start(now) + timedelta(days=1)


def next_month(now: datetime) -> datetime:
    """When the UTC month after `now`'s starts."""
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class Estimate:
    """What a task is expected to cost before it runs, by the price table and its parameters."""

    amount: Decimal
    currency: str


def estimate_cost(spec: GenerationTaskSpec, table: PriceTable) -> Estimate | None:
    """The task's expected cost at its primary model's price: images x per image (or tokens), video
    seconds x price (or video tokens), text max tokens x output price + the prompt's tokens x input
    price. None for a model without a price."""
    price: Price | None = table.get(spec.provider, spec.model)
    if price is None:
        return None
    params = spec.params
    prompt_tokens = (len(spec.prompt) + len(params.system_prompt or "")) // CHARS_PER_TOKEN + 1
    usage: dict[str, int]
    if spec.type is TaskType.IMAGE:
        n = params.n or 1
        usage = {"images": n, "input_tokens": prompt_tokens, "output_tokens": IMAGE_OUTPUT_TOKENS * n}
    elif spec.type is TaskType.VIDEO:
        seconds = params.duration or VIDEO_SECONDS_DEFAULT
        usage = {"video_seconds": seconds, "video_tokens": VIDEO_TOKENS_PER_SECOND * seconds,
                 "input_tokens": prompt_tokens}
    else:
        usage = {"input_tokens": prompt_tokens, "output_tokens": params.max_tokens or TEXT_MAX_TOKENS_DEFAULT}
    return Estimate(price.cost(usage, params.size), price.currency)


def money(amount: Decimal) -> str:
    """An amount as quotas show it: two decimals at least ("0.40", "1.255")."""
    text = amount_text(amount)
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def ratio(used: int | str, limit: int | str | None) -> str:
    """used/limit as the printer columns show it (- for no limit)."""
    return f"{used}/{limit if limit is not None else '-'}"


def budget_message(quota: str, *, spent: Decimal, limit: Decimal, currency: str, estimate: Decimal) -> str:
    """Why a task fails on the month's budget: the quota, what is left, what the task would cost."""
    left = max(Decimal(0), limit - spent)
    return (f"quota {quota}: {money(left)} {currency} of {money(limit)} {currency} left this month (UTC); "
            f"this task would cost about {money(estimate)} {currency}, so it was not started "
            f"(raise spec.limits.costPerMonth or wait for the next month; docs/tenants.md)")


def daily_message(quota: str, *, used: int, limit: int) -> str:
    """Why a task fails on the day's count."""
    return (f"quota {quota}: {max(0, limit - used)} of {limit} tasks left today (UTC): {used} admitted, so this "
            "task was not started (raise spec.limits.tasksPerDay or wait for the next UTC day; docs/tenants.md)")


def wait_message(quota: str, *, active: int, limit: int, ahead: int) -> str:
    """Why a task waits for room under a concurrency limit."""
    queue = f"; {ahead} waiting task(s) go first" if ahead else ""
    return (f"quota {quota}: {active} of {limit} concurrent tasks running, so this task waits{queue}; it starts "
            "when one finishes (highest priority first, then oldest; docs/tenants.md)")


__all__ = ["KIND", "MICRO", "PLURAL", "PRIORITY_RANK", "SHORT_NAMES", "SINGULAR", "Estimate", "GenerationQuota",
           "GenerationQuotaSpec", "GenerationQuotaStatus", "QuotaLimits", "QuotaUsed", "budget_message",
           "daily_message", "day_start", "estimate_cost", "money", "month_start", "next_day", "next_month", "ratio",
           "wait_message"]
