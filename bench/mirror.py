"""The MongoDB task mirror at scale: list pages, result reads, upserts/s and a sustained task stream.

    python bench/mirror.py [--sizes 100000] [--budget 120] [--upserts 1000] [--sustain SECONDS]
                           [--mongo-url URL]

For each size: a fresh database is seeded with that many realistic task records (TaskMirror.insert_many
of record_from_task output, with what lists read, 10,000 a batch; users hold 2,000 records each; the
seeding time is reported), then, each until its samples are done or --budget seconds have passed:
- list: TaskMirror.list as the API's list endpoint calls it (one user, namespace, deleted included,
  20 a page, with the total): 100 newest pages (offset 0, users in turn) and 50 deeper ones (offsets
  20..1000);
- result: TaskMirror.get_by_name (what the API's result endpoint reads for a task the API server no
  longer has), 200 random tasks;
- upsert: --upserts changes through a MirrorWriter (the operator's and the API's writer: coalescing,
  guarded upserts, several uids at a time), half new tasks, half existing ones moving to Succeeded,
  timed from the first put until the writer has nothing pending; and 50 single TaskMirror.upsert calls;
- sustain (with --sustain SECONDS, on the largest size): 10 new tasks a second, each put to the writer
  as Pending, Queued, Running and Succeeded (0.2 s, 0.5 s and 3 s after it starts), for SECONDS; the
  writer's own lag (MirrorWriter.lag, what the operator exports as gentask_mirror_lag_seconds) and
  pending are read every 0.5 s, a list page and a result read every 2 s; at the end every task must be
  Succeeded in the mirror.
Without --mongo-url it uses the local cluster's FerretDB over its PostgreSQL (GENTASK_DEVCLUSTER_ROOT
or .devcluster; started if none runs, and stopped after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devcluster/ lives in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import percentile, write_section
from devcluster import DevCluster, postgres
from gentask.config import Settings
from gentask.storage import MirrorWriter, TaskMirror, connect, record_from_task
from gentask.storage.mirror import TIMELINE_SHARDS
from gentask.storage.mongo import is_ferretdb

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAMESPACE = "tasks"
PER_USER = 2000
NEWEST_PAGES = 100
DEEP_OFFSETS = range(20, 1001, 20)
RESULT_READS = 200
SINGLE_UPSERTS = 50
TASKS_PER_SECOND = 10
LIFECYCLE = ((0.0, "Pending"), (0.2, "Queued"), (0.5, "Running"), (3.0, "Succeeded"))


def task(uid: str, i: int, rv: int, phase: str, users: int, created: datetime | None = None) -> dict:
    created = created or T0 + timedelta(seconds=i)
    done = phase == "Succeeded"
    return {
        "metadata": {"name": f"img-{uid[-12:]}", "namespace": NAMESPACE, "uid": uid, "resourceVersion": str(rv),
                     "creationTimestamp": created.isoformat(), "annotations": {"ignored": "x" * 500}},
        "spec": {"type": ("image", "video", "text")[i % 3], "provider": "volcengine",
                 "model": "doubao-seedream-3-0-t2i-250415", "userID": f"user{i % users:04d}", "priority": "default",
                 "prompt": "a kitten playing in a garden, watercolour, soft morning light, high detail",
                 "params": {"size": "1024x1024", "responseFormat": "url", "seed": -1}},
        "status": {
            "phase": phase, "reason": "Completed" if done else "Started", "message": "",
            "attempts": 1, "servedBy": {"provider": "volcengine", "model": "doubao-seedream-3-0-t2i-250415"},
            "startTime": (created + timedelta(seconds=2)).isoformat(),
            "completionTime": (created + timedelta(seconds=14)).isoformat() if done else None,
            "conditions": [{"type": t, "status": "True", "reason": r, "message": "",
                            "lastTransitionTime": created.isoformat()}
                           for t, r in (("Accepted", "Validated"), ("Scheduled", "JobCreated"),
                                        ("Running", "Started"))],
            "result": {"images": [{"url": f"https://ark.example/{uid}.png", "artifact": f"{uid}/1/image-0.png",
                                   "mimeType": "image/png", "sizeBytes": 1_482_113, "sha256": "ab" * 32}],
                       "usage": {"generated_images": 1}} if done else None,
        },
    }


def seed(mirror: TaskMirror, n: int, users: int) -> list[str]:
    uids, batch = [], []
    for i in range(n):
        uid = str(uuid.UUID(int=i + 1))
        batch.append(record_from_task(task(uid, i, 10 + i, "Running" if i % 10 == 0 else "Succeeded", users)))
        uids.append(uid)
        if len(batch) == 10_000:
            mirror.insert_many(batch)
            batch = []
    mirror.insert_many(batch)
    return uids


def timed(samples: list[float], call) -> object:
    t = time.perf_counter()
    out = call()
    samples.append((time.perf_counter() - t) * 1000)
    return out


def load() -> float:
    return os.getloadavg()[0]


SERVERS: dict[str, int] = {}   # "ferretdb" and "postgres" (the postmaster) of the local cluster, when it is


def cpu() -> dict[str, float]:
    """CPU seconds so far of this process, the cluster's FerretDB and its PostgreSQL (every backend)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue

    def used(pid: int) -> float:
        fields = stats.get(pid)
        return (int(fields[11]) + int(fields[12])) / tick if fields else 0.0

    out = {"python": sum(os.times()[:2])}
    if "ferretdb" in SERVERS:
        out["ferretdb"] = used(SERVERS["ferretdb"])
    if "postgres" in SERVERS:
        master = SERVERS["postgres"]
        out["postgres"] = used(master) + sum(used(pid) for pid, f in stats.items() if int(f[1]) == master)
    return out


def cpu_per(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """CPU milliseconds per operation, by process."""
    return {k: (after[k] - before[k]) * 1000 / n for k in after if k in before}


def measure(db, n: int, budget: float, upserts: int) -> dict:
    users = max(1, n // PER_USER)
    mirror = TaskMirror(db)
    mirror.ensure_indexes()
    row: dict = {"n": n, "users": users, "loads": {"start": load()}}
    started = time.monotonic()
    uids = seed(mirror, n, users)
    row["seeded"], row["loads"]["seeded"] = time.monotonic() - started, load()

    def listed(user: int, offset: int) -> None:
        page, total = mirror.list(user_id=f"user{user % users:04d}", namespace=NAMESPACE, include_deleted=True,
                                  limit=20, offset=offset)
        per = len(range(user % users, n, users))
        assert total == per and len(page) == max(0, min(20, per - offset)), (total, len(page))
        assert [r["createdAt"] for r in page] == sorted((r["createdAt"] for r in page), reverse=True)

    row["newest"], row["deep"], row["results"] = [], [], []
    deadline = time.monotonic() + budget
    before = cpu()
    for k in range(NEWEST_PAGES):
        if k >= 5 and time.monotonic() > deadline:
            break
        timed(row["newest"], lambda k=k: listed(k, 0))
    row["list_cpu"] = cpu_per(before, cpu(), len(row["newest"]))
    row["parts"] = {}
    if mirror._timelined():                  # where a page's time goes: the timeline, then 20 records
        pages: dict[int, list[str]] = {}
        for part in ("timeline", "records"):
            samples: list[float] = []
            before = cpu()
            for k in range(20):
                if part == "timeline":
                    pages[k] = timed(samples, lambda k=k: mirror._timeline_page(
                        user_id=f"user{k % users:04d}", type=None, phases=None, namespace=NAMESPACE,
                        include_deleted=True, limit=20, offset=0))[0]
                else:
                    timed(samples, lambda k=k: [mirror.get(uid) for uid in pages[k]])
            row["parts"][part] = (samples, cpu_per(before, cpu(), 20))
    deadline = time.monotonic() + budget
    for k, offset in enumerate(DEEP_OFFSETS):
        if k >= 5 and time.monotonic() > deadline:
            break
        timed(row["deep"], lambda k=k, offset=offset: listed(k, offset))
    row["loads"]["lists"] = load()

    rng = random.Random(7)
    deadline = time.monotonic() + budget
    for k in range(RESULT_READS):
        if k >= 5 and time.monotonic() > deadline:
            break
        uid = rng.choice(uids)
        rec = timed(row["results"], lambda uid=uid: mirror.get_by_name(NAMESPACE, f"img-{uid[-12:]}"))
        assert rec is not None and rec["_id"] == uid
    row["loads"]["results"] = load()

    running = [(i, u) for i, u in enumerate(uids) if i % 10 == 0]
    objs = []
    for k in range(upserts):
        if k % 2:
            i, uid = running[k // 2 % len(running)]
            objs.append(task(uid, i, 10 * n + k, "Succeeded", users))
        else:
            objs.append(task(str(uuid.uuid4()), n + k, 10 * n + k, "Pending", users))
    before = cpu()
    row["writer_seconds"], row["writer_written"] = asyncio.run(write_through_writer(db, objs))
    row["writer_cpu"] = cpu_per(before, cpu(), len(objs))
    row["writer_n"] = len(objs)
    row["loads"]["writer"] = load()

    row["upserts"] = []
    deadline = time.monotonic() + budget
    for k in range(SINGLE_UPSERTS):
        if k >= 3 and time.monotonic() > deadline:
            break
        obj = task(str(uuid.uuid4()), n + upserts + k, 20 * n + k, "Pending", users)
        assert timed(row["upserts"], lambda obj=obj: mirror.upsert(obj)) is True
    row["loads"]["upserts"] = load()
    return row


async def write_through_writer(db, objs: list[dict]) -> tuple[float, int]:
    writer = MirrorWriter(database=lambda: db)
    writer.open_mirror()                       # connected (and indexes ensured) before the clock starts
    started = time.monotonic()
    for obj in objs:
        writer.put(obj)
    writer.start()
    while writer.pending:
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    await writer.stop()
    mirror = TaskMirror(db)
    sample = objs[:: max(1, len(objs) // 50)]
    written = sum(1 for o in sample if (mirror.get(o["metadata"]["uid"]) or {}).get("resourceVersion")
                  == int(o["metadata"]["resourceVersion"]))
    assert written == len(sample), f"only {written} of {len(sample)} sampled changes are in the mirror"
    return elapsed, len(objs)


async def sustain(db, n: int, seconds: float) -> dict:
    """TASKS_PER_SECOND new tasks a second through the writer, each with its LIFECYCLE of changes."""
    users = max(1, n // PER_USER)
    writer = MirrorWriter(database=lambda: db)
    mirror = writer.open_mirror()
    writer.start()
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    pendings: list[int] = []
    lists: list[float] = []
    results: list[float] = []
    uids: list[str] = []
    rv = [100 * n]
    loads = [load()]

    def change(uid: str, i: int, phase: str, created: datetime) -> None:
        rv[0] += 1
        writer.put(task(uid, i, rv[0], phase, users, created=created))

    async def sample() -> None:
        k = 0
        while True:
            await asyncio.sleep(0.5)
            lags.append(writer.lag)
            pendings.append(writer.pending)
            k += 1
            if k % 4 == 0 and uids:
                user, uid = k % users, uids[-50] if len(uids) > 50 else uids[0]
                await asyncio.to_thread(timed, lists, lambda user=user: mirror.list(
                    user_id=f"user{user:04d}", namespace=NAMESPACE, include_deleted=True, limit=20))
                await asyncio.to_thread(timed, results, lambda uid=uid: mirror.get_by_name(
                    NAMESPACE, f"img-{uid[-12:]}"))
            if k % 120 == 0:
                loads.append(load())

    sampler = asyncio.create_task(sample())
    started = loop.time()
    i = n * 10
    while loop.time() - started < seconds:
        due = started + len(uids) / TASKS_PER_SECOND
        await asyncio.sleep(max(0.0, due - loop.time()))
        uid, created = str(uuid.uuid4()), datetime.now(UTC)
        uids.append(uid)
        i += 1
        for delay, phase in LIFECYCLE:
            loop.call_later(delay, change, uid, i, phase, created)
    await asyncio.sleep(LIFECYCLE[-1][0] + 0.1)
    drain_started = loop.time()
    while writer.pending:
        await asyncio.sleep(0.05)
    drained = loop.time() - drain_started
    sampler.cancel()
    await writer.stop()
    loads.append(load())
    mirror = TaskMirror(db)
    behind = [u for u in uids[:: max(1, len(uids) // 200)] if (mirror.get(u) or {}).get("phase") != "Succeeded"]
    assert not behind, f"{len(behind)} sampled tasks are not Succeeded in the mirror: {behind[:3]}"
    return {"seconds": seconds, "tasks": len(uids), "changes": len(uids) * len(LIFECYCLE), "lags": lags,
            "pendings": pendings, "lists": lists, "results": results, "drained": drained, "loads": loads,
            "dropped": writer.dropped}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per measurement and size")
    parser.add_argument("--upserts", type=int, default=1000, help="changes put through the writer per size")
    parser.add_argument("--sustain", type=float, default=0.0, metavar="SECONDS",
                        help=f"then {TASKS_PER_SECOND} tasks/s through the writer for this long (largest size)")
    parser.add_argument("--mongo-url", default=None)
    args = parser.parse_args()
    dev, started, root = None, False, None
    url = args.mongo_url
    if url is None:
        root = Path(os.environ.get("GENTASK_DEVCLUSTER_ROOT", ROOT / ".devcluster"))
        dev = DevCluster(root, log=lambda *_: None)
        state = dev.running()
        if state is None:
            state, started = dev.up(), True
        url = state.mongo_url
        SERVERS.update({k: v for k, v in state.pids.items() if k in ("ferretdb", "postgres")})
    client = connect(Settings(mongo_url=url), timeout_ms=10_000, check=True).client
    rows, held = [], None
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        for n in sizes:
            db = client[f"bench_{uuid.uuid4().hex[:8]}"]
            try:
                server = server_name(db, root)
                row = measure(db, n, args.budget, args.upserts)
                print(summary(row), flush=True)
                if args.sustain and n == max(sizes):
                    held = asyncio.run(sustain(db, n, args.sustain))
                    print(sustain_summary(held), flush=True)
            finally:
                client.drop_database(db.name)
            rows.append(row)
    finally:
        if started and dev is not None:
            dev.down(quiet=True)
    command = f"python bench/mirror.py --sizes {args.sizes} --budget {args.budget:.0f} --upserts {args.upserts}"
    if args.sustain:
        command += f" --sustain {args.sustain:.0f}"
    write_section("MongoDB mirror", command, report(rows, held, server))


def _p(values: list[float], p: float) -> str:
    return f"{percentile(values, p):,.0f} ms" if values else "-"


def summary(r: dict) -> str:
    return (f"{r['n']} records: seeded in {r['seeded']:.0f} s; newest page p50 {_p(r['newest'], 50)} p99 "
            f"{_p(r['newest'], 99)}; deep page p99 {_p(r['deep'], 99)}; result p99 {_p(r['results'], 99)}; "
            f"writer {r['writer_n'] / r['writer_seconds']:.0f} upserts/s; single upsert "
            f"{1000 / (sum(r['upserts']) / len(r['upserts'])):.0f}/s; loads {r['loads']}; CPU ms per upsert "
            f"{_cpu(r['writer_cpu'])}, per newest page {_cpu(r['list_cpu'])}")


def _cpu(per: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in per.items()) or "-"


def sustain_summary(s: dict) -> str:
    return (f"sustain {s['seconds']:.0f} s: {s['tasks']} tasks, {s['changes']} changes; lag p50 "
            f"{percentile(s['lags'], 50):.2f} s p99 {percentile(s['lags'], 99):.2f} s max {max(s['lags']):.2f} s; "
            f"pending max {max(s['pendings'])}; list p99 {_p(s['lists'], 99)}; result p99 {_p(s['results'], 99)}; "
            f"loads {[round(x, 1) for x in s['loads']]}")


def server_name(db, root: Path | None) -> str:
    """MongoDB, or FerretDB and its version, with the PostgreSQL under it when it is the local cluster's."""
    if not is_ferretdb(db):
        return "MongoDB"
    name = f"FerretDB {db.client.admin.command('buildInfo')['ferretdbVersion']}"
    pg = postgres.connection(root) if root is not None else None
    return f"{name} (PostgreSQL {pg.psql('SHOW server_version').split()[0]})" if pg else name


def report(rows: list[dict], held: dict | None, server: str) -> str:
    lines = [f"Server: {server}; {os.cpu_count()} cores shared with other work (load averages below, 1 min). "
             f"Records are realistic GenerationTask mirrors (phase, conditions, result), {PER_USER:,} per user. "
             "list = TaskMirror.list as the API's list endpoint calls it (one user's page of 20, newest first, "
             "with its total); result = TaskMirror.get_by_name, the API's result read of a task the API server "
             "no longer has; upserts/s through the writer = MirrorWriter (coalescing, guarded, several uids at a "
             "time) from the first put until nothing is pending; single = one TaskMirror.upsert after another.",
             "",
             "| records | seeding | newest page p50 / p99 | deeper pages (20..1000) p50 / p99 | result p50 / p99 | "
             "upserts/s via writer | single upserts/s | load: seed, lists, results, writer |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mean = sum(r["upserts"]) / len(r["upserts"])
        ld = r["loads"]
        lines.append(
            f"| {r['n']:,} | {r['seeded']:.0f} s | {_p(r['newest'], 50)} / {_p(r['newest'], 99)} "
            f"({len(r['newest'])}) | {_p(r['deep'], 50)} / {_p(r['deep'], 99)} ({len(r['deep'])}) | "
            f"{_p(r['results'], 50)} / {_p(r['results'], 99)} ({len(r['results'])}) | "
            f"{r['writer_n'] / r['writer_seconds']:,.0f} ({r['writer_n']:,} in {r['writer_seconds']:.1f} s) | "
            f"{1000 / mean:,.0f} | {ld['seeded']:.1f}, {ld['lists']:.1f}, {ld['results']:.1f}, {ld['writer']:.1f} |")
    lines += ["", "CPU per operation (ms; this process, FerretDB, PostgreSQL with its backends), the share of the "
                  "two cores each one needs:", ""]
    for r in rows:
        lines.append(f"- {r['n']:,} records: an upsert through the writer {_cpu(r['writer_cpu'])}; a newest page "
                     f"{_cpu(r['list_cpu'])}.")
        if r["parts"]:
            (tl, tl_cpu), (rec, rec_cpu) = r["parts"]["timeline"], r["parts"]["records"]
            lines.append(f"  Of a newest page: reading, filtering, sorting and counting the user's {TIMELINE_SHARDS} "
                         f"timeline documents p50 {_p(tl, 50)}, CPU {_cpu(tl_cpu)}; its 20 records read one after "
                         f"another by _id p50 {_p(rec, 50)}, CPU {_cpu(rec_cpu)} (20 samples each).")
    if held is not None:
        lines += ["",
                  f"Sustained: {TASKS_PER_SECOND} new tasks/s for {held['seconds']:.0f} s on the largest size "
                  f"({held['tasks']:,} tasks, {held['changes']:,} changes: Pending, Queued, Running, Succeeded), "
                  "put to one MirrorWriter; its own lag and pending read every 0.5 s:",
                  "",
                  "| lag p50 | lag p99 | lag max | pending max | drain after the last change | list p99 (every 2 s) | "
                  "result p99 (every 2 s) | dropped | load during (min-max) |",
                  "|---|---|---|---|---|---|---|---|---|",
                  f"| {percentile(held['lags'], 50):.2f} s | {percentile(held['lags'], 99):.2f} s | "
                  f"{max(held['lags']):.2f} s | {max(held['pendings'])} | {held['drained']:.1f} s | "
                  f"{_p(held['lists'], 99)} ({len(held['lists'])}) | {_p(held['results'], 99)} "
                  f"({len(held['results'])}) | {held['dropped']} | "
                  f"{min(held['loads']):.1f}-{max(held['loads']):.1f} |"]
    if server.startswith("FerretDB"):
        lines += ["", FERRETDB_NOTE]
    return "\n".join(lines)


FERRETDB_NOTE = (
    "Where the time goes on FerretDB v1.24 over PostgreSQL (measured with PostgreSQL statement logging and "
    "EXPLAIN ANALYZE): FerretDB pushes only equality filters down, as JSONB containment (`_jsonb->'userID' @> "
    "'\"user0001\"'`), never a sort, a skip, a limit beside a filter, `$in`, `$or` or a range; the btree indexes "
    "it makes (on `_jsonb->'field'`) cannot serve `@>`, so every find, even by `_id`, is a sequential scan (30 ms "
    "at 10,000 records, 300 ms at 100,000), and FerretDB then decodes each matching document in Go and sorts, "
    "skips and counts there, at a cost per document: one user's 2,000 records took 4.6-7.8 s to fetch, 2,000 "
    "ten-field entries 0.3-0.6 s, the same 2,000 entries packed as strings into 10 documents 17-32 ms (load "
    "7-9). Hence: (1) the cluster's PostgreSQL gives each FerretDB btree index a GIN twin on its first field "
    "(an event trigger, devcluster/postgres.py GIN_TWINS) that serves `@>`: a read or guarded upsert by `_id` "
    "and a lookup by name read one row through an index; (2) on FerretDB the mirror keeps a timeline beside the "
    "records: per (namespace, user) " + str(TIMELINE_SHARDS) + " documents holding one short string per "
    "task (version, createdAt, type, "
    "phase) and the deleted and forgotten uids; a list reads the user's documents, filters, sorts and counts "
    "them in Python and reads the page's 20 records by `_id`, 4 at a time; (3) a write takes one lease (the "
    "task's timeline document's, which FerretDB updates by read-modify-write), writes the record, then the "
    "entry; the writer cuts a batch into parts of up to 50 uids, 4 parts at once, and a part takes all its "
    "leases with one insert, gives them back with one delete and writes the entries of one timeline document "
    "with one update (TaskMirror.upsert_many), each record still one guarded upsert. A list still costs in "
    "proportion to the user's tasks "
    "(strings, not documents). On MongoDB the mirror keeps no timeline: a list is one index range scan of the "
    "records plus a count, an upsert one guarded point update by `_id`; run `python bench/mirror.py "
    "--mongo-url mongodb://...` there.")


if __name__ == "__main__":
    main()
