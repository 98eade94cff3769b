"""The operator's quota check per task, with 10,000 tasks in the namespace: CPU a check, a refresh, the seed.

    python bench/quota.py [--finished 10000] [--unfinished 10000] [--checks 2000] [--mongo-url URL]

In process, against the real parts the operator uses: gentask.operator.quota.Quotas (what every task's
start calls) over the local cluster's FerretDB (PostgreSQL), in a database of its own:
- the mirror is seeded with --finished records of the namespace (finished this UTC month and day,
  each with a cost, ten users), through TaskMirror.insert_many of record_from_task output;
- the Quotas are seeded (Quotas.sync, what the operator does at start-up before its watches) with
  --unfinished tasks of the same namespace: a fifth Running, the rest waiting (QuotaWait);
- then --checks new tasks are admitted one after another (Quotas.saw + Quotas.admit, as
  reconcile.start does) under each quota set below; CPU is time.process_time of the whole process
  (the check is synchronous Python apart from the mirror read), divided by the checks. The mirror's
  figures are read once a scope per FIGURES_SECONDS: that read is timed on its own (wall and CPU),
  and the checks run with it cached, as they do between two reads.
Without --mongo-url it uses the local cluster of GENTASK_DEVCLUSTER_ROOT (or .devcluster), started
if none runs, and stopped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devcluster/ lives in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import percentile, write_section
from devcluster import DevCluster
from gentask.config import Settings
from gentask.domain.pricing import PriceTable, parse_overrides
from gentask.domain.task import GenerationTask
from gentask.operator.quota import Quotas
from gentask.storage import MirrorWriter, TaskMirror, connect, record_from_task

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "tasks"
USERS = 10
PRICES = PriceTable(parse_overrides('{"fake/fake-image": {"perImage": "0.01"}}'))


def task(i: int, phase: str, created: datetime, reason: str | None = None, user: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if reason:
        status["reason"] = reason
    if phase in ("Running", "Succeeded"):
        status["attempts"] = 1
    if phase == "Succeeded":
        status["completionTime"] = (created + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
        status["cost"] = {"amount": "0.01", "currency": "XTS", "totals": [{"amount": "0.01", "currency": "XTS"}]}
    return {"apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
            "metadata": {"name": f"t{i:06d}", "namespace": NAMESPACE, "uid": str(uuid.uuid4()),
                         "resourceVersion": str(1000 + i),
                         "creationTimestamp": created.isoformat().replace("+00:00", "Z")},
            "spec": {"type": "image", "provider": "fake", "model": "fake-image", "prompt": f"task {i}",
                     "priority": ("critical", "default", "low")[i % 3],
                     "userID": f"u{(user if user is not None else i) % USERS}",
                     "params": {"size": "64x64"}},
            "status": status}


def quota(name: str, user: str | None, **limits: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"limits": limits}
    if user:
        spec["user"] = user
    return {"metadata": {"name": name, "namespace": NAMESPACE, "generation": 1}, "spec": spec}


QUOTA_SETS: dict[str, list[dict[str, Any]]] = {
    "concurrency (namespace, full: every check waits)": [quota("ns-concurrent", None, concurrent=2000)],
    "tasks a day + cost a month (per user)": [
        quota(f"u{u}-budget", f"u{u}", tasksPerDay=1_000_000, costPerMonth={"amount": "100000", "currency": "XTS"})
        for u in range(USERS)],
    "all three (namespace) + budget (per user)": [
        quota("ns-all", None, concurrent=100_000, tasksPerDay=1_000_000,
              costPerMonth={"amount": "100000", "currency": "XTS"}),
        *[quota(f"u{u}-budget", f"u{u}", costPerMonth={"amount": "100000", "currency": "XTS"}) for u in range(USERS)]],
}


async def run(mongo_url: str, finished: int, unfinished: int, checks: int) -> str:
    db_name = f"bench_quota_{uuid.uuid4().hex[:6]}"
    url = mongo_url.rsplit("/", 1)[0] + "/" + db_name
    settings = Settings(mongo_url=url)
    db = connect(settings)
    mirror = TaskMirror(db)
    mirror.ensure_indexes()
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    started = time.monotonic()
    records = [record_from_task(task(i, "Succeeded", today + timedelta(seconds=i % 3600))) for i in range(finished)]
    for at in range(0, len(records), 5000):
        mirror.insert_many(records[at:at + 5000])
    seeded_mirror = time.monotonic() - started
    live = [task(finished + i, "Running" if i % 5 == 0 else "Queued", today + timedelta(seconds=i % 3600),
                 None if i % 5 == 0 else "QuotaWait") for i in range(unfinished)]
    writer = MirrorWriter(settings)
    rows = []
    try:
        for label, objects in QUOTA_SETS.items():
            q = Quotas(settings, None, writer, PRICES)  # type: ignore[arg-type]

            async def pages() -> Any:
                yield live
            cpu0, wall0 = time.process_time(), time.monotonic()
            await q.sync(objects, pages())
            seed_cpu, seed_wall = time.process_time() - cpu0, time.monotonic() - wall0
            scopes = {(NAMESPACE, o["spec"].get("user")) for o in objects}
            cpu0, wall0 = time.process_time(), time.monotonic()
            for scope in scopes:
                await q.figures(scope, now)
            read_cpu, read_wall = (time.process_time() - cpu0) / len(scopes), (time.monotonic() - wall0) / len(scopes)
            news = [task(10_000_000 + i, "Pending", now, user=i) for i in range(checks)]
            parsed = [GenerationTask.model_validate(t) for t in news]
            walls = []
            outcomes: dict[str, int] = {}
            cpu0 = time.process_time()
            for raw, typed in zip(news, parsed, strict=True):
                t0 = time.perf_counter()
                q.saw(raw)
                verdict = await q.admit(typed, raw)
                walls.append(time.perf_counter() - t0)
                word = "admitted" if verdict is None else type(verdict).__name__.lower()
                outcomes[word] = outcomes.get(word, 0) + 1
            per_check = (time.process_time() - cpu0) / checks
            rows.append(f"| {label} | {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))} | "
                        f"{per_check * 1e6:.0f} µs | {percentile(walls, 50) * 1e6:.0f} µs | "
                        f"{percentile(walls, 99) * 1e6:.0f} µs | "
                        f"{read_wall * 1e3:.0f} ms ({read_cpu * 1e3:.0f} ms CPU) | "
                        f"{seed_wall:.2f} s ({seed_cpu:.2f} s CPU) |")
    finally:
        await writer.stop()
        db.client.drop_database(db_name)
    load = os.getloadavg()[0]
    return (f"Load average (1 min) at the end: {load:.1f} on {os.cpu_count()} cores; other work on the machine "
            f"raises these figures. Mirror: {finished:,} finished records of the namespace (this month, today, each "
            f"with a cost), seeded in {seeded_mirror:.1f} s; watch: {unfinished:,} unfinished tasks (a fifth Running, "
            f"the rest QuotaWait); {checks:,} checks of new tasks a quota set.\n\n"
            "| Quotas | Verdicts | CPU a check | p50 | p99 | mirror read a scope (every 10 s at most) "
            "| seed at start-up |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "A check is `Quotas.saw` + `Quotas.admit` (reconcile.start's call): the waiting order is a sorted list "
            "a scope (bisect), the admitted tasks a set a scope with their estimates summed and their creation days "
            "counted as they come and go, and the finished tasks of the last minutes indexed by scope, so a check "
            "walks no list of tasks. The mirror read (two queries a scope: today's admitted uids and the month's "
            "costs) grows with the scope's records on FerretDB v1 (it decodes each of them); it happens at most "
            "every 10 s a scope and in the background: a check uses the figures it has meanwhile; only a scope's "
            "very first read (start-up, or a new UTC day) makes its first task wait for it.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=10_000)
    parser.add_argument("--unfinished", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--mongo-url")
    args = parser.parse_args()
    dev = None
    url = args.mongo_url
    if not url:
        dev = DevCluster(Path(os.environ.get("GENTASK_DEVCLUSTER_ROOT", ROOT / ".devcluster")))
        state = dev.running()
        if state is None:
            state = dev.up(timeout=180)
        else:
            dev = None
        url = state.mongo_url
    try:
        body = asyncio.run(run(url, args.finished, args.unfinished, args.checks))
    finally:
        if dev is not None:
            dev.down()
    command = "python bench/quota.py " + " ".join(sys.argv[1:])
    write_section("Quota check (operator)", command.strip(), body)
    print(body)


if __name__ == "__main__":
    main()
