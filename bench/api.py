"""The REST API under load: creates/s, result reads/s, and list latency over many mirrored tasks.

    python bench/api.py [--clients 64] [--seconds 20] [--list-sizes 1000,100000] [--list-budget 60]
                        [--open-create-rate 200] [--open-read-rate 1000] [--open-seconds 30] [--open-procs 1]

Starts the local cluster if none runs (in GENTASK_DEVCLUSTER_ROOT or .devcluster; stopped after),
runs `gentask api` as its own process (one uvicorn worker) on a fresh namespace and MongoDB
database, and drives it over loopback with --clients concurrent keep-alive clients (aiohttp),
each its own user with its own API key (rate limit and unfinished cap off):

- creates: each client POSTs image tasks (fake/fake-image) for --seconds, after a 2 s warm-up;
- reads:   each client GETs the results of its own tasks, round robin, for --seconds;
- open-loop creates and reads (after the closed-loop phases): --open-create-rate creates a second,
           then --open-read-rate result reads a second (of the tasks made so far), each for
           --open-warmup + --open-seconds, sent on a fixed schedule (slot i at t0 + i / rate) whether
           or not earlier answers came back, by --open-procs load-generator processes over
           --open-connections keep-alive connections; latency counts from each request's planned
           send time (no coordinated omission): p50/p99/p99.9/max, statuses, achieved rate, how far
           behind schedule the sends left, against the targets (TARGETS: p99 100 ms for creates at
           200/s, 50 ms for reads at 1,000/s). Each waits first until the API is idle. A rate of 0
           skips its phase, --seconds 0 the closed-loop phases, --list-sizes "" the lists;
- list:    for each of --list-sizes, the mirror is seeded up to that many tasks of one user
           (insert_many of record_from_task output), then one client pages through them (limit 20,
           random offsets up to 1,000) until --list-budget seconds have passed (at least one page).

For each phase it also reads the CPU seconds that the API process, kube-apiserver, etcd and
FerretDB spent (and, open loop, the seconds they waited for a CPU), to say where the time goes.
The figures go to docs/benchmarks.md ("## REST API"; not with --no-doc); the last line printed is
one JSON object with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devcluster/ lives in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import TICK, cpu_seconds, free_port, start_api, stat_cpu
from _report import percentile, write_section
from devcluster import DevCluster
from devcluster.system import bootstrap
from gentask.config import Settings
from gentask.storage import TaskMirror, connect, record_from_task

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"prompt": "a red fox in the snow", "provider": "fake", "model": "fake-image", "size": "64x64"})
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def runqueue_seconds(pid: int | str = "self") -> float:
    """Seconds the process's threads were runnable but waiting for a CPU (/proc/PID/task/*/schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def machine_seconds() -> tuple[float, float]:
    """(busy, stolen): CPU seconds all cores spent busy since boot (/proc/stat: user, nice, system, irq,
    softirq), and seconds the hypervisor ran something else while this machine's cores had work (steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / TICK, fields[7] / TICK


def cpu_by_command() -> dict[tuple[int, str], float]:
    """(pid, command name) -> CPU seconds of every process there is now."""
    seconds = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            name = text[text.index("(") + 1:text.rindex(")")]
            name = "kworker" if name.startswith("kworker/") else name    # kernel workers: one row
            seconds[(int(stat.parent.name), name)] = stat_cpu(text)
        except (OSError, IndexError, ValueError):
            pass
    return seconds


class CPU:
    """CPU seconds of named processes between start() and stop(); `waited`: their run-queue seconds;
    `machine`: busy seconds of all cores; `others`: the busiest other commands (what else shared the cores)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}
        self.waited_before: dict[str, float] = {}
        self.waited: dict[str, float] = {}
        self.machine = 0.0
        self.stolen = 0.0
        self.others: dict[str, float] = {}
        self.exclude: set[int] = set()        # counted elsewhere (the load generators)

    def start(self) -> None:
        self.before = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.waited_before = {n: runqueue_seconds(p) for n, p in self.pids.items()}
        self._machine_before = machine_seconds()
        self._all_before = cpu_by_command()

    def stop(self) -> dict[str, float]:
        self.waited = {n: runqueue_seconds(p) - self.waited_before[n] for n, p in self.pids.items()}
        busy, stolen = machine_seconds()
        self.machine, self.stolen = busy - self._machine_before[0], stolen - self._machine_before[1]
        mine = set(self.pids.values()) | {os.getpid()} | self.exclude
        others: dict[str, float] = {}
        for (pid, name), seconds in cpu_by_command().items():
            if pid not in mine:
                spent = seconds - self._all_before.get((pid, name), 0.0)
                if spent >= 0.05:
                    others[name] = others.get(name, 0.0) + spent
        self.others = dict(sorted(others.items(), key=lambda kv: -kv[1])[:6])
        return {n: cpu_seconds(p) - self.before[n] for n, p in self.pids.items()}


async def drive(url: str, keys: list[str], seconds: float, request, warmup: float = 0.0) -> dict:
    """Each key one client looping `request(session, key, i)` -> status; latencies after warmup."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counts = {"all": 0}
    connector = aiohttp.TCPConnector(limit=len(keys) + 4)
    cpu0 = time.process_time()
    async with aiohttp.ClientSession(url, connector=connector) as session:
        begin = time.perf_counter()
        measure_from, stop = begin + warmup, begin + warmup + seconds

        async def client_loop(n: int, key: str) -> None:
            i = 0
            while (now := time.perf_counter()) < stop:
                status = await request(session, n, key, i)
                done = time.perf_counter()
                counts["all"] += 1
                if now >= measure_from:
                    latencies.append(done - now)
                    statuses[status] = statuses.get(status, 0) + 1
                i += 1

        await asyncio.gather(*(client_loop(n, k) for n, k in enumerate(keys)))
    ok = sum(v for k, v in statuses.items() if k == 200)
    return {"load generator cpu_s": time.process_time() - cpu0, "all_requests": counts["all"],
            "requests": len(latencies), "ok": ok, "per_s": ok / seconds, "statuses": statuses,
            "p50_ms": percentile(latencies, 50) * 1000 if latencies else None,
            "p99_ms": percentile(latencies, 99) * 1000 if latencies else None}


REQUEST_TIMEOUT = 30.0
TARGETS = {"open_creates": 100.0, "open_reads": 50.0}   # p99 targets, ms (gentask issue 11 point 6)


async def _open_request(session: aiohttp.ClientSession, kind: str, target, i: int) -> tuple[int, str | None]:
    """One request of an open-loop phase -> (status, task id a create made)."""
    if kind == "create":
        async with session.post("/api/v1/ai/image/task", data=BODY,
                                headers={"X-API-Key": target, "Content-Type": "application/json"}) as r:
            raw = await r.read()
            return r.status, json.loads(raw)["data"]["task_id"] if r.status == 200 else None
    key, task_id = target
    async with session.get(f"/api/v1/ai/task/result/{task_id}", headers={"X-API-Key": key}) as r:
        await r.read()
        return r.status, None


async def _open_run(conn, url: str, kind: str, rate: float, total: int, warm: int, offset: int, stride: int,
                    targets: list, connections: int) -> dict:
    """Send slots offset, offset+stride, ... of the schedule, slot i at t0 + i / rate, whatever came back."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    async with aiohttp.ClientSession(url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as session:
        conn.send("ready")
        t0 = conn.recv()                       # time.monotonic() is CLOCK_MONOTONIC: one clock for all processes
        cpu0, waited0 = time.process_time(), runqueue_seconds()
        latencies: list[float] = []
        lags: list[float] = []
        planned_at: list[float] = []
        statuses: dict[str, int] = {}
        made: list[tuple[int, str]] = []
        state = {"inflight": 0, "peak": 0, "first_send": None, "last_send": 0.0, "last_done": 0.0}

        async def one(i: int, planned: float) -> None:
            start = time.monotonic()
            state["inflight"] += 1
            state["peak"] = max(state["peak"], state["inflight"])
            try:
                status, task_id = await _open_request(session, kind, targets[i % len(targets)], i)
                word = str(status)
            except TimeoutError:
                word, task_id = "timeout", None
            except aiohttp.ClientError as exc:
                word, task_id = type(exc).__name__, None
            done = time.monotonic()
            state["inflight"] -= 1
            if task_id is not None:
                made.append((i, task_id))
            if i >= warm:
                latencies.append(done - planned)          # from the planned send: no coordinated omission
                planned_at.append(planned - t0)
                lags.append(start - planned)
                statuses[word] = statuses.get(word, 0) + 1
                if state["first_send"] is None:
                    state["first_send"] = start
                state["last_send"], state["last_done"] = max(state["last_send"], start), max(state["last_done"], done)

        pending = []
        behind = 0
        for i in range(offset, total, stride):
            planned = t0 + i / rate
            delay = planned - time.monotonic()
            if delay > 0:
                behind = 0
                await asyncio.sleep(delay)
            else:
                behind += 1
                if behind % 32 == 0:                       # far behind: let the requests under way run too
                    await asyncio.sleep(0)
            pending.append(asyncio.create_task(one(i, planned)))
        await asyncio.gather(*pending)
    return {"latencies": latencies, "lags": lags, "planned_at": planned_at, "statuses": statuses, "made": made,
            "peak": state["peak"],
            "first_send": state["first_send"], "last_send": state["last_send"], "last_done": state["last_done"],
            "cpu_s": time.process_time() - cpu0, "waited_s": runqueue_seconds() - waited0}


def _open_worker(conn, *args) -> None:
    try:
        conn.send(asyncio.run(_open_run(conn, *args)))
    except BaseException as exc:  # the parent reports it
        conn.send({"error": repr(exc)})
        raise


def settle(pid: int, budget: float = 120.0, idle: float = 0.05, machine_idle: float = 0.25) -> float:
    """Wait until the process spent under `idle` of a CPU, and all cores together under `machine_idle`
    of one, for two seconds running (at most `budget` s).

    An open-loop phase must not start while the API still works off the previous phase's backlog, nor
    while something else (the last benchmark's clean-up, the kernel reclaiming its memory) holds the
    cores; what it waited is in the report."""
    begin = time.monotonic()
    quiet = 0
    while time.monotonic() - begin < budget and quiet < 2:
        before, machine_before = cpu_seconds(pid), machine_seconds()[0]
        time.sleep(1)
        calm = cpu_seconds(pid) - before < idle and machine_seconds()[0] - machine_before < machine_idle
        quiet = quiet + 1 if calm else 0
    return time.monotonic() - begin


def deletions_done(core, budget: float = 1200.0) -> float:
    """Wait until no namespace is Terminating (at most `budget` s); the seconds waited.

    Deleting a namespace of thousands of tasks keeps the API server and etcd busy for minutes after
    the request: a run must neither start beside an earlier one's clean-up nor leave its own to the
    benchmark that follows."""
    begin = last = time.monotonic()
    while time.monotonic() - begin < budget:
        terminating = [ns.metadata.name for ns in core.list_namespace().items if ns.status.phase == "Terminating"]
        if not terminating:
            break
        if time.monotonic() - last >= 15:
            last = time.monotonic()
            print(f"waiting for namespace(s) {', '.join(terminating)} to be deleted "
                  f"({time.monotonic() - begin:.0f} s so far)", flush=True)
        time.sleep(2)
    return time.monotonic() - begin


def open_phase(url: str, kind: str, rate: float, seconds: float, warmup: float, procs: int, targets: list,
               connections: int, cpu: CPU) -> dict:
    """An open-loop phase: `rate` requests a second on a fixed schedule, from `procs` load-generator processes.

    Slot i is planned at t0 + i / rate; process k sends slots k, k + procs, ... over its own pool of
    keep-alive connections, whether or not earlier answers came back. Latency counts from the planned
    time, so a late send (the generator behind) or a wait for a connection counts against the API, as a
    real client would see it; `lag` says how late the sends were."""
    ctx = multiprocessing.get_context("spawn")
    total, warm = round(rate * (warmup + seconds)), round(rate * warmup)
    pipes, workers = [], []
    for k in range(procs):
        here, there = ctx.Pipe()
        worker = ctx.Process(target=_open_worker, daemon=True, args=(
            there, url, kind, rate, total, warm, k, procs, targets, max(1, connections // procs)))
        worker.start()
        pipes.append(here)
        workers.append(worker)
    for pipe in pipes:
        if pipe.recv() != "ready":
            raise SystemExit(f"an open-loop load generator failed to start ({kind})")
    cpu.exclude = {w.pid for w in workers if w.pid is not None}
    cpu.start()
    t0 = time.monotonic() + 0.2
    for pipe in pipes:
        pipe.send(t0)
    parts = [pipe.recv() for pipe in pipes]
    cpu_s = cpu.stop()
    wall = time.monotonic() - t0
    for worker in workers:
        worker.join(10)
    failed = [p["error"] for p in parts if "error" in p]
    if failed:
        raise SystemExit(f"an open-loop load generator failed ({kind}): {failed[0]}")
    latencies = [x for p in parts for x in p["latencies"]]
    worst: dict[int, float] = {}                  # second of the schedule -> its slowest answer
    for p in parts:
        for at, latency in zip(p["planned_at"], p["latencies"], strict=True):
            second = int(at - warm / rate)
            worst[second] = max(worst.get(second, 0.0), latency)
    lags = [x for p in parts for x in p["lags"]]
    statuses: dict[str, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    measure_from = t0 + warm / rate
    first_send = min(p["first_send"] for p in parts if p["first_send"] is not None)
    last_send, last_done = max(p["last_send"] for p in parts), max(p["last_done"] for p in parts)
    ok = statuses.get("200", 0)

    def ms(values: list[float], q: float) -> float | None:
        return percentile(values, q) * 1000 if values else None

    sent = len(lags)
    return {"kind": kind, "planned_per_s": rate, "seconds": seconds, "procs": procs, "connections": connections,
            "requests": sent, "all_requests": sum(len(p["lags"]) for p in parts) + warm, "ok": ok,
            "statuses": statuses, "made": sorted(x for p in parts for x in p["made"]),
            "sent_per_s": (sent - 1) / (last_send - first_send) if sent > 1 and last_send > first_send else None,
            "per_s": ok / (last_done - measure_from) if last_done > measure_from else 0.0,
            "p50_ms": ms(latencies, 50), "p99_ms": ms(latencies, 99), "p99_9_ms": ms(latencies, 99.9),
            "max_ms": max(latencies) * 1000 if latencies else None,
            "lag_p50_ms": ms(lags, 50), "lag_p99_ms": ms(lags, 99), "lag_max_ms": max(lags) * 1000 if lags else None,
            "late_over_5ms": sum(1 for x in lags if x > 0.005),
            "slowest_seconds": [[s, round(v * 1000)] for s, v in sorted(worst.items(), key=lambda kv: -kv[1])[:5]],
            "peak_in_flight": sum(p["peak"] for p in parts),
            "cpu_s": {**{k: round(v, 1) for k, v in cpu_s.items()},
                      "load generator": round(sum(p["cpu_s"] for p in parts), 1)},
            "runqueue_s": {**{k: round(v, 1) for k, v in cpu.waited.items()},
                           "load generator": round(sum(p["waited_s"] for p in parts), 1)},
            "machine_busy_s": round(cpu.machine, 1), "stolen_s": round(cpu.stolen, 1), "wall_s": round(wall, 1),
            "others_s": {k: round(v, 1) for k, v in cpu.others.items()}}

def seed(settings: Settings, namespace: str, user: str, n: int, start: int = 0) -> None:
    """n more mirrored tasks of one user, written in batches as the operator's mirror stores them."""
    mirror = TaskMirror(connect(settings))
    mirror.ensure_indexes()
    batch = []
    for i in range(start, start + n):
        uid = str(uuid.uuid4())
        created = T0 + timedelta(seconds=i)
        phase = ("Succeeded", "Failed", "Running")[i % 3]
        batch.append(record_from_task({
            "metadata": {"name": f"img-{uid[:8]}{i}", "namespace": namespace, "uid": uid, "resourceVersion": str(i + 1),
                         "creationTimestamp": created.isoformat()},
            "spec": {"type": ("image", "video", "text")[i % 3], "provider": "fake", "model": "fake-image",
                     "userID": user, "priority": "default", "prompt": "a kitten playing in a garden",
                     "params": {"size": "512x512"}},
            "status": {"phase": phase, "reason": "Completed", "attempts": 1,
                       "completionTime": (created + timedelta(seconds=9)).isoformat(),
                       "result": {"images": [{"url": f"https://vendor.example/{uid}.png",
                                              "artifact": f"{uid}/1/image-0.png", "mimeType": "image/png",
                                              "sizeBytes": 1_482_113, "sha256": "ab" * 32}]}
                       if phase == "Succeeded" else None}}))
        if len(batch) == 1000:
            mirror.insert_many(batch)  # records and what lists read (the timeline on FerretDB)
            batch = []
    if batch:
        mirror.insert_many(batch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--list-sizes", default="1000,100000")
    parser.add_argument("--list-budget", type=float, default=60)
    parser.add_argument("--mirror-creates", action="store_true",
                        help="let the API mirror each create into MongoDB too (GENTASK_API_MIRROR_CREATES)")
    parser.add_argument("--open-create-rate", type=float, default=200, help="open-loop creates a second (0: none)")
    parser.add_argument("--open-read-rate", type=float, default=1000, help="open-loop result reads a second (0: none)")
    parser.add_argument("--open-seconds", type=float, default=30, help="measured seconds of each open-loop phase")
    parser.add_argument("--open-warmup", type=float, default=2, help="seconds at the same rate before measuring")
    parser.add_argument("--open-procs", type=int, default=1, help="open-loop load-generator processes")
    parser.add_argument("--open-connections", type=int, default=256,
                        help="keep-alive connections of the open-loop generators, in all")
    parser.add_argument("--no-doc", action="store_true", help="print the figures, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    dev = DevCluster(Path(os.environ.get("GENTASK_DEVCLUSTER_ROOT", ROOT / ".devcluster")), log=lambda *_: None)
    state = dev.running()
    started = state is None
    if started:
        state = dev.up()
    kube = config.new_client_from_config(str(state.kubeconfig))
    bootstrap(kube)
    core = client.CoreV1Api(kube)
    deletions_done(core)
    namespace = f"bench-api-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    database = f"bench_api_{uuid.uuid4().hex[:6]}"
    mongo_url = state.mongo_url.rsplit("/", 1)[0] + "/" + database
    users = [f"user{i:02d}" for i in range(args.clients)]
    keys = [f"bench-key-{uuid.uuid4().hex}" for _ in users]
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(state.kubeconfig), "MONGO_URL": mongo_url, "PORT": str(port),
           "GENTASK_API_HOST": "127.0.0.1", "GENTASK_NAMESPACE": namespace, "LOG_LEVEL": "warning",
           "GENTASK_API_KEYS": ",".join([*(f"{k}:{u}" for k, u in zip(keys, users, strict=True)),
                                         "bench-lister-key:lister"]),
           "GENTASK_API_RATE_PER_USER": "0", "GENTASK_API_MAX_UNFINISHED_PER_USER": "0",
           "GENTASK_API_MIRROR_CREATES": "true" if args.mirror_creates else "false"}
    api_log = Path(tempfile.gettempdir()) / f"bench-api-{port}.log"
    api = start_api(port, env, api_log)
    print(f"API log: {api_log}", flush=True)
    url = f"http://127.0.0.1:{port}"
    cpu = CPU({"api": api.pid, "kube-apiserver": state.pids["apiserver"], "etcd": state.pids["etcd"],
               "ferretdb": state.pids["ferretdb"]})
    created: dict[int, list[str]] = {n: [] for n in range(len(keys))}
    results: dict[str, dict] = {}
    try:
        async def create(session, n, key, _i):
            async with session.post("/api/v1/ai/image/task", data=BODY,
                                    headers={"X-API-Key": key, "Content-Type": "application/json"}) as r:
                doc = await r.json()
                if r.status == 200:
                    created[n].append(doc["data"]["task_id"])
                return r.status

        async def read(session, n, key, i):
            mine = created[n]
            async with session.get(f"/api/v1/ai/task/result/{mine[i % len(mine)]}", headers={"X-API-Key": key}) as r:
                await r.read()
                return r.status

        async def page(session, _n, _key, _i):
            offset = random.randrange(0, 1001, 20)
            async with session.get(f"/api/v1/ai/tasks?limit=20&offset={offset}",
                                   headers={"X-API-Key": "bench-lister-key"}) as r:
                await r.read()
                return r.status

        for name, request, n_clients, seconds, warmup in (
                ("creates", create, keys, args.seconds, 2.0), ("reads", read, keys, args.seconds, 1.0)):
            if seconds <= 0:
                continue
            load = os.getloadavg()[0]
            cpu.start()
            results[name] = asyncio.run(drive(url, n_clients, seconds, request, warmup))
            results[name]["cpu_s"] = {**{k: round(v, 1) for k, v in cpu.stop().items()},
                                      "load generator": round(results[name].pop("load generator cpu_s"), 1)}
            results[name]["load"] = [round(load, 1), round(os.getloadavg()[0], 1)]
            print(f"{name}: {json.dumps(results[name])}", flush=True)
        for name, kind, rate in (("open_creates", "create", args.open_create_rate),
                                 ("open_reads", "read", args.open_read_rate)):
            if rate <= 0:
                continue
            if kind == "create":
                targets: list = keys
            else:
                longest = max(len(ids) for ids in created.values())
                targets = [(keys[n], created[n][j]) for j in range(longest) for n in created if j < len(created[n])]
                if not targets:
                    raise SystemExit("open-loop reads need tasks: run the creates (closed or open) first")
            waited = settle(api.pid)
            load = os.getloadavg()[0]
            r = results[name] = open_phase(url, kind, rate, args.open_seconds, args.open_warmup, args.open_procs,
                                           targets, args.open_connections, cpu)
            r["load"] = [round(load, 1), round(os.getloadavg()[0], 1)]
            r["settled_s"] = round(waited, 1)
            for i, task_id in r.pop("made"):
                created[i % len(keys)].append(task_id)
            print(f"{name}: {json.dumps(r)}", flush=True)
        seeded = 0
        for size in sorted(int(x) for x in args.list_sizes.split(",") if x.strip()):
            t = time.monotonic()
            seed(Settings(mongo_url=mongo_url), namespace, "lister", size - seeded, start=seeded)
            seeded = size
            print(f"seeded {size} records ({time.monotonic() - t:.0f} s)", flush=True)
            load = os.getloadavg()[0]
            cpu.start()
            name = f"list_{size}"
            results[name] = asyncio.run(drive(url, ["bench-lister-key"], args.list_budget, page))
            results[name]["cpu_s"] = {**{k: round(v, 1) for k, v in cpu.stop().items()},
                                      "load generator": round(results[name].pop("load generator cpu_s"), 1)}
            results[name]["records"] = size
            results[name]["load"] = [round(load, 1), round(os.getloadavg()[0], 1)]
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    finally:
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(15)
        except subprocess.TimeoutExpired:
            api.kill()
        core.delete_namespace(namespace)
        print(f"deleting namespace {namespace} and its tasks", flush=True)
        print(f"deleted in {deletions_done(core):.0f} s", flush=True)
        try:
            connect(Settings(mongo_url=mongo_url)).client.drop_database(database)
        except Exception:  # the figures matter more than the clean-up
            pass
        kube.close()
        if api_log.exists() and api_log.stat().st_size == 0:
            api_log.unlink()
        elif api_log.exists():
            print(f"the API logged warnings or errors: {api_log}", flush=True)
        if started:
            dev.down(quiet=True)
    load1 = os.getloadavg()[0]
    if not args.no_doc:
        write_section("REST API", f"python bench/api.py --clients {args.clients} --seconds {args.seconds:g} "
                                  f"--list-sizes {args.list_sizes} --list-budget {args.list_budget:g} "
                                  f"--open-create-rate {args.open_create_rate:g} --open-read-rate "
                                  f"{args.open_read_rate:g} --open-seconds {args.open_seconds:g} "
                                  f"--open-procs {args.open_procs}"
                                  + (" --mirror-creates" if args.mirror_creates else ""),
                      report(results, args, (load0, load1)))
    summary = {"clients": args.clients, "load_average": [round(load0, 1), round(load1, 1)],
               "mirror_creates": args.mirror_creates}
    for name, r in results.items():
        for m in ("per_s", "p50_ms", "p99_ms", "p99_9_ms", "max_ms", "lag_p99_ms", "lag_max_ms"):
            if m in r:
                summary[f"{name}_{m}"] = round(r[m], 1) if r[m] is not None else None
        if name in TARGETS:
            summary[f"{name}_target_met"] = r["p99_ms"] is not None and r["p99_ms"] <= TARGETS[name] and \
                r["ok"] == r["requests"]
    print(json.dumps(summary))


def report(results: dict, args, loads: tuple[float, float]) -> str:
    def other(r: dict) -> str:
        rest = {k: v for k, v in r["statuses"].items() if str(k) != "200"}
        return ", ".join(f"{k}: {v:,}" for k, v in rest.items()) or "-"

    def row(name: str, what: str) -> str:
        r = results[name]
        cpu = ", ".join(f"{k} {v:g} s" for k, v in r["cpu_s"].items())
        return (f"| {what} | {r['ok']:,} | {r['per_s']:,.0f}/s | {r['p50_ms']:,.1f} ms | {r['p99_ms']:,.1f} ms | "
                f"{other(r)} | {cpu} | {r['load'][0]:.1f} → {r['load'][1]:.1f} |")

    def open_row(name: str, what: str) -> str:
        r = results[name]
        target = TARGETS[name]
        met = "**yes**" if r["p99_ms"] is not None and r["p99_ms"] <= target and r["ok"] == r["requests"] else "no"
        return (f"| {what} | {r['planned_per_s']:,.0f}/s | {r['ok']:,} of {r['requests']:,} | {r['per_s']:,.0f}/s | "
                f"{r['p50_ms']:,.1f} ms | {r['p99_ms']:,.1f} ms | {r['p99_9_ms']:,.1f} ms | {r['max_ms']:,.1f} ms | "
                f"≤ {target:g} ms | {met} | {other(r)} | {r['lag_p50_ms']:,.1f} / {r['lag_p99_ms']:,.1f} / "
                f"{r['lag_max_ms']:,.1f} ms ({r['late_over_5ms']:,} over 5 ms) | "
                f"{r['load'][0]:.1f} → {r['load'][1]:.1f} |")

    def cpu_row(name: str) -> str:
        r = results[name]
        return (f"| {name} | " + ", ".join(f"{k} {v:g} s" for k, v in r["cpu_s"].items()) + " | "
                + ", ".join(f"{k} {v:g} s" for k, v in r["runqueue_s"].items()) + " | "
                + f"{r['machine_busy_s']:g} s of {r['wall_s'] * (os.cpu_count() or 1):g} s (quiet before it after "
                  f"{r['settled_s']:g} s) | {r['stolen_s']:g} s | "
                + (", ".join(f"{k} {v:g} s" for k, v in r["others_s"].items()) or "-") + " |")

    closed = [n for n in ("creates", "reads") if n in results]
    lists = [n for n in results if n.startswith("list_")]
    opened = [n for n in ("open_creates", "open_reads") if n in results]
    lines = [
        f"Load average (1 min) at start and end: {loads[0]:.1f} and {loads[1]:.1f} on {os.cpu_count()} cores; "
        "other work on the machine shares them (each phase's own is in its row). One API process (uvicorn, one "
        "worker), the control plane, FerretDB and the load generator all run on this machine.",
        "",
    ]
    if opened:
        lines += [
            "Open loop (gentask issue 11 point 6): requests sent on a fixed schedule, slot i at t0 + i / rate, "
            f"whatever came back, from {args.open_procs} load-generator process(es) over {args.open_connections} "
            f"keep-alive aiohttp connections in all; {args.open_warmup:g} s at the same rate before the "
            f"{args.open_seconds:g} s measured. Latency counts from the planned send time, not from the actual "
            "one, so a late send or a wait for a free connection counts against the API (no coordinated "
            "omission); send lag is how far behind its planned time each request actually left the generator. "
            "Target: p99 within the limit and every request answered 200.",
            "",
            "| phase | planned | answered 200 | achieved | p50 | p99 | p99.9 | max | target p99 | met | other "
            "statuses | send lag p50 / p99 / max | load (1 min) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [open_row(n, w) for n, w in (("open_creates", "creates (image, fake provider)"),
                                                ("open_reads", "result reads (own tasks, round robin)"))
                  if n in results]
        lines += [
            "",
            "CPU seconds by process in the open-loop phases (warm-up included), seconds their threads were "
            "ready to run but waiting for a CPU (run queue, /proc/PID/task/*/schedstat), the busy seconds of all "
            "cores against the seconds they had and the seconds the hypervisor gave them to something else while "
            "they had work (/proc/stat, steal), and the busiest other commands in the same time:",
            "",
            "| phase | CPU | run queue | all cores busy | stolen | other commands |",
            "|---|---|---|---|---|---|",
        ] + [cpu_row(n) for n in opened] + [
            "",
            "Slowest seconds of the schedule (second of the measured window: slowest answer): "
            + "; ".join(f"{n}: " + ", ".join(f"{sec} s: {ms:,} ms" for sec, ms in results[n]["slowest_seconds"])
                        for n in opened) + ".",
            "",
        ]
    if closed or lists:
        lines += [
            f"Closed loop: {args.clients} clients, each sending its next request when the last one is answered.",
            "",
            "| phase | answered 200 | rate | p50 | p99 | other statuses | CPU seconds in the phase | load (1 min) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [row(n, w) for n, w in (("creates", f"creates, {args.clients} clients, {args.seconds:g} s"),
                                          ("reads", f"result reads, {args.clients} clients, {args.seconds:g} s"))
                  if n in results]
        lines += [row(n, f"list (limit 20) over {results[n]['records']:,} mirrored tasks, 1 client, "
                         f"{args.list_budget:g} s budget") for n in lists]
        lines.append("")
    procs = next(iter(results.values()))["cpu_s"]
    lines += [
        "CPU milliseconds per request sent (where the time goes):",
        "",
        "| phase | " + " | ".join(procs) + " |",
        "|---|" + "---|" * len(procs),
    ] + [f"| {name} | " + " | ".join(f"{1000 * v / max(1, r['all_requests']):,.2f}" for v in r["cpu_s"].values())
         + " |" for name, r in results.items()] + [
        "",
        "The API mirrors its own creates into MongoDB" + (" (on here)." if args.mirror_creates else
                                                           " only with GENTASK_API_MIRROR_CREATES (off here)."),
        "",
        analysis(results),
    ]
    return "\n".join(lines)


def busy_share(r: dict) -> float:
    """Per cent of the cores' seconds in an open-loop phase that were busy."""
    return 100 * r["machine_busy_s"] / max(1e-9, r["wall_s"] * (os.cpu_count() or 1))


def analysis(results: dict) -> str:
    """Where the time goes, from the measured CPU per request."""
    def per(name: str, proc: str) -> float:
        r = results[name]
        return 1000 * r["cpu_s"][proc] / max(1, r["all_requests"])
    creates = "creates" if "creates" in results else "open_creates" if "open_creates" in results else None
    reads = "reads" if "reads" in results else "open_reads" if "open_reads" in results else None
    parts = []
    if creates:
        create = {p: per(creates, p) for p in ("api", "kube-apiserver", "etcd", "load generator")}
        total = sum(create.values())
        parts.append(
            f"Where the time goes. A create ({creates}) costs the API {create['api']:.1f} ms of CPU (request "
            "parsing and validation, the catalog check, one POST to the API server over a keep-alive aiohttp "
            "connection, the answer's JSON, the watch event that follows) and kube-apiserver "
            f"{create['kube-apiserver']:.1f} ms (decoding, schema validation and defaulting of the custom resource, "
            f"managedFields, the etcd write, the watch fan-out); etcd {create['etcd']:.1f} ms and the load "
            f"generator {create['load generator']:.1f} ms more: {total:.1f} ms of CPU a create, so 2 cores cap "
            f"creates near {2000 / total:,.0f}/s with the machine to themselves; the API server takes the largest "
            "share and more API replicas would not help on the same cores.")
    if reads:
        parts.append(
            "A result read never reaches the API server (the API's watch keeps every live task): "
            f"{per(reads, 'api'):.2f} ms of API CPU and {per(reads, 'load generator'):.2f} ms of the load "
            f"generator's ({reads}).")
    lists = [(r["records"], r["p50_ms"]) for n, r in results.items() if n.startswith("list_")]
    if lists:
        parts.append(
            "Lists are FerretDB's. Here every record is one user's (\"lister\"), and on FerretDB a page reads that "
            "user's timeline documents, one short string a task, which FerretDB decodes and Python filters, sorts and "
            "counts, then 20 records by _id (see \"MongoDB mirror\"): the cost grows with the user's own tasks, so "
            "a page takes "
            + ", ".join(f"{ms:,.0f} ms at {n:,} records" for n, ms in lists)
            + " at p50; on MongoDB the same query is an index range scan (`user_created`).")
    if "creates" in results:
        parts.append(
            "Latency at 64 closed-loop clients follows throughput (Little's law: mean latency = 64 / rate), so "
            "400 creates/s means 160 ms on average and a p99 of 100 ms cannot hold at that rate with 64 clients "
            "that each send their next request at once; the open-loop rows are the latency a client sees at a "
            "given rate.")
    for name in ("open_creates", "open_reads"):
        if name in results:
            r = results[name]
            met = r["p99_ms"] is not None and r["p99_ms"] <= TARGETS[name] and r["ok"] == r["requests"]
            parts.append(
                f"Open loop, {name.replace('_', ' ')} at {r['planned_per_s']:,.0f}/s: p99 {r['p99_ms']:,.1f} ms "
                f"against the {TARGETS[name]:g} ms target ({'met' if met else 'missed'}); the API ran "
                f"{r['cpu_s']['api']:g} s of CPU and its threads waited {r['runqueue_s']['api']:g} s for one, "
                f"kube-apiserver {r['cpu_s']['kube-apiserver']:g} s and {r['runqueue_s']['kube-apiserver']:g} s, "
                f"the load generator {r['cpu_s']['load generator']:g} s and "
                f"{r['runqueue_s']['load generator']:g} s, at load {r['load'][0]:.1f} → {r['load'][1]:.1f}; "
                f"all cores were busy {busy_share(r):.0f} % of the phase ({r['stolen_s']:g} s stolen by the "
                f"hypervisor)" + (", the busiest other commands " + ", ".join(
                    f"{k} {v:g} s" for k, v in list(r["others_s"].items())[:3]) if r["others_s"] else "") + ".")
    parts.append(
        "Garbage-collector pauses: the API's task index keeps every live task as typed objects (about 30 objects "
        "the collector tracks a task), and CPython's full collection walks all of them with the event loop "
        "stopped. Measured in the API process during the open-loop phases of this benchmark (gc.callbacks, thread "
        "CPU time, 2026-12-01): without a policy, full collections grew with the index from 32 ms to 300 ms of CPU "
        "(0.2-1.9 s of wall time at load 7.6-8.8), one every 4-15 s while creates ran, and every request in "
        "flight waited for each. The API now freezes what survives a full collection (gentask/api/collector.py: "
        "gc.freeze after each, a full collection every 3 of generation 1 instead of 10, and once every 10 minutes "
        "one over everything for reference cycles among frozen objects; frozen objects are still freed by "
        "reference counting): in the same phases full collections took 2-17 ms of CPU each (60 ms the one "
        "that first froze the index) at load 4.3, and 11-55 ms at load 8.7 with thousands of requests in flight.")
    return " ".join(parts)


if __name__ == "__main__":
    main()
