"""Server-sent events fan-out: how many clients x events/s one API process sustains.

    python bench/sse.py [--clients 10,100,500] [--rate 50] [--tasks 50] [--seconds 20] [--warmup 2]
                        [--procs 2] [--no-doc]

Starts the local cluster if none runs (in GENTASK_DEVCLUSTER_ROOT or .devcluster; stopped after),
runs `gentask api` as its own process (one uvicorn worker, LOG_LEVEL=warning) on a fresh
namespace where no operator runs, and makes --tasks GenerationTasks of one user there, directly
on the cluster. For each number of --clients:

- that many clients (aiohttp, spread over --procs load-generator processes) open
  GET /api/v1/ai/events with the user's key, and the script waits until /metrics counts them all
  (gentask_api_sse_streams);
- --rate status patches a second are written directly on the cluster (the kubernetes client,
  8 threads, on a fixed schedule: write i at t0 + i / rate), round robin over the tasks, for
  --warmup + --seconds; each puts `bench <i> <time>` in status.message, the time taken just before
  the patch is sent;
- each client notes, for every event of a measured write it receives, the time from that stamp
  to its receipt (the API server's write, its watch, the API's index and hub, the socket): the
  figures are delivered events/s over all clients, latency p50/p99/max, and how many of the
  clients x writes deliveries never came (the hub coalesces a task's changes that a client has
  not read yet, and resyncs a client that falls --queue behind: gentask_api_sse_resyncs_total);
- the CPU seconds of the API process, kube-apiserver and the load generators.

The figures go to docs/benchmarks.md ("## Server-sent events"; GENTASK_BENCH_DOC names another
file; not with --no-doc); the last line printed is one JSON object with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devcluster/ lives in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_seconds, free_port, start_api
from _report import percentile, write_section
from devcluster import DevCluster
from devcluster.system import bootstrap
from gentask.domain.task import GROUP, PLURAL, VERSION

ROOT = Path(__file__).resolve().parents[1]
USER = "bench"
MARK = b'"message":"bench '
WRITERS = 8


def metric(url: str, name: str) -> float:
    import urllib.request
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


# --- the load generators -------------------------------------------------------------------------


def receive(url: str, key: str, clients: int, first: int, stop: multiprocessing.synchronize.Event,
            out: multiprocessing.Queue) -> None:
    """One load-generator process: `clients` streams; puts (latencies by write number, CPU seconds)."""
    seen: dict[int, list[float]] = {}
    errors: list[str] = []

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.get("/api/v1/ai/events", headers={"X-API-Key": key}) as r:
                if r.status != 200:
                    errors.append(f"HTTP {r.status}: {(await r.text())[:200]}")
                    return
                async for line in r.content:
                    at = line.find(MARK)
                    if at < 0:
                        continue
                    now = time.time()
                    number, stamp = line[at + len(MARK):].split(b'"', 1)[0].split(b" ")
                    n = int(number)
                    if n >= first:
                        seen.setdefault(n, []).append(now - float(stamp))
        except (aiohttp.ClientError, asyncio.CancelledError) as exc:
            if not stop.is_set():
                errors.append(f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            tasks = [asyncio.create_task(one(session)) for _ in range(clients)]
            while not stop.is_set():
                await asyncio.sleep(0.1)
            await asyncio.sleep(0)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    cpu0 = time.process_time()
    asyncio.run(main())
    out.put((seen, time.process_time() - cpu0, errors))


# --- one level -------------------------------------------------------------------------------------


def level(url: str, key: str, api_pid: int, apiserver_pid: int, custom: client.CustomObjectsApi, namespace: str,
          names: list[str], clients: int, args: argparse.Namespace, counter: list[int]) -> dict:
    """`clients` streams while --rate writes a second go on for --warmup + --seconds."""
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    procs = max(1, min(args.procs, clients))
    warm = int(args.warmup * args.rate)
    measured = int(args.seconds * args.rate)
    first = counter[0] + warm                    # the first measured write's number
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=receive, args=(url, key, n, first, stop, out), daemon=True) for n in shares]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 120
    while metric(url, "gentask_api_sse_streams") < clients:
        if time.monotonic() > deadline or not all(w.is_alive() for w in workers):
            stop.set()
            raise SystemExit(f"the {clients} streams did not all open: /metrics counts "
                             f"{metric(url, 'gentask_api_sse_streams'):g}; load generators alive: "
                             f"{[w.is_alive() for w in workers]}")
        time.sleep(0.2)
    time.sleep(1)                                # the first events (each task's state) are through
    resyncs0 = metric(url, "gentask_api_sse_resyncs_total")
    cpu0 = {"api": cpu_seconds(api_pid), "kube-apiserver": cpu_seconds(apiserver_pid)}
    late: list[float] = []
    failures: list[str] = []

    def write(i: int) -> None:
        name = names[i % len(names)]
        try:
            custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": {"message": f"bench {i} {time.time():.6f}"}})
        except Exception as exc:  # noqa: BLE001 - counted, reported
            failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    total = warm + measured
    t0 = time.monotonic() + 0.2
    with ThreadPoolExecutor(WRITERS) as pool:
        for j in range(total):
            at = t0 + j / args.rate
            now = time.monotonic()
            if at > now:
                time.sleep(at - now)
            else:
                late.append(now - at)
            pool.submit(write, counter[0] + j)
    wrote_s = time.monotonic() - t0
    time.sleep(2)                                # the last events reach the clients
    cpu = {"api": cpu_seconds(api_pid) - cpu0["api"],
           "kube-apiserver": cpu_seconds(apiserver_pid) - cpu0["kube-apiserver"]}
    resyncs = metric(url, "gentask_api_sse_resyncs_total") - resyncs0
    stop.set()
    latencies: list[float] = []
    delivered, generator_cpu, errors = 0, 0.0, []
    for _ in workers:
        seen, used, errs = out.get(timeout=60)
        generator_cpu += used
        errors += errs
        for n, values in seen.items():
            if n < first + measured:
                delivered += len(values)
                latencies += values
    for w in workers:
        w.join(10)
    counter[0] += total
    expected = measured * clients
    seconds = measured / args.rate
    return {"clients": clients, "writes": measured, "write_failures": len(failures),
            "write_rate": round(total / wrote_s, 1), "writes_late": len(late),
            "expected": expected, "delivered": delivered, "missing": expected - delivered,
            "delivered_per_s": round(delivered / seconds, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
            "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
            "resyncs": int(resyncs), "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
            "generator_cpu_s": round(generator_cpu, 1), "errors": errors[:5], "load": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="10,100,500", help="numbers of concurrent streams, one level each")
    parser.add_argument("--rate", type=float, default=50, help="status writes a second on the cluster")
    parser.add_argument("--tasks", type=int, default=50, help="tasks the writes go round robin over")
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds of each level")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of writes before measuring")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--queue", type=int, default=1000, help="GENTASK_API_SSE_QUEUE of the API")
    parser.add_argument("--no-doc", action="store_true", help="print the figures, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    levels = [int(x) for x in args.clients.split(",") if x.strip()]
    load0 = os.getloadavg()[0]
    dev = DevCluster(Path(os.environ.get("GENTASK_DEVCLUSTER_ROOT", ROOT / ".devcluster")), log=lambda *_: None)
    state = dev.running()
    started = state is None
    if started:
        state = dev.up()
    kube = config.new_client_from_config(str(state.kubeconfig))
    bootstrap(kube)
    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    namespace = f"bench-sse-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    database = f"bench_sse_{uuid.uuid4().hex[:6]}"
    port = free_port()
    key = f"bench-key-{uuid.uuid4().hex}"
    most = max(levels) + 10
    env = {**os.environ, "KUBECONFIG": str(state.kubeconfig), "PORT": str(port), "GENTASK_API_HOST": "127.0.0.1",
           "MONGO_URL": state.mongo_url.rsplit("/", 1)[0] + "/" + database, "GENTASK_NAMESPACE": namespace,
           "LOG_LEVEL": "warning", "GENTASK_API_KEYS": f"{key}:{USER}", "GENTASK_API_RATE_PER_USER": "0",
           "GENTASK_API_SSE_MAX_STREAMS": str(most), "GENTASK_API_SSE_MAX_STREAMS_PER_USER": str(most),
           "GENTASK_API_SSE_QUEUE": str(args.queue)}
    api_log = Path(tempfile.gettempdir()) / f"bench-sse-{port}.log"
    api = start_api(port, env, api_log)
    print(f"API log: {api_log}", flush=True)
    url = f"http://127.0.0.1:{port}"
    results: list[dict] = []
    try:
        names = [f"sse-{i:04d}" for i in range(args.tasks)]
        for name in names:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationTask", "metadata": {"name": name},
                "spec": {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "p", "userID": USER}})
        counter = [0]
        for clients in levels:
            r = level(url, key, api.pid, state.pids["apiserver"], custom, namespace, names, clients, args, counter)
            results.append(r)
            print(f"clients {clients}: {json.dumps(r)}", flush=True)
            deadline = time.monotonic() + 30
            while metric(url, "gentask_api_sse_streams") > 0 and time.monotonic() < deadline:
                time.sleep(0.2)                  # the streams of the level are closed before the next
    finally:
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(15)
        except subprocess.TimeoutExpired:
            api.kill()
        core.delete_namespace(namespace)
        kube.close()
        if api_log.exists() and api_log.stat().st_size == 0:
            api_log.unlink()
        elif api_log.exists():
            print(f"the API logged warnings or errors: {api_log}", flush=True)
        if started:
            dev.down(quiet=True)
    load1 = os.getloadavg()[0]
    command = (f"python bench/sse.py --clients {args.clients} --rate {args.rate:g} --tasks {args.tasks} "
               f"--seconds {args.seconds:g} --warmup {args.warmup:g} --procs {args.procs}")
    if not args.no_doc:
        write_section("Server-sent events", command, report(results, args, (load0, load1)))
    print(json.dumps({"rate": args.rate, "tasks": args.tasks, "seconds": args.seconds,
                      "load_average": [round(load0, 1), round(load1, 1)], "levels": results}))


def report(results: list[dict], args: argparse.Namespace, loads: tuple[float, float]) -> str:
    lines = [
        f"Load average (1 min) at start and end: {loads[0]:.1f} and {loads[1]:.1f} on {os.cpu_count()} cores. One "
        f"API process (uvicorn, one worker); {args.rate:g} status writes a second on the cluster, round robin "
        f"over {args.tasks} tasks of one user, for {args.seconds:g} s measured after {args.warmup:g} s; every "
        f"client follows that user's tasks (GET /api/v1/ai/events), spread over {args.procs} load-generator "
        "process(es). Latency: from the time stamped into the write, just before it is sent, to the event's "
        "receipt. Missing: deliveries the hub coalesced (a task's newer change replaces one a client has not "
        "read) or dropped in a resync.",
        "",
        "| clients | writes/s | events delivered/s | missing | p50 | p99 | max | resyncs | CPU s: API, "
        "kube-apiserver, generators | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['clients']} | {r['write_rate']:g} | {r['delivered_per_s']:,.0f} | {r['missing']:,} of "
                     f"{r['expected']:,} | {r['p50_ms']} ms | {r['p99_ms']} ms | {r['max_ms']} ms | {r['resyncs']} | "
                     f"{r['cpu_s']['api']:g}, {r['cpu_s']['kube-apiserver']:g}, {r['generator_cpu_s']:g} | "
                     f"{r['load']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
