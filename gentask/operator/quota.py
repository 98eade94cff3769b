"""GenerationQuotas enforced at a task's start, for every task however it was made (kubectl, REST, GitOps).

Nothing here is a persisted counter: every figure is derived, so an operator that restarts counts
the same.

- Concurrency: the tasks admitted and unfinished (Queued, Running) of a quota's scope, from the
  operator's watch of unfinished tasks (seeded by one listing at start-up, before any task is
  admitted), plus the admissions this process decided whose Queued write has not come back yet. A
  task over the limit waits: Queued, reason QuotaWait, Scheduled False (such a task gets no Job, no
  pool worker claims it, the resync leaves it to the quotas: gentask.domain.reasons.waits_for_room).
  It starts when room frees, highest priority first, then oldest: a task is admitted only when fewer
  tasks wait ahead of it than there is room; when an admitted task finishes, the first waiting ones
  of its quotas are looked at again at once (`_kick`).
- Tasks a day and cost a month: the MongoDB mirror's records of the scope (admitted today; finished
  this month, with their cost), read at most every FIGURES_SECONDS a scope, plus what the watch
  shows and the mirror may lack: the unfinished admitted tasks (counted today; their estimated cost)
  and the tasks seen finishing in the last minutes (their real cost). A burst cannot over-admit: the
  checks and the reservation happen without a pause in between, the reservation counted at once.

A task whose estimate would take the month over, or that would be one task too many today, fails
(QuotaExceeded) before any Job or vendor call, the message naming the quota and what is left.
Every STATUS_SECONDS the quotas' status gets the counts (when they changed): `kubectl get gq`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from gentask.config import Settings
from gentask.domain.pricing import PriceTable
from gentask.domain.quota import (
    PRIORITY_RANK,
    Estimate,
    GenerationQuota,
    budget_message,
    daily_message,
    day_start,
    estimate_cost,
    money,
    month_start,
    ratio,
)
from gentask.domain.reasons import QUOTA_WAIT, Phase, waits_for_room
from gentask.domain.task import GenerationTask, GenerationTaskSpec, Priority
from gentask.kube.client import KubeClient
from gentask.kube.errors import KubeError

log = logging.getLogger("gentask.operator")

FIGURES_SECONDS = 10.0      # how long a scope's figures from the mirror are used before they are read again
RECENT_SECONDS = 120.0      # how long a finished task's cost is kept beside the mirror's (its write may lag)
STATUS_SECONDS = 2.0        # how often the quotas' status is brought up to date (when it changed)
REFRESH_STATUS_SECONDS = 60.0   # observedAt is renewed at least this often
WAITING = frozenset({None, "", "Created", QUOTA_WAIT})      # Pending reasons of a task that queues for room
# (Pending with QuotaWait: how earlier operators let such a task wait; it moves to Queued when looked at)
TODAY = "today"

Scope = tuple[str, str | None]       # (namespace, user); user None: every task of the namespace


@dataclass
class Entry:
    """What the quotas keep of an unfinished task (from its watch events)."""

    uid: str
    namespace: str
    name: str
    user: str
    key: tuple[int, float, str]          # priority rank, creation time, name: the waiting order
    created: datetime
    rv: int
    state: str = "other"                 # waiting | active | other (Pending for another reason)
    reserved_rv: int | None = None       # admitted by this process at this resourceVersion
    estimate: Estimate | None = None


@dataclass
class Finished:
    """A task seen finishing lately: counted here until the mirror surely has it."""

    namespace: str
    user: str
    created: datetime
    completed: datetime
    admitted: bool
    cost: dict[str, Decimal]
    seen: float = field(default_factory=time.monotonic)
    retired: float | None = None         # from then on the mirror's figures read count it, not this


@dataclass
class Figures:
    """A scope's counts from the mirror (without the tasks the watch knows of)."""

    today: int
    cost: dict[str, Decimal]
    day: datetime
    month: datetime
    at: float


@dataclass(frozen=True)
class Wait:
    """The task waits for room: Pending with this reason and message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Exceeded:
    """The task would exceed a budget: it fails with QuotaExceeded and this message."""

    quota: str
    message: str


def _created(raw: Mapping[str, Any]) -> datetime:
    text = (raw.get("metadata") or {}).get("creationTimestamp") or ""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


def _rv(raw: Mapping[str, Any]) -> int:
    try:
        return int((raw.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def cost_of(cost: Mapping[str, Any] | None) -> dict[str, Decimal]:
    """status.cost (or a mirror record's cost) per currency."""
    out: dict[str, Decimal] = {}
    if not cost:
        return out
    totals = cost.get("totals") or ([{"amount": cost.get("amount"), "currency": cost.get("currency")}]
                                    if cost.get("amount") is not None else [])
    for item in totals:
        try:
            amount = Decimal(str(item.get("amount")))
        except (InvalidOperation, TypeError):
            continue
        currency = str(item.get("currency") or "")
        out[currency] = out.get(currency, Decimal(0)) + amount
    return out


class Quotas:
    """The operator's quotas: the GenerationQuota objects it watches and the counts of their scopes."""

    def __init__(self, settings: Settings, kube: KubeClient, mirror: Any, prices: PriceTable | None = None) -> None:
        self.settings = settings
        self.kube = kube
        self.mirror = mirror                      # gentask.storage.MirrorWriter: open_mirror()
        self.prices = prices or settings.price_table()
        self.quotas: dict[str, dict[str, GenerationQuota]] = {}     # namespace -> name -> quota
        self.entries: dict[str, Entry] = {}
        self.waiting: dict[Scope, list[tuple[tuple[int, float, str], str]]] = {}   # sorted (key, uid)
        self.active: dict[Scope, set[str]] = {}
        self.estimates: dict[Scope, dict[str, Decimal]] = {}
        self.recent: dict[str, Finished] = {}
        self.recent_of: dict[Scope, set[str]] = {}
        self.active_days: dict[Scope, Counter[date]] = {}         # admitted, unfinished: by creation day
        self.figures_cache: dict[Scope, Figures] = {}
        self._refreshing: set[Scope] = set()
        self.written: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self.synced = asyncio.Event()
        self.wake: Callable[[str, str], Awaitable[None]] | None = None   # look at a waiting task again
        self._waking: set[str] = set()
        self._pruned = time.monotonic()

    # --- what the watches show ----------------------------------------------------------------

    def saw_quota(self, raw: Mapping[str, Any], deleted: bool = False) -> None:
        """A GenerationQuota was added, changed or deleted."""
        meta = raw.get("metadata") or {}
        ns, name = meta.get("namespace") or "", meta.get("name") or ""
        if deleted:
            self.quotas.get(ns, {}).pop(name, None)
            self.written.pop((ns, name), None)
        else:
            try:
                quota = GenerationQuota.model_validate(raw)
            except ValidationError as exc:
                log.warning("GenerationQuota %s/%s cannot be read: %s", ns, name, exc)
                return
            self.quotas.setdefault(ns, {})[name] = quota
        self._kick(ns, released=True)       # a limit raised, or a quota gone, may make room

    def of(self, namespace: str, user: str) -> list[GenerationQuota]:
        """The quotas that count a task of this namespace and user."""
        return [q for q in self.quotas.get(namespace, {}).values() if q.applies(namespace, user)]

    @staticmethod
    def _scopes(entry: Entry) -> tuple[Scope, Scope]:
        return (entry.namespace, None), (entry.namespace, entry.user)

    def _leave(self, entry: Entry) -> None:
        """The entry leaves the waiting lists and the active sets."""
        for scope in self._scopes(entry):
            if entry.state == "waiting":
                items = self.waiting.get(scope)
                if items:
                    i = bisect.bisect_left(items, (entry.key, entry.uid))
                    if i < len(items) and items[i][1] == entry.uid:
                        del items[i]
            elif entry.state == "active":
                self.active.get(scope, set()).discard(entry.uid)
                self._add(scope, entry.estimate, -1)
                self.active_days.setdefault(scope, Counter())[entry.created.date()] -= 1
        entry.state = "other"

    def _add(self, scope: Scope, estimate: Estimate | None, sign: int) -> None:
        if estimate is not None:
            sums = self.estimates.setdefault(scope, {})
            sums[estimate.currency] = sums.get(estimate.currency, Decimal(0)) + sign * estimate.amount

    def _enter(self, entry: Entry, state: str) -> None:
        if entry.state == state:
            return
        self._leave(entry)
        entry.state = state
        for scope in self._scopes(entry):
            if state == "waiting":
                bisect.insort(self.waiting.setdefault(scope, []), (entry.key, entry.uid))
            elif state == "active":
                self.active.setdefault(scope, set()).add(entry.uid)
                self._add(scope, entry.estimate, 1)
                self.active_days.setdefault(scope, Counter())[entry.created.date()] += 1

    def saw(self, raw: Mapping[str, Any]) -> None:
        """A task as its watch (or a listing) shows it: where it stands for the quotas."""
        meta = raw.get("metadata") or {}
        uid = meta.get("uid") or ""
        status = raw.get("status") or {}
        spec = raw.get("spec") or {}
        phase = Phase.parse(status.get("phase")) or Phase.PENDING
        rv = _rv(raw)
        entry = self.entries.get(uid)
        if entry is not None and rv < entry.rv:
            return                      # an older copy (a resync's listing): what came since stands
        if phase.terminal:
            if entry is not None:
                self._finish(entry, raw)
            return
        if entry is None:
            created = _created(raw)
            priority = PRIORITY_RANK.get(Priority(spec["priority"]), 1) \
                if spec.get("priority") in ("critical", "default", "low") else 1
            entry = Entry(uid, meta.get("namespace") or "", meta.get("name") or "", str(spec.get("userID") or ""),
                          (priority, created.timestamp(), meta.get("name") or ""), created, rv)
            self.entries[uid] = entry
        entry.rv = rv
        if phase is Phase.PENDING or waits_for_room(phase, status.get("reason")):
            if entry.reserved_rv is not None and rv <= entry.reserved_rv:
                return                  # admitted here; its Queued write comes
            entry.reserved_rv = None
            waiting = status.get("reason") in WAITING and not spec.get("cancel") and not meta.get("deletionTimestamp")
            self._enter(entry, "waiting" if waiting else "other")
        else:
            if entry.estimate is None and entry.state != "active":
                entry.estimate = self._estimate_raw(spec)
            self._enter(entry, "active")

    def _estimate_raw(self, spec: Mapping[str, Any]) -> Estimate | None:
        try:
            return estimate_cost(GenerationTaskSpec.model_validate(spec), self.prices)
        except ValidationError:
            return None

    def _finish(self, entry: Entry, raw: Mapping[str, Any]) -> None:
        was_active = entry.state == "active"
        self._leave(entry)
        self.entries.pop(entry.uid, None)
        status = raw.get("status") or {}
        if was_active or status.get("attempts") is not None:
            completed = status.get("completionTime")
            try:
                done = datetime.fromisoformat(str(completed).replace("Z", "+00:00")) if completed else datetime.now(UTC)
            except ValueError:
                done = datetime.now(UTC)
            self.recent[entry.uid] = Finished(entry.namespace, entry.user, entry.created, done, True,
                                              cost_of(status.get("cost")))
            for scope in self._scopes(entry):
                self.recent_of.setdefault(scope, set()).add(entry.uid)
        if was_active:
            self._kick(entry.namespace)

    def forget(self, uid: str) -> None:
        """A task is gone (deleted): it counts no more as unfinished (the mirror keeps its cost)."""
        entry = self.entries.pop(uid, None)
        if entry is not None:
            was_active = entry.state == "active"
            self._leave(entry)
            if was_active:
                self._kick(entry.namespace)

    # --- the figures --------------------------------------------------------------------------

    async def figures(self, scope: Scope, now: datetime) -> Figures:
        """The scope's counts from the mirror, read at most every FIGURES_SECONDS. Older figures of the
        same day are used while a fresh read runs in the background (what changed since is in memory:
        the watch's admitted tasks and the finished ones kept in `recent`), so no check waits for it."""
        day = day_start(now)
        cached = self.figures_cache.get(scope)
        if cached is not None and cached.day == day:
            if time.monotonic() - cached.at >= FIGURES_SECONDS and scope not in self._refreshing:
                self._refreshing.add(scope)
                asyncio.get_running_loop().create_task(self._refresh(scope, now))
            return cached
        return await self._read(scope, now)

    async def _refresh(self, scope: Scope, now: datetime) -> None:
        try:
            await self._read(scope, now)
        except Exception as exc:  # noqa: BLE001 - MongoDB away: the older figures stand, the next check tries again
            log.info("quota figures of %s/%s could not be read: %s", scope[0], scope[1] or "*", exc)
        finally:
            self._refreshing.discard(scope)

    async def _read(self, scope: Scope, now: datetime) -> Figures:
        day, month = day_start(now), month_start(now)
        at = time.monotonic()
        known = set(self.entries) | {uid for uid, f in self.recent.items() if f.retired is None}
        ns, user = scope

        def read() -> tuple[list[str], list[dict[str, Any]]]:
            mirror = self.mirror.open_mirror()
            return (mirror.admitted_since(namespace=ns, user_id=user, since=day),
                    mirror.usage_records(namespace=ns, user_id=user, since=month, until=None))
        today_uids, records = await asyncio.to_thread(read)
        cost: dict[str, Decimal] = {}
        for record in records:
            if str(record.get("_id")) in known:
                continue
            for currency, amount in cost_of(record.get("cost")).items():
                cost[currency] = cost.get(currency, Decimal(0)) + amount
        figures = Figures(sum(1 for uid in today_uids if uid not in known), cost, day, month, at)
        self.figures_cache[scope] = figures
        return figures

    def used(self, scope: Scope, figures: Figures | None, currency: str | None) -> tuple[int, int, Decimal]:
        """(admitted and unfinished, admitted today, cost this month in `currency`) of a scope."""
        active = self.active.get(scope, set())
        today = 0
        cost = Decimal(0)
        if figures is not None:
            day, month = figures.day, figures.month
            today = figures.today + self.active_days.get(scope, Counter()).get(day.date(), 0)
            for uid in self.recent_of.get(scope, ()):
                f = self.recent[uid]
                if f.retired is not None and figures.at > f.retired:
                    continue                # the figures read since count it
                today += f.created >= day
                if currency is not None and f.completed >= month:
                    cost += f.cost.get(currency, Decimal(0))
            if currency is not None:
                cost += figures.cost.get(currency, Decimal(0)) + self.estimates.get(scope, {}).get(currency, Decimal(0))
        return len(active), today, cost

    # --- the decision ---------------------------------------------------------------------------

    async def admit(self, task: GenerationTask, raw: Mapping[str, Any] | None = None) -> Wait | Exceeded | None:
        """May the task start now? None: yes (reserved: it counts from now on); Wait: not yet (its
        concurrency quota is full, or tasks wait ahead of it); Exceeded: it would exceed a budget."""
        quotas = self.of(task.namespace, task.spec.user_id)
        if not quotas:
            return None
        await self.synced.wait()
        entry = self.entries.get(task.uid)
        if entry is None:
            self.saw(raw if raw is not None else task.model_dump(by_alias=True, mode="json"))
            entry = self.entries.get(task.uid)
        now = datetime.now(UTC)
        estimate = estimate_cost(task.spec, self.prices)
        figures: dict[Scope, Figures] = {}
        for q in quotas:
            if q.spec.limits.tasks_per_day is not None or q.spec.limits.cost_per_month is not None:
                scope = (q.namespace, q.spec.user)
                if scope not in figures:
                    figures[scope] = await self.figures(scope, now)
        quotas = self.of(task.namespace, task.spec.user_id)      # as they are after the pause
        if entry is None or entry.state == "active":
            return None
        # from here on no pause: what is checked is what is reserved
        for q in sorted(quotas, key=lambda q: q.name):
            limit = q.spec.limits.concurrent
            if limit is None:
                continue
            scope = (q.namespace, q.spec.user)
            active = len(self.active.get(scope, ()))
            ahead = bisect.bisect_left(self.waiting.get(scope, []), (entry.key, entry.uid))
            if active + ahead >= limit:
                return Wait(QUOTA_WAIT, f"quota {q.name}: the limit of {limit} concurrent task(s) of {q.who} is "
                                         "reached, so this task waits; it starts when one finishes (highest "
                                         "priority first, then oldest; docs/tenants.md)")
        for q in sorted(quotas, key=lambda q: q.name):
            scope = (q.namespace, q.spec.user)
            limits = q.spec.limits
            budget = limits.cost_per_month
            _, today, spent = self.used(scope, figures.get(scope), budget.currency if budget else None)
            if limits.tasks_per_day is not None and today + 1 > limits.tasks_per_day:
                return Exceeded(q.name, daily_message(q.name, used=today, limit=limits.tasks_per_day))
            if budget is not None and estimate is not None and estimate.currency == budget.currency:
                cap = Decimal(budget.amount)
                if spent + estimate.amount > cap:
                    return Exceeded(q.name, budget_message(q.name, spent=spent, limit=cap, currency=budget.currency,
                                                           estimate=estimate.amount))
        entry.estimate = estimate
        entry.reserved_rv = entry.rv
        self._enter(entry, "active")
        return None

    # --- waking waiting tasks -------------------------------------------------------------------

    def _kick(self, namespace: str, released: bool = False) -> None:
        """Room may have freed in the namespace: look again at the first waiting tasks of its quotas
        (`released`: and at those no concurrency quota holds any more: theirs was deleted or lifted)."""
        if self.wake is None or not self.synced.is_set():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for uid in self._next(namespace) + (self._released(namespace) if released else []):
            entry = self.entries.get(uid)
            if entry is None or uid in self._waking:
                continue
            self._waking.add(uid)
            loop.create_task(self._wake(entry))

    def _next(self, namespace: str) -> list[str]:
        """The waiting tasks that fit in the room the namespace's concurrency quotas have now."""
        out: list[str] = []
        for q in self.quotas.get(namespace, {}).values():
            scope = (namespace, q.spec.user)
            items = self.waiting.get(scope, [])
            if not items:
                continue
            limit = q.spec.limits.concurrent
            room = len(items) if limit is None else max(0, limit - len(self.active.get(scope, ())))
            out += [uid for _, uid in items[:room]]
        return list(dict.fromkeys(out))

    def _released(self, namespace: str) -> list[str]:
        """The waiting tasks of the namespace that no concurrency quota applies to (any more)."""
        held: dict[str, bool] = {}
        out = []
        for _, uid in self.waiting.get((namespace, None), []):
            entry = self.entries[uid]
            if entry.user not in held:
                held[entry.user] = any(q.spec.limits.concurrent is not None for q in self.of(namespace, entry.user))
            if not held[entry.user]:
                out.append(uid)
        return out

    async def _wake(self, entry: Entry) -> None:
        try:
            assert self.wake is not None
            await self.wake(entry.namespace, entry.name)
        except Exception as exc:  # noqa: BLE001 - the status loop kicks again
            log.info("could not look again at waiting task %s/%s: %s", entry.namespace, entry.name, exc)
        finally:
            self._waking.discard(entry.uid)

    # --- start-up and the status loop -------------------------------------------------------------

    async def sync(self, quotas: Iterable[Mapping[str, Any]], pages: Any) -> None:
        """Seed from one listing of the quotas and of the unfinished tasks, before any task is admitted."""
        for raw in quotas:
            self.saw_quota(raw)
        async for page in pages:
            for raw in page:
                self.saw(raw)
        self.synced.set()
        # tasks that waited while no operator ran: room may have freed, or their quota gone, since
        for ns in {e.namespace for e in self.entries.values() if e.state == "waiting"}:
            self._kick(ns, released=True)

    def status_of(self, quota: GenerationQuota, figures: Figures | None) -> dict[str, Any]:
        """The quota's status (without observedAt) as the counts stand."""
        scope = (quota.namespace, quota.spec.user)
        limits = quota.spec.limits
        budget = limits.cost_per_month
        active, today, spent = self.used(scope, figures, budget.currency if budget else None)
        used: dict[str, Any] = {"concurrent": active, "waiting": len(self.waiting.get(scope, ())), "tasksToday": today}
        status: dict[str, Any] = {"concurrent": ratio(active, limits.concurrent),
                                  "today": ratio(today, limits.tasks_per_day)}
        if budget is not None:
            used["costThisMonth"] = {"amount": money(spent), "currency": budget.currency}
            status["month"] = f"{money(spent)}/{money(Decimal(budget.amount))} {budget.currency}"
        else:
            status["month"] = "-"
        status["used"] = used
        status["observedGeneration"] = quota.metadata.generation
        return status

    async def write_statuses(self) -> int:
        """Each quota's status, where it changed (or is older than REFRESH_STATUS_SECONDS)."""
        written = 0
        now = datetime.now(UTC)
        for ns, quotas in list(self.quotas.items()):
            for quota in list(quotas.values()):
                scope = (ns, quota.spec.user)
                try:
                    figures = await self.figures(scope, now)
                except Exception as exc:  # noqa: BLE001 - MongoDB away: the concurrency counts still show
                    log.info("quota %s/%s: the mirror cannot be read (%s)", ns, quota.name, exc)
                    figures = None
                status = self.status_of(quota, figures)
                last = self.written.get((ns, quota.name))
                if last is not None and last[0] == status and time.monotonic() - last[1] < REFRESH_STATUS_SECONDS:
                    continue
                try:
                    await self.kube.patch_quota_status(ns, quota.name, {
                        **status, "observedAt": now.isoformat().replace("+00:00", "Z")})
                except KubeError as exc:
                    if exc.not_found:
                        continue
                    raise
                self.written[(ns, quota.name)] = (status, time.monotonic())
                written += 1
        return written

    def prune(self, healthy: bool) -> None:
        """The finished tasks the mirror has had for RECENT_SECONDS retire (the next figures read counts
        them); a retired one goes once every figures of its scopes were read after it retired."""
        if not healthy:
            return
        now = time.monotonic()
        for uid, f in list(self.recent.items()):
            scopes = ((f.namespace, None), (f.namespace, f.user))
            if f.retired is None:
                if now - f.seen > RECENT_SECONDS:
                    f.retired = now
            elif all(sc not in self.figures_cache or self.figures_cache[sc].at > f.retired for sc in scopes):
                del self.recent[uid]
                for sc in scopes:
                    self.recent_of.get(sc, set()).discard(uid)

    async def loop(self) -> None:
        """Every STATUS_SECONDS: the quotas' status, the waiting tasks that fit looked at, old figures pruned."""
        await self.synced.wait()
        while True:
            await asyncio.sleep(STATUS_SECONDS)
            try:
                for ns in list(self.quotas):
                    self._kick(ns)
                await self.write_statuses()
                if time.monotonic() - self._pruned > 10:
                    self.prune(bool(getattr(self.mirror, "healthy", True)))
                    self._pruned = time.monotonic()
                    for ns in list(self.quotas):
                        self._kick(ns, released=True)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("the quota status round failed")
