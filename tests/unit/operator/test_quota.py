"""The operator's quota decisions in memory: order of admission, a burst, reservations, a restart's seed.

The decisions are pure bookkeeping over what the watch shows (the integration tests in
tests/integration/operator/test_quota.py run them against the real cluster); here the mirror's
figures come from a stand-in with the same two reads."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gentask.domain.pricing import PriceTable, parse_overrides
from gentask.domain.task import GenerationTask


def _load_quota_module():
    """gentask/operator/quota.py on its own: importing the gentask.operator package imports Kopf (its
    handlers), whose log handler on kopf.objects then reads the `settings` extra of every record, which
    tests/unit/test_logs.py fills with a gentask Settings. quota.py itself imports nothing of Kopf."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "gentask" / "operator" / "quota.py"
    spec = importlib.util.spec_from_file_location("gentask_operator_quota_alone", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


quota_module = _load_quota_module()
Exceeded, Quotas, Wait = quota_module.Exceeded, quota_module.Quotas, quota_module.Wait

PRICES = PriceTable(parse_overrides('{"fake/fake-image": {"perImage": "1.00"}}'))
_rv = itertools.count(100)
NOW = datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Mirror:
    """The two reads the quotas make of the MongoDB mirror, from lists."""

    def __init__(self, admitted: list[str] | None = None, records: list[dict[str, Any]] | None = None) -> None:
        self.admitted, self.records, self.reads = admitted or [], records or [], 0
        self.healthy = True

    def open_mirror(self) -> Mirror:
        return self

    def admitted_since(self, **_: Any) -> list[str]:
        self.reads += 1
        return list(self.admitted)

    def usage_records(self, **_: Any) -> list[dict[str, Any]]:
        return list(self.records)


def raw(name: str, *, phase: str | None = None, reason: str | None = None, priority: str = "default",
        user: str = "alice", created: str = "2026-12-01T10:00:00Z", attempts: int | None = None,
        cost: dict | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {k: v for k, v in (("phase", phase), ("reason", reason), ("attempts", attempts),
                                                ("cost", cost)) if v is not None}
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": str(next(_rv)),
                         "creationTimestamp": created},
            "spec": {"type": "image", "provider": "fake", "model": "fake-image", "prompt": name, "priority": priority,
                     "userID": user}, "status": status}


def quota(name: str, user: str | None = None, **limits: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"limits": limits}
    if user:
        spec["user"] = user
    return {"metadata": {"name": name, "namespace": "ns", "generation": 1}, "spec": spec}


async def quotas_with(*objects: dict[str, Any], mirror: Mirror | None = None,
                      tasks: list[dict] | None = None) -> Quotas:
    q = Quotas(None, None, mirror or Mirror(), PRICES)  # type: ignore[arg-type]

    async def pages():
        yield tasks or []
    await q.sync(list(objects), pages())
    return q


async def admit(q: Quotas, obj: dict[str, Any]) -> Wait | Exceeded | None:
    q.saw(obj)
    return await q.admit(GenerationTask.model_validate(obj), obj)


async def test_a_concurrency_limit_admits_up_to_it_in_a_burst_and_the_rest_wait():
    q = await quotas_with(quota("two", concurrent=2))
    got = await asyncio.gather(*(admit(q, raw(f"t{i}")) for i in range(4)))
    assert got[:2] == [None, None]
    assert all(isinstance(v, Wait) and v.reason == "QuotaWait" and "quota two" in v.message for v in got[2:])
    assert len(q.active[("ns", None)]) == 2


async def test_room_goes_to_the_highest_priority_then_the_oldest():
    q = await quotas_with(quota("one", concurrent=1), tasks=[raw("running", phase="Running", attempts=1)])
    low = raw("low", priority="low", reason="QuotaWait", phase="Queued", created="2026-12-01T09:00:00Z")
    old = raw("old", reason="QuotaWait", phase="Queued", created="2026-12-01T09:30:00Z")
    young = raw("young", reason="QuotaWait", phase="Queued", created="2026-12-01T09:40:00Z")
    crit = raw("crit", priority="critical", reason="QuotaWait", phase="Queued", created="2026-12-01T11:00:00Z")
    for t in (low, old, young, crit):
        assert isinstance(await admit(q, t), Wait)
    assert q._next("ns") == []                                  # no room
    q.saw(raw("running", phase="Succeeded", attempts=1))
    assert q._next("ns") == ["uid-crit"]
    for t in (low, old, young):                                 # looked at first, they still wait their turn
        assert isinstance(await admit(q, t), Wait)
    assert await admit(q, crit) is None
    q.saw(raw("crit", phase="Succeeded", priority="critical", attempts=1, created="2026-12-01T11:00:00Z"))
    assert q._next("ns") == ["uid-old"]


async def test_a_user_quota_counts_only_that_users_tasks():
    q = await quotas_with(quota("alice-one", user="alice", concurrent=1))
    assert await admit(q, raw("a1")) is None
    assert isinstance(await admit(q, raw("a2")), Wait)
    assert await admit(q, raw("b1", user="bob")) is None


async def test_a_budget_reserves_each_admitted_estimate_so_a_burst_cannot_overspend():
    spent = [{"_id": "old", "cost": {"amount": "1", "currency": "XTS"}}]
    q = await quotas_with(quota("budget", costPerMonth={"amount": "2.5", "currency": "XTS"}),
                          mirror=Mirror(records=spent))
    first, second = await asyncio.gather(admit(q, raw("x")), admit(q, raw("y")))
    assert first is None and isinstance(second, Exceeded)
    assert second.message.startswith("quota budget: 0.50 XTS of 2.50 XTS left this month")
    # the admitted one finishes costing less than its estimate: what it really cost counts
    q.saw(raw("x", phase="Succeeded", attempts=1, cost={"amount": "0.2", "currency": "XTS"}))
    assert await admit(q, raw("z")) is None                       # 1 + 0.2 + 1 <= 2.5


async def test_tasks_a_day_count_the_mirror_the_running_and_the_just_finished_once_each():
    mirror = Mirror(admitted=["uid-done", "uid-run"])               # the mirror has the running one too
    q = await quotas_with(quota("daily", tasksPerDay=3), mirror=mirror,
                          tasks=[raw("run", phase="Running", attempts=1, created=NOW)])
    assert await admit(q, raw("new", created=NOW)) is None       # done, run, new: 3
    refused = await admit(q, raw("more", created=NOW))
    assert isinstance(refused, Exceeded) and refused.message.startswith("quota daily: 0 of 3 tasks left today")
    assert mirror.reads == 1                                        # the figures are cached


async def test_a_finished_task_counts_once_while_the_mirror_catches_up_and_after_it_retires(monkeypatch):
    module = quota_module
    mirror = Mirror()
    q = await quotas_with(quota("daily", tasksPerDay=10), mirror=mirror, tasks=[])
    scope = ("ns", None)
    assert await admit(q, raw("a", created=NOW)) is None
    q.saw(raw("a", phase="Succeeded", attempts=1, created=NOW))
    figures = await q.figures(scope, datetime.now(UTC))
    assert q.used(scope, figures, None)[1] == 1                     # from `recent`; the mirror lacks it yet
    mirror.admitted = ["uid-a"]                                     # the mirror has it now
    monkeypatch.setattr(module, "RECENT_SECONDS", 0.0)
    q.prune(True)                                                   # retires: the next read counts it
    assert q.used(scope, q.figures_cache[scope], None)[1] == 1      # the old figures: still from `recent`
    fresh = await q._read(scope, datetime.now(UTC))
    assert fresh.today == 1 and q.used(scope, fresh, None)[1] == 1  # now from the mirror, once
    q.prune(True)
    assert "uid-a" not in q.recent and q.used(scope, fresh, None)[1] == 1


async def test_a_restart_seeds_the_same_counts_from_the_listing():
    # Queued with QuotaWait waits; so does Pending with QuotaWait, how earlier operators let a task wait
    listing = [raw("a", phase="Running", attempts=1), raw("b", phase="Queued", attempts=0),
               raw("c", phase="Queued", reason="QuotaWait"), raw("d", phase="Pending", reason="QuotaWait")]
    q = await quotas_with(quota("two", concurrent=2), tasks=listing)
    status = q.status_of(q.quotas["ns"]["two"], None)
    assert status["concurrent"] == "2/2" and status["used"]["waiting"] == 2
    assert isinstance(await admit(q, listing[2]), Wait)
    assert isinstance(await admit(q, listing[3]), Wait)


async def test_a_queued_task_counts_as_admitted_unless_it_waits_for_room():
    q = await quotas_with(quota("one", concurrent=1))
    q.saw(raw("w", phase="Queued", reason="QuotaWait"))
    assert q.entries["uid-w"].state == "waiting" and not q.active.get(("ns", None))
    q.saw(raw("w", phase="Queued", reason="JobCreated", attempts=0))       # admitted: its Job made
    assert q.entries["uid-w"].state == "active" and q.active[("ns", None)] == {"uid-w"}


async def test_tasks_left_waiting_while_no_operator_ran_are_looked_at_once_synced():
    woken: list[str] = []
    q = Quotas(None, None, Mirror(), PRICES)  # type: ignore[arg-type]

    async def wake(ns: str, name: str) -> None:
        woken.append(name)
    q.wake = wake

    async def pages():       # their quota was deleted while the operator was down: no quota is listed
        yield [raw("w1", phase="Queued", reason="QuotaWait"), raw("w2", phase="Pending", reason="QuotaWait")]
    await q.sync([], pages())
    await asyncio.sleep(0)
    assert sorted(woken) == ["w1", "w2"]


async def test_an_older_copy_of_a_task_does_not_undo_what_came_since():
    q = await quotas_with(quota("one", concurrent=1))
    pending = raw("t")
    assert await admit(q, pending) is None
    queued = raw("t", phase="Queued", attempts=0)
    q.saw(queued)
    q.saw(pending)                       # a resync's listing from before: ignored
    assert q.entries["uid-t"].state == "active"
    assert Decimal(1) == q.estimates[("ns", None)]["XTS"]


async def test_tasks_waiting_for_a_deleted_quota_are_woken():
    q = await quotas_with(quota("zero", concurrent=0))
    woken: list[str] = []

    async def wake(ns: str, name: str) -> None:
        woken.append(name)
    q.wake = wake
    assert isinstance(await admit(q, raw("w", phase="Queued", reason="QuotaWait")), Wait)
    q.saw_quota(quota("zero", concurrent=0), deleted=True)
    await asyncio.sleep(0)
    assert woken == ["w"]
    assert await admit(q, raw("w", phase="Queued", reason="QuotaWait")) is None
