"""The REST API's look at the GenerationQuotas before a create: 429 instead of a task that cannot run now.

The operator enforces every quota for every task however it was made (gentask.operator.quota); this
is the API's courtesy on top, so that a REST client learns at once, with the quota's name and a
Retry-After, instead of finding a waiting or failed task:

- concurrency: when the scope's unfinished tasks (admitted or waiting) already fill the limit, 429
  with Retry-After RETRY_AFTER (a task may finish any time). kubectl and GitOps creates are not
  refused: theirs wait (QuotaWait) in the operator's queue.
- tasks a day: when today's admitted tasks reach the limit, 429 with Retry-After until the next UTC day.
- cost a month: when what was spent this month, plus the estimates of the unfinished tasks, plus
  this task's estimate would exceed the limit, 429 with Retry-After until the next UTC month.

Cheap: the quotas of a namespace are read at most every QUOTAS_SECONDS, the mirror's figures of a
scope at most every FIGURES_SECONDS; the unfinished tasks come from the API's own index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from gentask.api.errors import TooManyRequests
from gentask.api.faults import RETRY_AFTER
from gentask.api.index import TaskIndex
from gentask.domain.pricing import PriceTable
from gentask.domain.quota import (
    GenerationQuota,
    budget_message,
    daily_message,
    day_start,
    estimate_cost,
    month_start,
    next_day,
    next_month,
)
from gentask.domain.task import GenerationTaskSpec
from gentask.kube.client import KubeClient
from gentask.kube.errors import KubeError
from gentask.storage import MirrorWriter

log = logging.getLogger("gentask.api")

QUOTAS_SECONDS = 5.0
FIGURES_SECONDS = 10.0


def _cost(cost: Any) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    if not isinstance(cost, dict):
        return out
    totals = cost.get("totals") or ([{"amount": cost.get("amount"), "currency": cost.get("currency")}]
                                    if cost.get("amount") is not None else [])
    for item in totals:
        try:
            out[str(item.get("currency"))] = out.get(str(item.get("currency")), Decimal(0)) + \
                Decimal(str(item.get("amount")))
        except ArithmeticError:
            continue
    return out


class QuotaCheck:
    """429 for a create a GenerationQuota would hold back (see the module's docstring)."""

    def __init__(self, kube: KubeClient, storage: MirrorWriter, prices: PriceTable) -> None:
        self.kube = kube
        self.storage = storage
        self.prices = prices
        self._quotas: dict[str, tuple[float, list[GenerationQuota]]] = {}
        self._cached: dict[tuple[str, str | None, datetime],
                           tuple[float, frozenset[str], dict[str, dict[str, Decimal]]]] = {}

    async def quotas(self, namespace: str) -> list[GenerationQuota]:
        """The namespace's quotas (cached QUOTAS_SECONDS; none when the CRD is missing or unreadable)."""
        cached = self._quotas.get(namespace)
        if cached is not None and time.monotonic() - cached[0] < QUOTAS_SECONDS:
            return cached[1]
        try:
            raw = await self.kube.list_quotas(namespace)
        except KubeError as exc:          # no CRD, or no RBAC: the operator still enforces every quota
            log.info("cannot read the GenerationQuotas of %s (%s): the operator alone enforces them", namespace,
                     exc.reason)
            raw = []
        found = []
        for item in raw:
            try:
                found.append(GenerationQuota.model_validate(item))
            except ValidationError:
                continue
        self._quotas[namespace] = (time.monotonic(), found)
        return found

    async def _figures(self, namespace: str, user: str | None, now: datetime
                       ) -> tuple[frozenset[str], dict[str, dict[str, Decimal]]]:
        """(uids admitted today, uid -> cost of the tasks finished this month) from the mirror, cached."""
        key = (namespace, user, day_start(now))
        cached = self._cached.get(key)
        if cached is not None and time.monotonic() - cached[0] < FIGURES_SECONDS:
            return cached[1], cached[2]

        def read() -> tuple[frozenset[str], dict[str, dict[str, Decimal]]]:
            mirror = self.storage.open_mirror()
            today = frozenset(mirror.admitted_since(namespace=namespace, user_id=user, since=day_start(now)))
            records = mirror.usage_records(namespace=namespace, user_id=user, since=month_start(now), until=None)
            spent = {str(r.get("_id")): _cost(r.get("cost")) for r in records}
            return today, spent
        today, spent = await asyncio.to_thread(read)
        self._cached[key] = (time.monotonic(), today, spent)
        return today, spent

    async def check(self, namespace: str, owner: str, spec: dict[str, Any], index: TaskIndex) -> None:
        """Raise TooManyRequests when a quota of the namespace would hold this task back."""
        quotas = [q for q in await self.quotas(namespace) if q.applies(namespace, owner)]
        if not quotas:
            return
        try:
            estimate = estimate_cost(GenerationTaskSpec.model_validate(spec), self.prices)
        except ValidationError:
            estimate = None
        now = datetime.now(UTC)
        for quota in sorted(quotas, key=lambda q: q.name):
            limits = quota.spec.limits
            user = quota.spec.user
            mine = [t for t in index.tasks() if user is None or t.spec.user_id == user]
            unfinished = [t for t in mine if not t.status.finished]
            if limits.concurrent is not None and len(unfinished) >= limits.concurrent:
                raise TooManyRequests(
                    f"quota {quota.name}: {len(unfinished)} unfinished task(s) of {quota.who} fill its limit of "
                    f"{limits.concurrent} concurrent task(s); try again when one has finished (Retry-After)",
                    retry_after=RETRY_AFTER)
            if limits.tasks_per_day is None and limits.cost_per_month is None:
                continue
            try:
                admitted, spent = await self._figures(namespace, user, now)
            except Exception as exc:  # noqa: BLE001 - MongoDB away: the operator checks again
                log.info("cannot read the quota figures of %s: %s", namespace, exc)
                continue
            # the live tasks beside the (cached) mirror: a burst of creates counts at once
            day, month = day_start(now), month_start(now)
            today = set(admitted) | {t.uid for t in mine if t.metadata.creation_timestamp is not None
                                     and t.metadata.creation_timestamp >= day
                                     and (not t.status.finished or t.status.attempts is not None)}
            if limits.tasks_per_day is not None and len(today) >= limits.tasks_per_day:
                raise TooManyRequests(daily_message(quota.name, used=len(today), limit=limits.tasks_per_day),
                                      retry_after=max(1, int((next_day(now) - now).total_seconds()) + 1))
            budget = limits.cost_per_month
            if budget is not None and estimate is not None and estimate.currency == budget.currency:
                currency = budget.currency
                used = sum((c.get(currency, Decimal(0)) for c in spent.values()), Decimal(0))
                for task in mine:
                    if not task.status.finished:
                        guess = estimate_cost(task.spec, self.prices)
                        if guess is not None and guess.currency == currency:
                            used += guess.amount
                    elif task.uid not in spent and task.status.completion_time is not None \
                            and task.status.completion_time >= month and task.status.cost is not None:
                        used += _cost(task.status.cost.model_dump(by_alias=True, mode="json")).get(currency, Decimal(0))
                cap = Decimal(budget.amount)
                if used + estimate.amount > cap:
                    raise TooManyRequests(budget_message(quota.name, spent=used, limit=cap, currency=currency,
                                                         estimate=estimate.amount),
                                          retry_after=max(1, int((next_month(now) - now).total_seconds()) + 1))
