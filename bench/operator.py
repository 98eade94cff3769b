"""The operator under load: task throughput, queue wait, API writes per task, memory, worker CPU.

    python bench/operator.py [--tasks 1000] [--executors job,inline,pool] [--finished 10000,100000]
                             [--concurrency 16] [--inline-concurrency 4] [--pool-replicas 2]
                             [--pool-concurrency 4] [--worker-sample 20] [--worker-checkouts A,B]
                             [--worker-env KEY=VALUE]
                             [--settle-budget 600] [--stall 60] [--type text|image]

Starts the local cluster, with its API server audit log on, if none runs in GENTASK_DEVCLUSTER_ROOT
(default .devcluster), and stops it after. For each executor, on a fresh namespace and MongoDB
database, with `gentask operator` as its own process (LOG_LEVEL=warning, watching that namespace
only; stopped by PID after; with the pool executor also --pool-replicas `gentask worker pool`
processes, each with POD_NAME of its own, their Leases in the run's namespace; their CPU is
reported as pool-0, pool-1, ...):

- raw creates: the same N GenerationTasks created as fast as --concurrency keep-alive clients can,
  in a namespace no operator watches: the API server's ceiling for this machine and moment;
- the run: N tasks of the fake provider at zero latency ([latency:0s]) created the same way; a
  watch notes when each is first seen Running and Succeeded, MongoDB is polled for the records
  that show a final phase. Figures: tasks/s created → Succeeded and created → mirrored, queue wait
  (create answered → Running seen by the watch, ms; and status.startTime − creationTimestamp,
  whole seconds as the API stores them), the ratio to the raw create rate, CPU seconds per task
  of every component (/proc/PID/stat; the process node's figure for its pods is the CPU of its
  reaped children), the operator's RSS (/proc/PID/status VmRSS) once it has settled;
- writes per task by client, from the audit log (<root>/logs/audit.log, write verbs only, at
  Metadata level): events of the run's namespace grouped by user.username and userAgent.

With the job executor, --worker-sample workers are then run by this script itself, one at a time,
each as its pod would run: an operator handles a namespace of their own as always (Queued, the
worker's service account, the Job), a ResourceQuota keeps the Job controller from making the pods,
and this script makes each pod from its Job's template (bound to a node that does not exist), gets
a token bound to it and runs the container's command (`gentask worker run NS/NAME`) with the env
the process node's own resolver gives; os.wait4 gives each worker's exact CPU time and peak RSS.
--worker-checkouts A,B compares checkouts side by side: the workers take turns, each with one
checkout first on PYTHONPATH (the interpreter and the other packages are this environment's).

--finished: for each size, that many finished (Succeeded) tasks are made in a namespace while no
operator runs (create, then patch status with the admin client), then the operator starts
watching it and its RSS is read once it has seen every task and again once the mirror has caught
up (or --settle-budget has passed). Making 100,000 takes a while: progress is printed every 10 s
and the time is reported; `--finished 10000` (or `--finished 0`) leaves the slow step out.

A wait with no progress for --stall seconds fails, saying what state the tasks are in. The
figures go to docs/benchmarks.md ("## Operator"); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devcluster/ lives in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import TICK, free_port
from _report import percentile, write_section
from devcluster import DevCluster
from devcluster.system import bootstrap
from gentask.config import Settings
from gentask.domain import GROUP, PLURAL, VERSION
from gentask.domain.reasons import Phase
from gentask.domain.task import GenerationTask
from gentask.kube.conditions import utc_now
from gentask.kube.events import event_manifest
from gentask.kube.status import status_patch, transition
from gentask.storage import TaskMirror, connect, record_from_task

ROOT = Path(__file__).resolve().parents[1]
AGENT = "gentask-bench/operator"       # the userAgent of this script's own requests
TERMINAL = ("Succeeded", "Failed", "Cancelled")
PROMPT = "a short story about a quiet river [latency:0s]"
SPECS = {"text": {"type": "text", "model": "fake-text", "params": {"maxTokens": 40}},
         "image": {"type": "image", "model": "fake-image", "params": {"size": "64x64"}}}


class Stalled(RuntimeError):
    """A wait saw no progress for --stall seconds."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- processes: CPU and memory from /proc -------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def cpu(pid: int, kids: dict[int, list[int]] | None = None) -> dict[str, float]:
    """CPU seconds of a process: its own, its reaped children's, and its live descendants' (whole trees)."""
    fields = _stat(pid)
    if fields is None:
        return {"own": 0.0, "children": 0.0}
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    for kid in (kids or {}).get(pid, []):
        sub = cpu(kid, kids)
        children += sub["own"] + sub["children"]
    return {"own": own, "children": children}


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


class CPU:
    """CPU seconds of the cluster's components and the operator between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        kids = _children()
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            c = cpu(pid, kids)
            if name == "node":       # the node itself, and the pods it ran (its children)
                out["node"], out["pods (node's children)"] = c["own"], c["children"]
            else:
                out[name] = c["own"] + c["children"]
        return out

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> dict[str, float]:
        return {k: v - self.before.get(k, 0.0) for k, v in self._now().items()}


async def wait_progress(what: str, check: Callable[[], Any], stall: float, every: float = 5.0,
                        describe: Callable[[], str] | None = None, poll: float = 0.5) -> None:
    """Poll check() -> (done, progress value, line) until done; print the line every `every` s; fail on a stall."""
    last_value, last_change, last_print = None, time.monotonic(), 0.0
    while True:
        result = check()
        done, value, line = await result if asyncio.iscoroutine(result) else result
        now = time.monotonic()
        if value != last_value:
            last_value, last_change = value, now
        if done:
            log(f"{what}: {line}")
            return
        if now - last_print >= every:
            log(f"{what}: {line}")
            last_print = now
        if now - last_change > stall:
            raise Stalled(f"{what}: no progress for {stall:.0f} s; {line}"
                          + (f"; {describe()}" if describe else ""))
        await asyncio.sleep(poll)


# ---- the API server, from this script --------------------------------------------------------------

class Kube:
    """Keep-alive aiohttp session to the API server with the admin token and this script's userAgent."""

    def __init__(self, kubeconfig: Path) -> None:
        doc = yaml.safe_load(kubeconfig.read_text())
        cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
        self.server = cluster["server"]
        self.ca = cluster.get("certificate-authority")
        self.ssl = ssl.create_default_context(cafile=self.ca)
        self.headers = {"Authorization": f"Bearer {user['token']}", "User-Agent": AGENT,
                        "Accept": "application/json", "Content-Type": "application/json"}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Kube:
        self.session = aiohttp.ClientSession(self.server, headers=self.headers, read_bufsize=2**22,
                                             connector=aiohttp.TCPConnector(ssl=self.ssl, limit=64))
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def request(self, method: str, path: str, body: Any = None, content_type: str | None = None,
                      ok: tuple[int, ...] = (200, 201)) -> dict:
        assert self.session is not None
        headers = {"Content-Type": content_type} if content_type else None
        for attempt in range(5):
            async with self.session.request(method, path, json=body, headers=headers) as r:
                if r.status in ok:
                    return await r.json()
                text = await r.text()
                if r.status in (429, 500, 503, 504) and attempt < 4:
                    await asyncio.sleep(0.5 * 2 ** attempt)
                    continue
                raise RuntimeError(f"{method} {path}: {r.status} {text[:300]}")
        raise AssertionError("unreachable")

    @staticmethod
    def tasks(ns: str, name: str = "") -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}" + (f"/{name}" if name else "")

    async def create_tasks(self, ns: str, names: list[str], spec: dict, concurrency: int,
                           then: Callable[[str, dict], Any] | None = None) -> dict[str, float]:
        """Create the tasks from `concurrency` clients at once; name -> time.time() the create was answered."""
        answered: dict[str, float] = {}
        todo = iter(names)

        async def one_client() -> None:
            for name in todo:
                obj = await self.request("POST", self.tasks(ns), {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationTask", "metadata": {"name": name},
                    "spec": spec})
                answered[name] = time.time()
                if then is not None:
                    await then(name, obj)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return answered

    async def patch_status(self, ns: str, name: str, status: dict) -> dict:
        return await self.request("PATCH", self.tasks(ns, name) + "/status", {"status": status},
                                  content_type="application/merge-patch+json")

    async def list_tasks(self, ns: str) -> tuple[list[dict], str]:
        items, cont = [], ""
        while True:
            page = await self.request("GET", self.tasks(ns) + f"?limit=500&continue={cont}")
            items += page["items"]
            cont = page["metadata"].get("continue") or ""
            if not cont:
                return items, page["metadata"]["resourceVersion"]


class Watcher:
    """List + watch the tasks of a namespace: each task's latest object and when phases were first seen."""

    def __init__(self, kube: Kube, ns: str) -> None:
        self.kube, self.ns = kube, ns
        self.latest: dict[str, dict] = {}
        self.first_seen: dict[str, dict[str, float]] = {}
        self.relists = 0
        self.task: asyncio.Task | None = None

    def _note(self, obj: dict) -> None:
        name = obj["metadata"]["name"]
        self.latest[name] = obj
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        self.first_seen.setdefault(name, {}).setdefault(phase, time.time())

    async def run(self) -> None:
        assert self.kube.session is not None
        while True:
            items, rv = await self.kube.list_tasks(self.ns)
            for obj in items:
                self._note(obj)
            path = self.kube.tasks(self.ns) + f"?watch=true&allowWatchBookmarks=true&timeoutSeconds=1800" \
                                               f"&resourceVersion={rv}"
            try:
                async with self.kube.session.get(path, timeout=aiohttp.ClientTimeout(total=None)) as r:
                    async for line in r.content:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            break            # 410 Gone and the like: list again
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._note(event["object"])
            except (TimeoutError, aiohttp.ClientError, ValueError):
                await asyncio.sleep(0.5)
            self.relists += 1

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def phases(self) -> Counter:
        return Counter((o.get("status") or {}).get("phase") or "Pending" for o in self.latest.values())


FINAL = [p.value for p in Phase if p.terminal]


class MirrorCount:
    """Polls MongoDB (in a thread) for how many records of a namespace show a final phase."""

    def __init__(self, mongo_url: str, ns: str, every: float = 1.0) -> None:
        # counted the way the API counts a list (on FerretDB from the timeline, not every record)
        self.mirror = TaskMirror(connect(Settings(mongo_url=mongo_url)))
        self.ns, self.every = ns, every
        self.count, self.reached_at = 0, {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                n = self.mirror.list(namespace=self.ns, phases=FINAL, limit=1)[1]
                if n != self.count:
                    self.count = n
                self.reached_at.setdefault(n, time.time())
            except Exception:  # noqa: BLE001 - FerretDB busy: try again
                pass
            self.stopping.wait(self.every)

    def start(self) -> MirrorCount:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)


# ---- the operator process ---------------------------------------------------------------------------

class Operator:
    def __init__(self, kubeconfig: Path, mongo_url: str, namespaces: list[str], executor: str,
                 inline_concurrency: int, logfile: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.logfile = logfile
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "MONGO_URL": mongo_url,
               "LOG_LEVEL": os.environ.get("GENTASK_BENCH_LOG_LEVEL", "warning"),
               "GENTASK_METRICS_PORT": str(self.port), "GENTASK_WORKER_IMAGE": "gentask:dev",
               "GENTASK_WATCH_NAMESPACES": ",".join(namespaces), "GENTASK_EXECUTOR": executor,
               "GENTASK_INLINE_CONCURRENCY": str(inline_concurrency), **(extra_env or {})}
        self.env = env
        with open(logfile, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gentask", "operator"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.proc.returncode}; see {logfile}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the operator did not become ready in 90 s; see {logfile}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        """Fail at once when the operator has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.proc.returncode}; see {self.logfile}")

    def metrics(self) -> dict[str, float]:
        """name{labels} -> value from /metrics; {} when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric_sum(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def stop(self) -> None:
        """SIGTERM to the operator's process group (it leads it), SIGKILL after 20 s."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class PoolWorkers:
    """The pool executor's `gentask worker pool` processes, each its own process group."""

    def __init__(self, env: dict[str, str], replicas: int, concurrency: int, logdir: Path, tag: str) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs = [logdir / f"bench-pool-{tag}-{i}.log" for i in range(replicas)]
        for i, logfile in enumerate(self.logs):
            penv = {**env, "POD_NAME": f"bench-pool-{tag}-{i}", "GENTASK_POOL_CONCURRENCY": str(concurrency),
                    "GENTASK_METRICS_PORT": "0"}
            with open(logfile, "ab") as out:
                self.procs.append(subprocess.Popen([sys.executable, "-m", "gentask", "worker", "pool"], env=penv,
                                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   start_new_session=True))

    def pids(self) -> dict[str, int]:
        return {f"pool-{i}": p.pid for i, p in enumerate(self.procs)}

    def check(self) -> None:
        for p, logfile in zip(self.procs, self.logs, strict=True):
            if p.poll() is not None:
                raise RuntimeError(f"a pool process exited with {p.returncode}; see {logfile}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


async def settled_rss(pid: int, budget: float = 60.0, window: int = 5) -> tuple[float, float]:
    """VmRSS once `window` readings 2 s apart stay within 1 % (or after `budget` s), and VmHWM."""
    readings: list[float] = []
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        readings.append(rss_mib(pid)[0])
        recent = readings[-window:]
        if len(recent) == window and max(recent) - min(recent) <= 0.01 * max(recent):
            break
        await asyncio.sleep(2)
    return rss_mib(pid)


def log_summary(path: Path, top: int = 5) -> str:
    """The operator log's warning and error messages, counted (what a stalled run shows)."""
    counts: Counter = Counter()
    try:
        for line in path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("level") in ("warning", "error", "critical"):
                counts[str(doc.get("message"))[:160]] += 1
    except OSError:
        return f"no operator log at {path}"
    if not counts:
        return f"the operator logged no warning or error ({path})"
    return f"the operator's log ({path}) has " + "; ".join(f"{n} × {m!r}" for m, n in counts.most_common(top))


# ---- the audit log ---------------------------------------------------------------------------------

def client_of(user: str, agent: str, ns: str) -> str:
    product = agent.split(" ", 1)[0].split("/", 1)[0]
    if agent.startswith(AGENT):
        return "benchmark (creates)"
    if user.startswith(f"system:serviceaccount:{ns}:"):
        return "workers"
    if product == "kube-controller-manager":
        return "controller-manager"
    if product == "kube-scheduler":
        return "scheduler"
    if product == "OpenAPI-Generator":
        return "process node"
    if product in ("kopf", "Python") or "aiohttp" in agent:
        return "gentask operator"
    return product or "other"


# what the operator makes once a namespace (its worker account, gentask.operator.jobs), not once a task
NAMESPACE_SETUP = ("serviceaccounts", "roles", "rolebindings", "networkpolicies")


def audit_writes(path: Path, offset: int, ns: str, tasks: int) -> dict:
    """Write requests on the namespace's objects since `offset`, by client, identity and what."""
    by: dict[tuple[str, str, str], Counter] = {}
    failed: Counter = Counter()
    setup = 0           # the operator's writes made once for the namespace, whatever its number of tasks
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ref = event.get("objectRef") or {}
            if ref.get("namespace") != ns and not (ref.get("resource") == "namespaces" and ref.get("name") == ns):
                continue
            user, agent = event["user"]["username"], event.get("userAgent", "")
            who = client_of(user, agent, ns)
            if who == "workers":      # one account a namespace, or one a task (gentask-worker-<task>)
                account = user.rsplit(":", 1)[1]
                user = "system:serviceaccount:NS:" + ("gentask-worker-*" if account.startswith("gentask-worker-")
                                                      else account)
            elif who == "controller-manager":
                agent = agent.split(" ", 1)[0]
            short_agent = agent.split(" ", 1)[0] if len(agent) > 40 else agent
            what = f"{event['verb']} {ref.get('resource', '?')}" + (f"/{ref['subresource']}" if ref.get("subresource")
                                                                     else "")
            by.setdefault((who, user, short_agent or "-"), Counter())[what] += 1
            if who == "gentask operator" and event["verb"] == "create" and ref.get("resource") in NAMESPACE_SETUP:
                setup += 1
            if (event.get("responseStatus") or {}).get("code", 200) >= 400:
                failed[(who, what, event["responseStatus"]["code"])] += 1
    rows = [{"client": who, "user": user, "agent": agent, "writes": sum(c.values()),
             "per_task": round(sum(c.values()) / tasks, 2),
             "what": {k: round(v / tasks, 2) for k, v in c.most_common()}}
            for (who, user, agent), c in sorted(by.items(), key=lambda kv: -sum(kv[1].values()))]
    totals = Counter()
    for r in rows:
        totals[r["client"]] += r["writes"]
    return {"rows": rows, "by_client": {k: round(v / tasks, 2) for k, v in totals.most_common()},
            "total_per_task": round(sum(totals.values()) / tasks, 2),
            "namespace_setup": setup, "namespace_setup_per_task": round(setup / tasks, 3),
            "failed": {f"{w} {what} {code}": n for (w, what, code), n in failed.most_common()}}


# ---- one executor's run ---------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, dev: DevCluster, state: Any, core: client.CoreV1Api) -> None:
        self.args, self.dev, self.state, self.core = args, dev, state, core
        self.prefix = f"bop-{uuid.uuid4().hex[:5]}"
        self.namespaces: list[str] = []
        self.databases: list[str] = []
        self.audit = dev.root / "logs" / "audit.log"
        self.spec = {"provider": "fake", "userID": "bench", "prompt": PROMPT, **SPECS[args.type]}
        self.template_status: dict | None = None

    def mongo_url(self, db: str) -> str:
        self.databases.append(db)
        return self.state.mongo_url.rsplit("/", 1)[0] + "/" + db

    def namespace(self, name: str, secret_mongo: str | None = None) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        self.namespaces.append(name)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.core.read_namespaced_service_account("default", name)
                break
            except client.ApiException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if secret_mongo:
            self.core.create_namespaced_secret(name, {"metadata": {"name": "gentask-credentials"},
                                                      "stringData": {"MONGO_URL": secret_mongo}})
        return name

    def names(self, n: int, start: int = 0) -> list[str]:
        return [f"op-{i:06d}" for i in range(start, start + n)]

    async def raw_creates(self, kube: Kube, executor: str) -> dict:
        ns = self.namespace(f"{self.prefix}-raw-{executor}")
        await kube.create_tasks(ns, [f"warm-{i:02d}" for i in range(self.args.concurrency)], self.spec,
                                self.args.concurrency)      # connections open, the CRD's first use behind us
        t0 = time.time()
        answered = await kube.create_tasks(ns, self.names(self.args.tasks), self.spec, self.args.concurrency)
        elapsed = max(answered.values()) - t0
        rate = len(answered) / elapsed
        log(f"{executor}: raw creates: {len(answered)} in {elapsed:.1f} s = {rate:.0f}/s "
            f"({self.args.concurrency} clients, namespace {ns}, no operator)")
        out = {"tasks": len(answered), "seconds": round(elapsed, 2), "per_s": round(rate, 1)}
        if executor == "inline":
            out["floor"] = await self.api_floor(kube, ns)
        return out

    async def api_floor(self, kube: Kube, ns: str) -> dict:
        """The API server's ceiling for what an inline task needs of it at least: its create, one status
        write (its outcome, as the inline executor writes it) and one Event, by the same clients, no
        operator. CPU per task of the API server and etcd over it."""
        status = self.outcome_status()

        async def finish(name: str, obj: dict) -> None:
            await kube.patch_status(ns, name, status)
            task = GenerationTask.model_validate(obj)
            await kube.request("POST", f"/api/v1/namespaces/{ns}/events",
                               event_manifest(task, "Completed", "served by fake/fake-text after 1 attempt"))
        meter = CPU({k: v for k, v in self.state.pids.items() if k in ("apiserver", "etcd")})
        meter.start()
        t0 = time.time()
        answered = await kube.create_tasks(ns, [f"floor-{i:05d}" for i in range(self.args.tasks)], self.spec,
                                           self.args.concurrency, then=finish)
        elapsed = max(answered.values()) - t0
        cpu_s = meter.stop()
        rate = len(answered) / elapsed
        per_task = {k: round(1000 * v / len(answered), 2) for k, v in cpu_s.items()}
        log(f"inline: API floor: {len(answered)} tasks created, given their outcome and an Event in {elapsed:.1f} s "
            f"= {rate:.0f}/s; CPU ms a task {per_task}")
        return {"tasks": len(answered), "seconds": round(elapsed, 2), "per_s": round(rate, 1),
                "cpu_ms_per_task": per_task}

    def outcome_status(self) -> dict:
        """The status an inline run's outcome writes (one write: its claim's fields and its outcome)."""
        task = GenerationTask.model_validate({"metadata": {"name": "x", "generation": 1}, "spec": self.spec})
        queued = transition(task, Phase.QUEUED, "Validated", "queued for the inline executor")
        task = task.model_copy(update={"status": task.status.model_copy(update=dict(queued))})
        running = transition(task, Phase.RUNNING, "Started", "attempt 1 running on pod inline-bench", attempts=1,
                             worker_pod="inline-bench", start_time=utc_now())
        task = task.model_copy(update={"status": task.status.model_copy(update=dict(running))})
        done = transition(task, Phase.SUCCEEDED, "Completed", "served by fake/fake-text", attempts=1,
                          worker_pod="inline-bench", start_time=running.start_time,
                          served_by={"provider": "fake", "model": "fake-text"},
                          result={"text": "Simulated answer.", "usage": {"total_tokens": 3}})
        return status_patch(done)

    async def run(self, kube: Kube, executor: str) -> dict:
        n, stall = self.args.tasks, self.args.stall
        result: dict[str, Any] = {"executor": executor, "tasks": n}
        result["raw"] = await self.raw_creates(kube, executor)
        db = f"bench_op_{self.prefix[4:]}_{executor}"
        mongo_url = self.mongo_url(db)
        ns = self.namespace(f"{self.prefix}-{executor}", secret_mongo=mongo_url)
        logfile = self.dev.root / "logs" / f"bench-operator-{executor}.log"
        pool_env = {"GENTASK_POOL_LEASE_NAMESPACE": ns} if executor == "pool" else {}
        op = Operator(self.state.kubeconfig, mongo_url, [ns], executor, self.args.inline_concurrency, logfile,
                      extra_env=pool_env)
        log(f"{executor}: operator pid {op.pid} ready (namespace {ns}, database {db}, log {logfile})")
        pool = (PoolWorkers(op.env, self.args.pool_replicas, self.args.pool_concurrency, logfile.parent,
                            self.prefix[4:]) if executor == "pool" else None)
        if pool is not None:
            log(f"{executor}: {self.args.pool_replicas} pool process(es), pids {pool.pids()}, "
                f"{self.args.pool_concurrency} slots each")
        watcher, mirror = Watcher(kube, ns), MirrorCount(mongo_url, ns).start()
        pids = {k: v for k, v in self.state.pids.items() if k in (
            "apiserver", "etcd", "controller-manager", "scheduler", "node", "ferretdb", "postgres")}
        meter = CPU({"operator": op.pid, **(pool.pids() if pool is not None else {}), **pids})
        try:
            watcher.start()
            await asyncio.sleep(1.0)
            audit_offset = self.audit.stat().st_size if self.audit.exists() else None
            meter.start()
            t0 = time.time()
            answered = await kube.create_tasks(ns, self.names(n), self.spec, self.args.run_concurrency)
            created_s = max(answered.values()) - t0
            log(f"{executor}: created {n} tasks in {created_s:.1f} s ({n / created_s:.0f}/s) while the operator ran")

            def finished() -> tuple[bool, int, str]:
                op.check()
                if pool is not None:
                    pool.check()
                phases = watcher.phases()
                done = sum(phases[p] for p in TERMINAL)
                rate = phases["Succeeded"] / max(1e-9, time.time() - t0)
                counts = dict(sorted(phases.items()))
                return done >= n, tuple(counts.items()), (f"{phases['Succeeded']}/{n} Succeeded ({rate:.1f}/s), "
                                                          f"phases {counts}, mirrored {mirror.count}")
            await wait_progress(f"{executor}: run", finished, stall, describe=lambda: log_summary(logfile))

            def mirrored() -> tuple[bool, int, str]:
                op.check()
                return mirror.count >= n, mirror.count, f"{mirror.count}/{n} records with a final phase in MongoDB"
            await wait_progress(f"{executor}: mirror", mirrored, stall,
                                describe=lambda: f"operator metrics: mirror pending "
                                                 f"{op.metric_sum('gentask_mirror_pending'):.0f}")
            mirrored_at = mirror.reached_at.get(mirror.count, time.time())
            if executor == "job":      # the node has reaped every worker (its CPU is then in the node's children)
                pods: list = []
                for _ in range(120):
                    pods = self.core.list_namespaced_pod(ns).items
                    if all(p.status.phase in ("Succeeded", "Failed") for p in pods):
                        break
                    await asyncio.sleep(0.5)
                result["pods"] = len(pods)
                try:
                    result["node_pods"] = self.core.read_node("gentask-node").status.capacity.get("pods")
                except client.ApiException:
                    pass
            cpu_s = meter.stop()
            rss, hwm = await settled_rss(op.pid)
            writes = {k: v for k, v in op.metrics().items() if k.startswith("gentask_operator_api_writes_total{")}
        finally:
            mirror.stop()
            await watcher.stop()
            if pool is not None:
                pool.stop()
            op.stop()
        states = watcher.latest
        succeeded = [nm for nm, o in states.items() if (o.get("status") or {}).get("phase") == "Succeeded"]
        last_done = max(watcher.first_seen[nm]["Succeeded"] for nm in succeeded) if succeeded else t0
        # a quick inline task goes from Pending to its outcome in one write: its wait ends with the outcome
        waits = [1000 * (min(t for p, t in watcher.first_seen[nm].items() if p in ("Running", *TERMINAL))
                         - answered[nm]) for nm in answered
                 if {"Running", *TERMINAL} & set(watcher.first_seen.get(nm, {}))]
        status_waits = []
        for o in states.values():
            st = o.get("status") or {}
            if st.get("startTime"):
                status_waits.append((datetime.fromisoformat(st["startTime"])
                                     - datetime.fromisoformat(o["metadata"]["creationTimestamp"])).total_seconds())
        if succeeded:
            self.template_status = states[succeeded[-1]]["status"]
        result.update({
            "created_per_s": round(n / created_s, 1),
            "succeeded": len(succeeded),
            "failed": dict(Counter(f"{st.get('phase') or 'Pending'} ({st.get('reason') or 'no reason'})"
                                   for st in ((o.get("status") or {}) for o in states.values())
                                   if st.get("phase") != "Succeeded")),
            "attempts_over_1": sum(1 for o in states.values() if ((o.get("status") or {}).get("attempts") or 1) > 1),
            "seconds_to_succeeded": round(last_done - t0, 2),
            "succeeded_per_s": round(len(succeeded) / (last_done - t0), 2),
            "seconds_to_mirrored": round(mirrored_at - t0, 2),
            "mirrored_per_s": round(n / (mirrored_at - t0), 2),
            "ratio_to_raw": round(len(succeeded) / (last_done - t0) / result["raw"]["per_s"], 4),
            "queue_wait_ms": {"samples": len(waits), "p50": round(percentile(waits, 50)),
                              "p99": round(percentile(waits, 99)), "max": round(max(waits))} if waits else None,
            "queue_wait_status_s": {"samples": len(status_waits), "p50": percentile(status_waits, 50),
                                    "p99": percentile(status_waits, 99)} if status_waits else None,
            "cpu_s": {k: round(v, 2) for k, v in cpu_s.items()},
            "cpu_ms_per_task": {k: round(1000 * v / n, 2) for k, v in cpu_s.items()},
            "operator_rss_mib": round(rss, 1), "operator_hwm_mib": round(hwm, 1),
            "operator_api_writes": {k.split('"')[1]: v for k, v in writes.items()},
            "watch_relists": watcher.relists,
        })
        if audit_offset is not None:
            await asyncio.sleep(2)     # the last events reach the file
            result["audit"] = audit_writes(self.audit, audit_offset, ns, n)
        log(f"{executor}: {len(succeeded)} Succeeded in {last_done - t0:.1f} s = {result['succeeded_per_s']}/s, "
            f"mirrored in {mirrored_at - t0:.1f} s; operator RSS {rss:.0f} MiB")
        return result

    # ---- worker CPU, exactly: the pod's command under this script's wait4 --------------------------------

    async def worker_sample(self, kube: Kube) -> dict:
        """Run M workers as their pods would run, one at a time, each under os.wait4.

        The operator (job executor) handles a namespace of its own as always: Queued, the worker's
        service account, the Job. A ResourceQuota (no pods of the gentask priority classes) keeps
        the Job controller from making the pods; for each Job this script makes the pod from the
        Job's template instead (no priority class, bound to a node that does not exist, so nothing
        else runs it), requests a token bound to that pod, resolves the env with the process node's
        own resolver, and runs the container's command the way the process node does."""
        from devcluster.node import EnvResolver, ImageMap, expand
        m = self.args.worker_sample
        mongo_url = self.mongo_url(f"bench_op_{self.prefix[4:]}_sample")
        ns = self.namespace(f"{self.prefix}-sample", secret_mongo=mongo_url)
        self.core.create_namespaced_resource_quota(ns, {"metadata": {"name": "no-worker-pods"}, "spec": {
            "hard": {"pods": "0"}, "scopeSelector": {"matchExpressions": [{
                "scopeName": "PriorityClass", "operator": "In",
                "values": ["gentask-critical", "gentask-default", "gentask-low"]}]}}})
        folder = self.dev.root / "logs" / "bench-worker-sample"
        folder.mkdir(parents=True, exist_ok=True)
        op = Operator(self.state.kubeconfig, mongo_url, [ns], "job", self.args.inline_concurrency,
                      self.dev.root / "logs" / "bench-operator-sample.log")
        batch = client.BatchV1Api(self.core.api_client)
        resolver, images = EnvResolver(self.core, {"cpu": "8", "memory": "16Gi", "pods": "110"}), ImageMap()
        host, _, port = kube.server.removeprefix("https://").partition(":")
        runs = []
        try:
            await kube.create_tasks(ns, self.names(m), self.spec, 4)
            for name in self.names(m):
                job_doc = None
                for _ in range(240):
                    task = await kube.request("GET", kube.tasks(ns, name))
                    job_name = (task.get("status") or {}).get("jobName")
                    if job_name:
                        try:
                            job_doc = batch.read_namespaced_job(job_name, ns)
                            break
                        except client.ApiException:
                            pass
                    await asyncio.sleep(0.25)
                if job_doc is None:
                    raise Stalled(f"worker sample: the operator made no Job for {ns}/{name} in 60 s "
                                  f"(status {task.get('status')})")
                template = self.core.api_client.sanitize_for_serialization(job_doc.spec.template)
                labels = {k: v for k, v in (template["metadata"].get("labels") or {}).items()
                          if "controller-uid" not in k}       # the Job must not adopt this pod
                spec = {**template["spec"], "nodeName": "bench-no-node"}
                spec.pop("priorityClassName", None)
                spec.pop("priority", None)
                pod_name = f"{job_doc.metadata.name[:57]}-bench"
                created = self.core.create_namespaced_pod(ns, {
                    "metadata": {"name": pod_name, "labels": {**labels, "batch.kubernetes.io/job-name": job_name},
                                 "annotations": template["metadata"].get("annotations") or {}},
                    "spec": spec})
                pod = self.core.read_namespaced_pod(pod_name, ns)
                container = pod.spec.containers[0]
                pod_dir = folder / f"{ns}_{pod_name}"
                (pod_dir / "tmp").mkdir(parents=True, exist_ok=True)
                kubeconfig = None
                if pod.spec.automount_service_account_token is not False:
                    account = pod.spec.service_account_name or "default"
                    token = self.core.create_namespaced_service_account_token(account, ns, {
                        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": {"expirationSeconds": 3600, "boundObjectRef": {
                            "apiVersion": "v1", "kind": "Pod", "name": pod_name,
                            "uid": created.metadata.uid}}}).status.token
                    kubeconfig = pod_dir / "kubeconfig"
                    kubeconfig.write_text(json.dumps({        # as the process node writes it
                        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
                        "clusters": [{"name": "local", "cluster": {"server": kube.server,
                                                                   "certificate-authority": kube.ca}}],
                        "users": [{"name": account, "user": {"token": token}}],
                        "contexts": [{"name": "pod", "context": {"cluster": "local", "user": account,
                                                                 "namespace": ns}}]}, indent=2))
                image = images.resolve(container.image or "")
                base = {"PATH": os.pathsep.join(image.path + [os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")]),
                        "HOME": str(pod_dir), "TMPDIR": str(pod_dir / "tmp"), "HOSTNAME": pod_name,
                        "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "KUBERNETES_SERVICE_HOST": host,
                        "KUBERNETES_SERVICE_PORT": port or "443", **image.env}
                if kubeconfig:
                    base["KUBECONFIG"] = str(kubeconfig)
                env = {**base, **resolver.resolve(pod, container)}
                argv = [expand(c, env) for c in (container.command or image.entrypoint)] + \
                       [expand(a, env) for a in (container.args or [])]
                argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
                checkout = None
                if self.args.worker_checkouts:      # A/B: the workers take turns with each checkout's gentask/
                    checkout = self.args.worker_checkouts[len(runs) % len(self.args.worker_checkouts)]
                    env["PYTHONPATH"] = str(checkout)
                env.update(self.args.worker_env)
                if self.args.worker_profile:        # where a worker's CPU goes: pstats files, one a worker
                    self.args.worker_profile.mkdir(parents=True, exist_ok=True)
                    argv = [sys.executable, "-m", "cProfile", "-o",
                            str(self.args.worker_profile / f"{name}.prof"), *argv]
                t = time.monotonic()
                with open(pod_dir / f"{container.name}.log", "ab") as out:
                    proc = subprocess.Popen(argv, env=env, cwd=pod_dir, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                _, status, usage = await asyncio.to_thread(os.wait4, proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                wall = time.monotonic() - t
                phase = ((await kube.request("GET", kube.tasks(ns, name))).get("status") or {}).get("phase")
                runs.append({"cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime,
                             "sys_s": usage.ru_stime, "max_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall,
                             "exit": proc.returncode, "phase": phase, "checkout": checkout})
        finally:
            op.stop()
        out = _sample_figures(runs)
        if self.args.worker_checkouts:
            out["by_checkout"] = {str(c): _sample_figures([r for r in runs if r["checkout"] == c])
                                  for c in self.args.worker_checkouts}
        log(f"worker sample: {json.dumps(out)}")
        return out

    # ---- memory with many finished tasks ----------------------------------------------------------------

    async def seed_finished(self, kube: Kube, ns: str, have: int, want: int, mongo_url: str | None = None) -> float:
        """Create tasks have..want-1 and patch them Succeeded (no operator runs); seconds it took.

        With mongo_url, their records go into that mirror as the operator would have written them
        (insert_many of record_from_task), as after a restart: the history is already there."""
        status = dict(self.template_status or {})
        if not status:
            task = GenerationTask.model_validate({"metadata": {"name": "x", "generation": 1},
                                                  "spec": self.spec})
            done = transition(task, Phase.SUCCEEDED, "Completed", "served by fake/fake-text", attempts=1,
                              result={"text": "Simulated answer.", "usage": {"total_tokens": 3}})
            status = status_patch(done)
        count = {"n": 0}

        records: list[dict] = []

        async def finish(name: str, _obj: dict) -> None:
            obj = await kube.patch_status(ns, name, {**status, "jobName": name, "workerPod": f"{name}-x"})
            if mongo_url:
                records.append(record_from_task(obj))
            count["n"] += 1

        t0 = time.monotonic()
        total = want - have
        job = asyncio.get_running_loop().create_task(
            kube.create_tasks(ns, self.names(total, have), self.spec, 2 * self.args.concurrency, then=finish))

        def progress() -> tuple[bool, int, str]:
            n = count["n"]
            rate = n / max(1e-9, time.monotonic() - t0)
            eta = (total - n) / rate if rate else float("inf")
            return job.done(), n, (f"{have + n:,}/{want:,} finished tasks made ({rate:.0f}/s, "
                                   f"{time.monotonic() - t0:.0f} s, about {eta:.0f} s to go)")
        try:
            await wait_progress("finished tasks", progress, self.args.stall, every=10, poll=1)
        finally:
            if not job.done():
                job.cancel()
        await job
        if records:      # records and what lists and the audit read (the timeline on FerretDB)
            mirror = TaskMirror(connect(Settings(mongo_url=mongo_url)))
            await asyncio.to_thread(mirror.ensure_indexes)
            for i in range(0, len(records), 1000):
                await asyncio.to_thread(mirror.insert_many, records[i:i + 1000])
        return time.monotonic() - t0

    async def finished(self, kube: Kube, sizes: list[int], stalled: Callable[[Stalled], None]) -> list[dict]:
        ns = self.namespace(f"{self.prefix}-finished")
        db = f"bench_op_{self.prefix[4:]}_finished"
        mongo_url = self.mongo_url(db)
        out, have = [], 0
        for size in sizes:
            try:
                out.append(await self._finished_step(kube, ns, mongo_url, have, size))
            except Stalled as exc:
                stalled(exc)
                break
            have = size
        return out

    async def _finished_step(self, kube: Kube, ns: str, mongo_url: str, have: int, size: int) -> dict:
        seconds = await self.seed_finished(kube, ns, have, size, mongo_url if self.args.finished_mirrored else None)
        log(f"{size:,} finished tasks present: made {size - have:,} in {seconds:.0f} s "
            f"({(size - have) / seconds:.0f} tasks/s, create + status patch each)")
        logfile = self.dev.root / "logs" / f"bench-operator-finished-{size}.log"
        t0 = time.monotonic()
        op = Operator(self.state.kubeconfig, mongo_url, [ns], "job", self.args.inline_concurrency, logfile)
        mirror = MirrorCount(mongo_url, ns, every=10.0).start()
        try:
            def seen() -> tuple[bool, tuple, str]:
                op.check()
                n, rss = int(op.metric_sum("gentask_tasks")), rss_mib(op.pid)[0]
                # progress: tasks seen, or memory growing while Kopf's one LIST of them all comes in
                return n >= size, (n, int(rss / 5)), (f"operator has seen {n:,}/{size:,} tasks; RSS {rss:.0f} "
                                                      f"MiB, mirror pending "
                                                      f"{op.metric_sum('gentask_mirror_pending'):,.0f}")
            await wait_progress(f"operator over {size:,} finished", seen, self.args.stall, every=10, poll=2)
            seen_s = time.monotonic() - t0
            pending_seen = op.metric_sum("gentask_mirror_pending")
            rss_seen, _ = await settled_rss(op.pid, budget=60)
            log(f"operator over {size:,} finished: all seen {seen_s:.0f} s after its start "
                f"({pending_seen:,.0f} changes waiting for the mirror then), RSS {rss_seen:.0f} MiB")
            deadline = time.monotonic() + self.args.settle_budget
            mirrored_s, mirror_stalled = None, False
            last = (-1, time.monotonic())
            while time.monotonic() < deadline:
                pending = op.metric_sum("gentask_mirror_pending")
                if mirror.count >= size and pending == 0:
                    mirrored_s = time.monotonic() - t0
                    break
                if mirror.count != last[0]:
                    last = (mirror.count, time.monotonic())
                elif time.monotonic() - last[1] > 3 * self.args.stall:    # counted every 10 s, slowly
                    mirror_stalled = True     # not a task wait: measure what is, and say so
                    log(f"operator over {size:,} finished: the mirror made no progress for "
                        f"{3 * self.args.stall:.0f} s ({mirror.count:,} records with a final phase, {pending:,.0f} "
                        "changes pending); measuring now")
                    break
                log(f"operator over {size:,} finished: mirror has {mirror.count:,}/{size:,}, pending "
                    f"{pending:,.0f}, RSS {rss_mib(op.pid)[0]:.0f} MiB")
                await asyncio.sleep(10)
            rss, hwm = await settled_rss(op.pid, budget=60)
            row = {"finished": size, "made_seconds": round(seconds), "seen_seconds": round(seen_s),
                   "rss_seen_mib": round(rss_seen, 1), "pending_when_seen": int(pending_seen),
                   "mirrored_seconds": round(mirrored_s) if mirrored_s else None,
                   "mirrored_records": mirror.count, "pending_at_end": int(op.metric_sum("gentask_mirror_pending")),
                   "mirror_stalled": mirror_stalled, "measured_seconds": round(time.monotonic() - t0),
                   "rss_mib": round(rss, 1), "hwm_mib": round(hwm, 1)}
        finally:
            mirror.stop()
            op.stop()
        log(f"operator over {size:,} finished: {json.dumps(row)}")
        return row


async def bench(args: argparse.Namespace, b: Bench) -> dict:
    results: dict[str, Any] = {"runs": [], "worker_sample": None, "finished": [], "stalled": []}

    def stalled(exc: Stalled) -> None:
        log(f"STALLED: {exc}")
        results["stalled"].append(str(exc))

    async with Kube(b.state.kubeconfig) as kube:
        for executor in args.executors:
            try:
                results["runs"].append(await b.run(kube, executor))
                if executor == "job" and args.worker_sample > 0:
                    results["worker_sample"] = await b.worker_sample(kube)
            except Stalled as exc:     # the wait failed: say so, and measure what comes next
                stalled(exc)
        if args.finished:
            results["finished"] = await b.finished(kube, args.finished, stalled)
    return results


# ---- the report ---------------------------------------------------------------------------------------

def _sample_figures(runs: list[dict]) -> dict:
    """CPU, wall time and peak RSS of sampled workers (os.wait4 of each)."""
    cpus = [r["cpu_s"] for r in runs]
    return {"workers": len(runs), "succeeded": sum(r["phase"] == "Succeeded" for r in runs),
            "exit_codes": dict(Counter(r["exit"] for r in runs)),
            "cpu_ms": {"mean": round(1000 * sum(cpus) / len(cpus)), "p50": round(1000 * percentile(cpus, 50)),
                       "min": round(1000 * min(cpus)), "max": round(1000 * max(cpus)),
                       "user_mean": round(1000 * sum(r["user_s"] for r in runs) / len(runs)),
                       "sys_mean": round(1000 * sum(r["sys_s"] for r in runs) / len(runs))},
            "wall_ms_p50": round(1000 * percentile([r["wall_s"] for r in runs], 50)),
            "max_rss_mib_p50": round(percentile([r["max_rss_mib"] for r in runs], 50), 1)}


def targets(results: dict) -> list[str]:
    """The issue's targets beside what this run measured (absent: not measured in this run)."""
    runs = {r["executor"]: r for r in results["runs"]}
    rows: list[tuple[str, str, float | None, str, bool | None]] = []

    def add(figure: str, target: str, value: float | None, shown: str, ok: bool | None) -> None:
        rows.append((figure, target, value, shown, ok))
    for executor, floor in (("job", 10.0), ("pool", 10.0), ("inline", 150.0)):
        r = runs.get(executor)
        v = r["succeeded_per_s"] if r else None
        add(f"{executor} executor, created → Succeeded", f"≥ {floor:g} tasks/s", v,
            f"{v:.1f}/s" if v is not None else "-", v >= floor if v is not None else None)
    r = runs.get("inline")
    v = r["ratio_to_raw"] if r else None
    add("inline ÷ raw creates, same run", "≥ 0.3", v, f"{v:.3f}" if v is not None else "-",
        v >= 0.3 if v is not None else None)
    floor = (r or {}).get("raw", {}).get("floor")
    if floor:
        add("API floor: create + outcome + Event a task, no operator, same run (the ceiling of any executor "
            "that writes them)", "-", floor["per_s"], f"{floor['per_s']:.0f}/s; inline is "
            f"{r['succeeded_per_s'] / floor['per_s']:.2f} of it", None)
    for executor in ("job", "pool", "inline"):
        audit = (runs.get(executor) or {}).get("audit")
        if not audit:
            continue
        own = sum(v for k, v in audit["by_client"].items() if k in ("gentask operator", "workers"))
        once = audit.get("namespace_setup", 0)
        per_task = own - audit.get("namespace_setup_per_task", 0)
        shown = f"{per_task:.2f}" + (f" (+ {once} writes once for the namespace: its worker account)" if once else "")
        add(f"gentask's writes per task, {executor}", "≤ 5", per_task, shown, per_task <= 5.005)
    ws = results.get("worker_sample")
    v = ws["cpu_ms"]["mean"] if ws else None
    add("worker CPU per fake task (mean)", "≤ 250 ms", v, f"{v:.0f} ms" if v is not None else "-",
        v <= 250 if v is not None else None)
    for f in results.get("finished") or []:
        limit = 200 if f["finished"] <= 10_000 else 600
        add(f"operator RSS with {f['finished']:,} finished tasks", f"≤ {limit} MB", f["rss_mib"],
            f"{f['rss_mib']:.0f} MiB", f["rss_mib"] * 1.048576 <= limit)
    lines = ["| figure | target | measured | met |", "|---|---|---|---|"]
    for figure, target, _v, shown, ok in rows:
        lines.append(f"| {figure} | {target} | {shown} | {'-' if ok is None else ('yes' if ok else '**no**')} |")
    return lines


def report(results: dict, args: argparse.Namespace, loads: tuple[float, float], started: bool) -> str:
    runs = results["runs"]
    lines = ["Targets (the \"Performance at scale\" issue) beside this run's figures:", "", *targets(results), "",
             f"Load average (1 min) at start and end: {loads[0]:.1f} and {loads[1]:.1f} on {os.cpu_count()} cores; "
             "other work on the machine shares them. The control plane, FerretDB over PostgreSQL, the process node, "
             "the operator, its workers and this script all run on this machine"
             + (", the cluster started by the benchmark with its audit log on." if started else
                ", on a cluster that was already running."),
             "",
             f"{args.tasks:,} GenerationTasks of the fake provider ({args.type}, `{SPECS[args.type]['model']}`, zero "
             f"latency), created by {args.run_concurrency} keep-alive client(s) at once (raw creates: "
             f"{args.concurrency}); the job executor's pods run on the process node"
             + "".join(f" (capacity {r['node_pods']} pods)" for r in runs if r.get("node_pods"))
             + ", the inline executor at "
             f"GENTASK_INLINE_CONCURRENCY={args.inline_concurrency}"
             + (f", the pool executor with {args.pool_replicas} `gentask worker pool` process(es) at "
                f"GENTASK_POOL_CONCURRENCY={args.pool_concurrency} (their API writes count as the operator's "
                "in the audit figures: same credentials, same client)" if "pool" in args.executors else "")
             + ".",
             "",
             "| executor | Succeeded | created → Succeeded | created → mirrored | raw creates | ratio | creates during "
             "the run | queue wait p50 / p99 (watch) | queue wait p50 / p99 (status times) | operator RSS after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        qw, qs = r["queue_wait_ms"] or {}, r["queue_wait_status_s"] or {}
        lines.append(
            f"| {r['executor']} | {r['succeeded']:,} "
            f"| {r['succeeded_per_s']:.1f}/s ({r['seconds_to_succeeded']:.0f} s) "
            f"| {r['mirrored_per_s']:.1f}/s ({r['seconds_to_mirrored']:.0f} s) | {r['raw']['per_s']:.0f}/s "
            f"| {r['ratio_to_raw']:.3f} | {r['created_per_s']:.0f}/s "
            f"| {qw.get('p50', 0) / 1000:,.2f} s / {qw.get('p99', 0) / 1000:,.2f} s "
            f"| {qs.get('p50', 0):.0f} s / {qs.get('p99', 0):.0f} s | {r['operator_rss_mib']:.0f} MiB |")
    other = [f"{r['executor']}: {r['failed']}" for r in runs if r["failed"]]
    if other:
        lines += ["", "Tasks that did not succeed: " + "; ".join(other) + "."]
    if results["stalled"]:
        lines += ["", f"Not measured, the wait stalled (no progress for {args.stall:.0f} s):", ""]
        lines += [f"- {msg}" for msg in results["stalled"]]
    names = list(runs[0]["cpu_ms_per_task"]) if runs else []
    if runs:
        lines += ["", "CPU milliseconds per task, by process, over the run (creates to the last record mirrored):",
                  "", "| executor | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in runs:
        lines.append(f"| {r['executor']} | " + " | ".join(f"{r['cpu_ms_per_task'].get(k, 0):,.1f}" for k in names)
                     + " |")
    for r in runs:
        audit = r.get("audit")
        if not audit:
            continue
        lines += ["", f"API server writes per task, {r['executor']} executor, from the audit log "
                      f"({audit['total_per_task']:.1f} in all; "
                      + ", ".join(f"{k} {v:.2f}" for k, v in audit["by_client"].items()) + "):", "",
                  "| client | user.username | userAgent | writes per task | what (per task) |", "|---|---|---|---|---|"]
        for row in audit["rows"]:
            if row["per_task"] < 0.005:
                continue
            what = ", ".join(f"{k} {v:g}" for k, v in row["what"].items() if v >= 0.005)
            lines.append(f"| {row['client']} | `{row['user']}` | `{row['agent']}` | {row['per_task']:.2f} | {what} |")
        if audit["failed"]:
            lines += ["", "Refused writes among them: " + ", ".join(f"{k}: {v}" for k, v in audit["failed"].items())
                      + "."]
    if not any(r.get("audit") for r in runs):
        lines += ["", "Writes per task by client: not measured, the cluster runs without an audit log (start it "
                      "with `python -m devcluster up --audit` or GENTASK_DEVCLUSTER_AUDIT=1)."]
    ws = results["worker_sample"]
    job = next((r for r in runs if r["executor"] == "job"), None)
    if ws or job:
        lines += ["", "Worker CPU per task (job executor):", ""]
        if job and job.get("pods"):
            per = 1000 * job["cpu_s"].get("pods (node's children)", 0) / job["pods"]
            lines.append(f"- whole run: {per:,.0f} ms a pod ({job['pods']:,} pods), the CPU time of the process "
                         "node's reaped children (every pod's processes are its children) over the run;")
        if ws:
            c = ws["cpu_ms"]
            lines.append(f"- {ws['workers']} workers run by the benchmark one at a time, each as its pod would run: "
                         "the operator queued the task and made its Job as always, a ResourceQuota kept the Job "
                         "controller from making the pod, the benchmark made it from the Job's template (bound to no "
                         "node) and ran its container's command (`gentask worker run NS/NAME`) with the env the "
                         "process node's resolver gives and a token bound to that pod, measured with os.wait4: "
                         f"{c['mean']} ms mean ({c['user_mean']} user + "
                         f"{c['sys_mean']} system), p50 {c['p50']} ms, max {c['max']} ms; wall time p50 "
                         f"{ws['wall_ms_p50']} ms, peak RSS p50 {ws['max_rss_mib_p50']:.0f} MiB; "
                         f"{ws['succeeded']}/{ws['workers']} Succeeded.")
            for checkout, b in (ws.get("by_checkout") or {}).items():
                c = b["cpu_ms"]
                lines.append(f"  - with {checkout} (every {len(ws['by_checkout'])}th worker): {c['mean']} ms mean "
                             f"({c['user_mean']} user + {c['sys_mean']} system), min {c['min']}, p50 {c['p50']}, "
                             f"max {c['max']} ms; {b['succeeded']}/{b['workers']} Succeeded.")
    if results["finished"]:
        lines += ["", "Operator memory with many finished tasks present (job executor, the operator started after "
                      "they were made; one namespace, watched; their records "
                  + ("already in MongoDB, as after a restart" if args.finished_mirrored else
                     "not in MongoDB: the operator mirrors them all") + "):", "",
                  "| finished tasks | made in | operator saw all, after its start | mirror changes pending then "
                  "| RSS then (settled, ≤ 60 s) | mirror caught up, after its start | RSS at the end | peak RSS |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in results["finished"]:
            caught = (f"{f['mirrored_seconds']:,} s" if f["mirrored_seconds"] is not None else
                      f"not by {f['measured_seconds']:,} s" + (f" (no progress for {3 * args.stall:.0f} s)"
                                                              if f["mirror_stalled"] else "")
                      + f": {f['mirrored_records']:,} records, {f['pending_at_end']:,} pending")
            lines.append(f"| {f['finished']:,} | {f['made_seconds']:,} s | {f['seen_seconds']:,} s | "
                         f"{f['pending_when_seen']:,} | {f['rss_seen_mib']:.0f} MiB | {caught} "
                         f"| {f['rss_mib']:.0f} MiB | {f['hwm_mib']:.0f} MiB |")
        lines += ["", "The operator watches unfinished tasks only (a field selector on status.phase), so Kopf lists "
                      "none of the finished ones at its start; its audit pages through them 500 at a time (TTL "
                      "timers, gentask_tasks, the mirror's versions compared) and mirrors again only what MongoDB "
                      "lacks or has older, no faster than the writer drains. *Operator saw all*: gentask_tasks "
                      "counts every finished task (the audit's first pass)."]
    lines += ["", HOW]
    return "\n".join(lines)


HOW = (
    "How each figure is measured. *created → Succeeded*: tasks that reached Succeeded ÷ seconds from the first "
    "create sent to the last Succeeded seen by a watch of the namespace; *created → mirrored*: tasks ÷ seconds "
    "until MongoDB (polled every second) holds a record with a final phase for each. *Raw creates*: the same N "
    "tasks created the same way just before, in a namespace no operator watches; *ratio* = created → Succeeded ÷ "
    "raw creates. *Queue wait (watch)*: from a task's create being answered to the watch first showing it Running; "
    "*(status times)*: status.startTime − metadata.creationTimestamp, which the API keeps in whole seconds. CPU: "
    "utime + stime from /proc/PID/stat of each process (with its descendants) before and after; *pods (node's "
    "children)* is the CPU of the worker processes the process node ran and reaped. *Writes per task*: the audit "
    "log's write requests (create, update, patch, delete) on objects of the run's namespace ÷ tasks, grouped by "
    "user.username and userAgent (NS: the run's namespace; the controller-manager's controllers each use their "
    "own service account, the scheduler and the process node the admin's, with their own userAgent). *RSS*: "
    "VmRSS of the operator once five readings 2 s apart agree within 1 %.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--executors", default="job,inline,pool")
    parser.add_argument("--finished-mirrored", action=argparse.BooleanOptionalAction, default=True,
                        help="the finished tasks' records are in MongoDB already (as after a restart); "
                             "--no-finished-mirrored: the operator must mirror them all")
    parser.add_argument("--finished", default="10000,100000",
                        help="finished-task counts for the memory figures, comma-separated; 0 or '' for none")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent create clients")
    parser.add_argument("--run-concurrency", type=int,
                        help="concurrent create clients while the operator runs (default: --concurrency)")
    parser.add_argument("--inline-concurrency", type=int, default=Settings.model_fields["inline_concurrency"].default)
    parser.add_argument("--pool-replicas", type=int, default=2, help="`gentask worker pool` processes (pool executor)")
    parser.add_argument("--pool-concurrency", type=int, default=Settings.model_fields["pool_concurrency"].default,
                        help="GENTASK_POOL_CONCURRENCY of each pool process")
    parser.add_argument("--worker-sample", type=int, default=20, help="workers run under wait4 (job executor)")
    parser.add_argument("--worker-profile", type=Path, default=None,
                        help="run the sampled workers under cProfile, one pstats file each in this folder")
    parser.add_argument("--worker-checkouts", default="",
                        help="A/B: folders holding a gentask/ package, comma-separated; the sampled workers take "
                             "turns with each (PYTHONPATH), figures reported for each")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra variable for the sampled workers (e.g. PYTHONPROFILEIMPORTTIME=1: the "
                             "import times go to each worker's log)")
    parser.add_argument("--settle-budget", type=float, default=600,
                        help="seconds to wait for the mirror to catch up over the finished tasks")
    parser.add_argument("--stall", type=float, default=60, help="a wait without progress this long fails")
    parser.add_argument("--type", choices=sorted(SPECS), default="text")
    args = parser.parse_args()
    args.executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    args.run_concurrency = args.run_concurrency or args.concurrency
    args.worker_checkouts = [Path(c).resolve() for c in args.worker_checkouts.split(",") if c.strip()]
    for checkout in args.worker_checkouts:
        if not (checkout / "gentask" / "__init__.py").is_file():
            parser.error(f"--worker-checkouts: {checkout} holds no gentask/ package")
    if any("=" not in kv for kv in args.worker_env):
        parser.error("--worker-env: expected KEY=VALUE")
    args.worker_env = dict(kv.split("=", 1) for kv in args.worker_env)
    if not args.executors or any(e not in ("job", "inline", "pool") for e in args.executors):
        parser.error("--executors: job, inline and/or pool")
    args.finished = sorted({int(x) for x in args.finished.split(",") if x.strip() and int(x) > 0})
    load0 = os.getloadavg()[0]
    dev = DevCluster(Path(os.environ.get("GENTASK_DEVCLUSTER_ROOT", ROOT / ".devcluster")), log=log, audit=True)
    state = dev.running()
    started = state is None
    if started:
        log(f"starting the local cluster in {dev.root} (audit log on)")
        state = dev.up(timeout=180)
    kube = config.new_client_from_config(str(state.kubeconfig))
    kube.user_agent = AGENT
    bootstrap(kube)
    b = Bench(args, dev, state, client.CoreV1Api(kube))
    failure: BaseException | None = None
    results: dict[str, Any] = {}
    try:
        results = asyncio.run(bench(args, b))
    except (Stalled, RuntimeError) as exc:
        failure = exc
    finally:
        if started:
            dev.down(quiet=True)
        else:
            for ns in b.namespaces:
                try:
                    b.core.delete_namespace(ns, propagation_policy="Background")
                except client.ApiException:
                    pass
            for db in b.databases:
                try:
                    connect(Settings(mongo_url=state.mongo_url)).client.drop_database(db)
                except Exception:  # noqa: BLE001 - the figures matter more than the clean-up
                    pass
        kube.close()
    if failure is not None:
        print(f"bench/operator.py: {failure}", file=sys.stderr)
        sys.exit(1)
    load1 = os.getloadavg()[0]
    command = " ".join(["python bench/operator.py", *map(shlex.quote, sys.argv[1:])])
    write_section("Operator", command, report(results, args, (load0, load1), started))
    summary: dict[str, Any] = {"tasks": args.tasks, "load_average": [round(load0, 1), round(load1, 1)]}
    for r in results["runs"]:
        e = r["executor"]
        summary |= {f"{e}_succeeded_per_s": r["succeeded_per_s"], f"{e}_mirrored_per_s": r["mirrored_per_s"],
                    f"{e}_raw_creates_per_s": r["raw"]["per_s"], f"{e}_ratio": r["ratio_to_raw"],
                    f"{e}_queue_wait_p50_ms": (r["queue_wait_ms"] or {}).get("p50"),
                    f"{e}_queue_wait_p99_ms": (r["queue_wait_ms"] or {}).get("p99"),
                    f"{e}_operator_rss_mib": r["operator_rss_mib"],
                    f"{e}_writes_per_task": (r.get("audit") or {}).get("by_client")}
    if results["worker_sample"]:
        summary["worker_cpu_ms_mean"] = results["worker_sample"]["cpu_ms"]["mean"]
    for f in results["finished"]:
        summary[f"rss_mib_with_{f['finished']}_finished"] = f["rss_mib"]
    summary["stalled"] = results["stalled"]
    print(json.dumps(summary))
    if results["stalled"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
