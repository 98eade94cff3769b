"""The MongoDB task mirror: list latency over many records, and upserts per second.

    python bench/mirror.py [--sizes 1000,10000,100000] [--budget 600] [--mongo-url URL]

For each size: a fresh database is seeded with that many realistic task records (insert_many of
record_from_task output, 1,000 a batch; users hold 2,000 records each), then
- list: TaskMirror.list(user_id=..., limit=20, offset=o) for o = 0, 20, ..., 1000 (the page and
  its total count), until the offsets are done or --budget seconds have passed (at least 5);
- upsert: TaskMirror.upsert of half new tasks, half existing ones moving to Succeeded, one at a
  time, until 50 are done or --budget seconds have passed (at least 3).
Without --mongo-url it uses the local cluster's FerretDB over its PostgreSQL (GENTASK_DEVCLUSTER_ROOT
or .devcluster; started if none runs, and stopped after).
"""

from __future__ import annotations

import argparse
import os
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
from gentask.storage import TaskMirror, connect, record_from_task
from gentask.storage.mongo import is_ferretdb

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PER_USER = 2000
OFFSETS = range(0, 1001, 20)


def task(uid: str, i: int, rv: int, phase: str, users: int) -> dict:
    created = T0 + timedelta(seconds=i)
    return {
        "metadata": {"name": f"img-{uid[-12:]}", "namespace": "tasks", "uid": uid, "resourceVersion": str(rv),
                     "creationTimestamp": created.isoformat(), "annotations": {"ignored": "x" * 500}},
        "spec": {"type": ("image", "video", "text")[i % 3], "provider": "volcengine",
                 "model": "doubao-seedream-3-0-t2i-250415", "userID": f"user{i % users:04d}", "priority": "default",
                 "prompt": "a kitten playing in a garden, watercolour, soft morning light, high detail",
                 "params": {"size": "1024x1024", "responseFormat": "url", "seed": -1}},
        "status": {
            "phase": phase, "reason": "Completed" if phase == "Succeeded" else "Started", "message": "",
            "attempts": 1, "servedBy": {"provider": "volcengine", "model": "doubao-seedream-3-0-t2i-250415"},
            "startTime": (created + timedelta(seconds=2)).isoformat(),
            "completionTime": (created + timedelta(seconds=14)).isoformat() if phase == "Succeeded" else None,
            "conditions": [{"type": t, "status": "True", "reason": r, "message": "",
                            "lastTransitionTime": created.isoformat()}
                           for t, r in (("Accepted", "Validated"), ("Scheduled", "JobCreated"),
                                        ("Running", "Started"))],
            "result": {"images": [{"url": f"https://ark.example/{uid}.png", "artifact": f"{uid}/1/image-0.png",
                                   "mimeType": "image/png", "sizeBytes": 1_482_113, "sha256": "ab" * 32}],
                       "usage": {"generated_images": 1}} if phase == "Succeeded" else None,
        },
    }


def seed(mirror: TaskMirror, n: int, users: int) -> list[str]:
    uids, batch = [], []
    for i in range(n):
        uid = str(uuid.UUID(int=i + 1))
        record = record_from_task(task(uid, i, 10 + i, "Running" if i % 10 == 0 else "Succeeded", users))
        batch.append(record | {"tombstone": ""})
        uids.append(uid)
        if len(batch) == 1000:
            mirror.collection.insert_many(batch, ordered=False)
            batch = []
    if batch:
        mirror.collection.insert_many(batch, ordered=False)
    return uids


def measure(mirror: TaskMirror, n: int, budget: float) -> dict:
    users = max(1, n // PER_USER)
    started = time.monotonic()
    uids = seed(mirror, n, users)
    seeded = time.monotonic() - started

    lists: list[float] = []
    deadline = time.monotonic() + budget
    for k, offset in enumerate(OFFSETS):
        if k >= 5 and time.monotonic() > deadline:
            break
        t = time.perf_counter()
        page, total = mirror.list(user_id=f"user{k % users:04d}", limit=20, offset=offset)
        lists.append((time.perf_counter() - t) * 1000)
        assert total == n // users and len(page) == max(0, min(20, total - offset)), (total, len(page))

    upserts: list[float] = []
    deadline = time.monotonic() + budget
    running = [u for i, u in enumerate(uids) if i % 10 == 0]
    for k in range(50):
        if k >= 3 and time.monotonic() > deadline:
            break
        if k % 2:
            obj = task(running[k // 2], uids.index(running[k // 2]), 10 * n + k, "Succeeded", users)
        else:
            obj = task(str(uuid.uuid4()), n + k, 10 * n + k, "Pending", users)
        t = time.perf_counter()
        assert mirror.upsert(obj) is True
        upserts.append((time.perf_counter() - t) * 1000)
    return {"n": n, "users": users, "seeded": seeded, "lists": lists, "upserts": upserts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per measurement and size")
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
    client = connect(Settings(mongo_url=url), timeout_ms=10_000, check=True).client
    rows, load = [], os.getloadavg()[0]
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            db = client[f"bench_{uuid.uuid4().hex[:8]}"]
            try:
                mirror = TaskMirror(db)
                mirror.ensure_indexes()
                server = server_name(db, root)
                row = measure(mirror, n, args.budget)
            finally:
                client.drop_database(db.name)
            rows.append(row)
            print(f"{n} records: seeded in {row['seeded']:.0f} s; list p50 {percentile(row['lists'], 50):.0f} ms "
                  f"p99 {percentile(row['lists'], 99):.0f} ms over {len(row['lists'])}; "
                  f"upsert {1000 / (sum(row['upserts']) / len(row['upserts'])):.2f}/s over {len(row['upserts'])}",
                  flush=True)
    finally:
        if started and dev is not None:
            dev.down(quiet=True)
    loads = (load, os.getloadavg()[0])
    write_section("MongoDB mirror", f"python bench/mirror.py --sizes {args.sizes} --budget {args.budget:.0f}",
                  report(rows, server, loads))


def server_name(db, root: Path | None) -> str:
    """MongoDB, or FerretDB and its version, with the PostgreSQL under it when it is the local cluster's."""
    if not is_ferretdb(db):
        return "MongoDB"
    name = f"FerretDB {db.client.admin.command('buildInfo')['ferretdbVersion']}"
    pg = postgres.connection(root) if root is not None else None
    return f"{name} (PostgreSQL {pg.psql('SHOW server_version').split()[0]})" if pg else name


def report(rows: list[dict], server: str, loads: tuple[float, float]) -> str:
    lines = [f"Load average (1 min) at start and end: {loads[0]:.1f} and {loads[1]:.1f} on {os.cpu_count()} cores; "
             "other work on the machine shares them.",
             "",
             f"Server: {server}. Records are realistic GenerationTask mirrors (phase, conditions, result), "
             f"{PER_USER} per user; list = one page of 20 of one user, newest first, plus its total count.",
             "",
             "| records | list samples (offsets 0..1000) | list p50 | list p99 | upserts | upsert mean | upserts/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mean = sum(r["upserts"]) / len(r["upserts"])
        lines.append(f"| {r['n']:,} | {len(r['lists'])} | {percentile(r['lists'], 50):,.0f} ms | "
                     f"{percentile(r['lists'], 99):,.0f} ms | {len(r['upserts'])} | {mean:,.0f} ms | "
                     f"{1000 / mean:.2f} |")
    if server.startswith("FerretDB") and "PostgreSQL" in server:
        lines += ["",
                  "FerretDB v1.24 on PostgreSQL pushes a query's equality filters down as JSONB containment tests "
                  "(`_jsonb->'userID' @> '\"user0001\"'`). The mirror's indexes become PostgreSQL btree indexes on "
                  "the same expressions (`_jsonb->'userID'`, ...), which serve `=` but not `@>`, so every find and "
                  "count is a sequential scan in PostgreSQL (cheap: 0.1-0.2 s for 4,000 records) that returns every "
                  "matching record; FerretDB then turns each one into its own document type and sorts, skips and "
                  "limits in Go, once for the page and once more for the count. A list therefore costs in "
                  f"proportion to the records that match (one user's, at most {PER_USER:,} here), not to the whole "
                  "collection, and that decoding is where its time goes. A guarded upsert scans "
                  "for its `_id` in PostgreSQL, decodes only that record and writes through the `_id` index, so it "
                  "grows only with PostgreSQL's scan. On MongoDB the same queries are index range scans "
                  "(`user_created`, `user_type_created`, `user_phase_created_id`) and upserts are point updates by "
                  "`_id`; run `python bench/mirror.py --mongo-url mongodb://...` there for its figures."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
