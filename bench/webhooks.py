"""Webhook delivery latency: a task's phase change → its signed event at a receiver on loopback.

    python bench/webhooks.py [--tasks 50] [--concurrency 4] [--executor inline|job|pool]
                             [--events running,succeeded] [--stall 60]

Starts the local cluster if none runs in GENTASK_DEVCLUSTER_ROOT (default .devcluster; and stops
it after). In a fresh namespace, `gentask operator` runs as its own process (LOG_LEVEL=warning,
watching that namespace only, 127.0.0.1 allowlisted, a signing key of the run's own) and
--tasks fake text tasks at zero latency are created, --concurrency at a time, each with
spec.notify to a threaded HTTP receiver on 127.0.0.1 that answers 204. A watch on the namespace
notes when it first sees each task in each phase (the phase change as a client sees it); the
receiver notes when each event arrived. Figures per event: receipt − the watch's phase change
(ms: p50, p99, max), and receipt − the time the status records for the event (whole seconds, as
the API stores them: the condition's lastTransitionTime, startTime, completionTime). Every
signature is checked with the standardwebhooks reference library; duplicates are counted.

A wait with no new delivery for --stall seconds fails, saying what state the tasks are in. The
figures go to docs/benchmarks.md ("## Webhooks"; GENTASK_BENCH_DOC writes them elsewhere); the
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from kubernetes import client, config, watch
from standardwebhooks import Webhook, WebhookVerificationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devcluster/ lives in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import free_port
from _report import percentile, write_section
from devcluster import DevCluster
from devcluster.system import bootstrap
from gentask.domain import GROUP, PLURAL, VERSION
from tests.support.webhooks import Receiver

ROOT = Path(__file__).resolve().parents[1]
PHASE_OF = {"queued": "Queued", "running": "Running", "succeeded": "Succeeded"}


def _seconds(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def status_time(status: dict, event: str) -> float | None:
    """When the status says the event happened (whole seconds)."""
    if event == "queued":
        cond = next((c for c in status.get("conditions") or [] if c["type"] == "Scheduled"), None)
        return _seconds(cond["lastTransitionTime"]) if cond else None
    if event == "running":
        return _seconds(status.get("startTime"))
    return _seconds(status.get("completionTime"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--executor", choices=("inline", "job", "pool"), default="inline")
    parser.add_argument("--events", default="running,succeeded",
                        help="comma-separated: queued, running, succeeded")
    parser.add_argument("--stall", type=float, default=60.0)
    args = parser.parse_args()
    events = [e.strip() for e in args.events.split(",") if e.strip()]
    unknown = [e for e in events if e not in PHASE_OF]
    if unknown:
        parser.error(f"--events takes queued, running, succeeded; not {', '.join(unknown)}")
    load0 = os.getloadavg()
    dev = DevCluster(Path(os.environ.get("GENTASK_DEVCLUSTER_ROOT", ROOT / ".devcluster")), log=lambda *_: None)
    state = dev.running()
    started = state is None
    if started:
        state = dev.up()
    api = config.new_client_from_config(str(state.kubeconfig))
    bootstrap(api)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = f"bench-wh-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "gentask-credentials"},
                                       "stringData": {"MONGO_URL": state.mongo_url}})
    key = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver = Receiver(default=204)
    log = Path(state.kubeconfig).parent / "logs" / f"bench-webhooks-{ns}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KUBECONFIG": str(state.kubeconfig), "MONGO_URL": state.mongo_url,
           "GENTASK_METRICS_PORT": str(free_port()), "GENTASK_WORKER_IMAGE": "gentask:dev",
           "GENTASK_WATCH_NAMESPACES": ns, "GENTASK_EXECUTOR": args.executor, "LOG_LEVEL": "warning",
           "GENTASK_WEBHOOK_ALLOW": "127.0.0.1", "GENTASK_WEBHOOK_SIGNING_KEY": key,
           "GENTASK_POOL_LEASE_NAMESPACE": ns}
    procs = [subprocess.Popen([sys.executable, "-m", "gentask", "operator"], env=env, stdout=open(log, "ab"),
                              stderr=subprocess.STDOUT, start_new_session=True)]
    if args.executor == "pool":
        procs.append(subprocess.Popen([sys.executable, "-m", "gentask", "worker", "pool"],
                                      env={**env, "POD_NAME": f"bench-pool-{ns}", "GENTASK_METRICS_PORT": "0"},
                                      stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True))
    seen: dict[tuple[str, str], float] = {}          # (task, phase) -> when the watch first showed it
    statuses: dict[str, dict] = {}
    stop = threading.Event()

    def watcher() -> None:
        while not stop.is_set():
            w = watch.Watch()
            for item in w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                                 timeout_seconds=30):
                obj = item["object"]
                name, status = obj["metadata"]["name"], obj.get("status") or {}
                statuses[name] = status
                if status.get("phase"):
                    seen.setdefault((name, status["phase"]), time.time())
                if stop.is_set():
                    w.stop()

    threading.Thread(target=watcher, daemon=True).start()
    notify = {"url": receiver.url, "events": events}
    names = [f"wh-{i:05d}" for i in range(args.tasks)]
    try:
        time.sleep(1.0)           # the operator and the watch start
        begun = time.time()

        def create(name: str) -> None:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationTask", "metadata": {"name": name},
                "spec": {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "bench [latency:0s]",
                         "userID": "bench", "notify": notify}})
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(create, names))
        expected = args.tasks * len(events)
        last, last_change = -1, time.time()
        while len({r.id for r in receiver.requests()}) < expected:
            got = len(receiver.requests())
            if got != last:
                last, last_change = got, time.time()
            elif time.time() - last_change > args.stall:
                phases = Counter((s or {}).get("phase") or "none" for s in statuses.values())
                raise SystemExit(f"bench/webhooks.py: no new delivery for {args.stall:.0f} s; {got} of {expected} "
                                 f"arrived; task phases {dict(phases)}; operator log {log}")
            time.sleep(0.1)
        elapsed = time.time() - begun
    finally:
        stop.set()
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        receiver.close()
    hook = Webhook(key)
    by_event: dict[str, list[float]] = {e: [] for e in events}
    by_status: dict[str, list[float]] = {e: [] for e in events}
    bad, ids = 0, Counter(r.id for r in receiver.requests())
    firsts: dict[str, object] = {}
    for r in receiver.requests():
        firsts.setdefault(r.id, r)
    for r in firsts.values():
        try:
            event = hook.verify(r.body, r.headers)
        except WebhookVerificationError:
            bad += 1
            continue
        kind = event["type"].rsplit(".", 1)[1]
        name = event["subject"].split("/", 1)[1]
        phase_at = seen.get((name, PHASE_OF[kind]))
        if phase_at is not None:
            by_event[kind].append((r.at - phase_at) * 1000)
        recorded = status_time(statuses.get(name) or {}, kind)
        if recorded is not None:
            by_status[kind].append(r.at - recorded)
    core.delete_namespace(ns)
    if started:
        dev.down(quiet=True)
    load1 = os.getloadavg()
    summary: dict[str, object] = {"tasks": args.tasks, "executor": args.executor, "events": events,
                                  "deliveries": sum(ids.values()), "duplicates": sum(c - 1 for c in ids.values()),
                                  "bad_signatures": bad, "seconds": round(elapsed, 2),
                                  "load": [round(load0[0], 1), round(load1[0], 1)]}
    rows = []
    for kind in events:
        ms, secs = by_event[kind], by_status[kind]
        if not ms:
            continue
        figures = {"p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1),
                   "max_ms": round(max(ms), 1),
                   "status_p50_s": round(percentile(secs, 50), 2) if secs else None,
                   "status_p99_s": round(percentile(secs, 99), 2) if secs else None}
        summary[kind] = figures
        rows.append(f"| {kind} | {len(ms)} | {figures['p50_ms']:.0f} ms | {figures['p99_ms']:.0f} ms | "
                    f"{figures['max_ms']:.0f} ms | {figures['status_p50_s']} s | {figures['status_p99_s']} s |")
    body = ("| event | deliveries | p50 | p99 | max | from status time, p50 | p99 |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"{args.tasks} fake text tasks at zero latency, executor {args.executor}, created {args.concurrency} at "
            f"a time; latency from the watch's first sight of the phase to the receiver reading the request, and "
            f"from the time the status records (whole seconds) to the same. {summary['duplicates']} duplicates, "
            f"{bad} bad signatures, {elapsed:.1f} s for the run. Load average (1 min) at start and end: "
            f"{load0[0]:.1f} and {load1[0]:.1f} on {os.cpu_count()} cores.")
    print(body)
    command = f"python bench/webhooks.py --tasks {args.tasks} --executor {args.executor} --events {','.join(events)}"
    write_section("Webhooks", command, body)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
