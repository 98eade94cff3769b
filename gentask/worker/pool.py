"""The worker pool: long-running workers that claim queued tasks (GENTASK_EXECUTOR=pool).

    gentask worker pool

One process runs GENTASK_POOL_CONCURRENCY tasks at a time with the worker's own code
(gentask.worker.run.Worker); a Deployment scales it by replicas. The operator validates a task and
writes Queued, nothing more; every pool process lists and watches the unfinished tasks of
GENTASK_WATCH_NAMESPACES (names or globs, all when empty) with a field selector the API server
evaluates (the CRD's selectableFields), keeps the Queued ones in a local queue (critical, default,
low, then creation time; not those that wait for a quota's room, reason QuotaWait) and a free slot
claims the first: the worker's claim is a status patch at the resourceVersion it saw, so of two
processes that try the same task one wins and the other gets 409, reads the task again, sees someone
else's claim and takes the next one. No task runs twice.

The same watch stops a run: spec.cancel set, the task deleted, Cancelled written, or the task
queued again or claimed by another worker. Every write a pool worker makes after its claim is
guarded by resourceVersion and skipped once the task is finished or no longer its own, so a final
phase written by the operator (Cancelled) is never overwritten.

Liveness: each process holds a coordination.k8s.io Lease named after its identity (POD_NAME, else
hostname-pid) in GENTASK_POOL_LEASE_NAMESPACE, renewed every third of GENTASK_POOL_LEASE_SECONDS.
A task's status.workerPod is `<identity>/<slot>`. The operator's resync queues again a Running
task whose worker's Lease is missing or expired (gentask.operator.pool); a process that starts
again under the same identity queues again the tasks its previous life left Running. An attempt
that never reported its end (reason Started) is carried on, as worker/run.py's claim does for a
lost pod: the task is queued with attempts one less, so the next claim counts the same attempt,
names its artifacts the same and resumes a vendor job from status.providerTaskID. An attempt that
ended with EXIT_RETRY counts: the task is queued again after a backoff, up to spec.retries more
attempts, then Failed with BackoffLimitExceeded, as a Job's backoffLimit would.

SIGTERM: no more claims; running tasks get GENTASK_POOL_DRAIN_SECONDS to finish, the rest are
queued again for another process; the Lease is deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import hashlib
import heapq
import itertools
import logging
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from gentask.config import Settings, SettingsError, load_settings
from gentask.domain.reasons import ConditionType, Phase, waits_for_room
from gentask.domain.task import GenerationTask, GenerationTaskStatus
from gentask.kube.client import KubeClient
from gentask.kube.conditions import set_condition
from gentask.kube.errors import ConfigError, KubeError, WatchExpired
from gentask.kube.names import EXIT_OK, EXIT_PERMANENT, EXIT_RETRY, UNFINISHED
from gentask.kube.status import status_patch, transition
from gentask.logs import setup_logging
from gentask.providers import Registry
from gentask.storage import ArtifactStore
from gentask.worker.run import Worker

log = logging.getLogger("gentask.worker.pool")

RANK = {"critical": 0, "default": 1, "low": 2}
LEASE_LABEL = "gentask.io/pool-worker"
RETRY_BACKOFF_MAX = 30.0
LEFT_GRACE = 2.0      # a run whose task left the watch gets this long to end before the task is read
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0)
_NOT_DNS = re.compile(r"[^a-z0-9-]+")

Key = tuple[str, str]


# --- the local queue ---------------------------------------------------------------------------


class TaskQueue:
    """Queued tasks by priority (critical, default, low), then creation time, then first seen.

    With a `salt` (the pool passes its identity), tasks of one priority created in the same second
    (the API server keeps whole seconds) come in an order of the salt's own instead of first seen:
    two processes that see the same burst then reach for different tasks first, and fewer of their
    claims collide (each collision is a refused patch and a read).
    `put` of a key already queued keeps its place; `discard` and `pop` are O(log n) (entries
    discarded are skipped when they reach the top)."""

    def __init__(self, salt: str = "") -> None:
        self._heap: list[tuple[tuple[int, float, int, int], Key]] = []
        self._entries: dict[Key, tuple[int, float, int, int]] = {}
        self._seq = itertools.count()
        self._salt = salt.encode()

    @staticmethod
    def rank(priority: str) -> int:
        """0 for critical, 1 for default (and anything unknown), 2 for low."""
        return RANK.get(priority, RANK["default"])

    def put(self, key: Key, priority: str, created: datetime | None) -> None:
        """Queue the task unless it is queued already."""
        if key in self._entries:
            return
        when = created.timestamp() if created is not None else float("inf")
        spread = int.from_bytes(hashlib.blake2b(f"{key[0]}/{key[1]}".encode(), digest_size=4,
                                                key=self._salt).digest()) if self._salt else 0
        order = (self.rank(priority), when, spread, next(self._seq))
        self._entries[key] = order
        heapq.heappush(self._heap, (order, key))

    def discard(self, key: Key) -> None:
        """Take the task out of the queue (nothing when it is not there)."""
        self._entries.pop(key, None)
        if not self._entries:
            self._heap.clear()

    def pop(self) -> Key | None:
        """The first task, taken out of the queue; None when the queue is empty."""
        while self._heap:
            order, key = heapq.heappop(self._heap)
            if self._entries.get(key) == order:
                del self._entries[key]
                return key
        return None

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Key]:
        """The queued tasks in the order they would be popped."""
        return [key for _, key in sorted((order, key) for key, order in self._entries.items())]


# --- identities, Leases, requeues: shared with the operator (gentask.operator.pool) -------------


def identity(environ: Mapping[str, str] | None = None) -> str:
    """This process's name: POD_NAME (the downward API), else hostname-pid (two processes on one
    machine must not share a Lease: one would keep the other's tasks alive after it died)."""
    env = os.environ if environ is None else environ
    name = env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return _NOT_DNS.sub("-", name.lower()).strip("-")[:63].strip("-") or f"pool-{os.getpid()}"


def slot_pod(ident: str, slot: int) -> str:
    """status.workerPod of a task that slot `slot` of process `ident` runs."""
    return f"{ident}/{slot}"


def lease_of(worker_pod: str | None) -> str | None:
    """The Lease name of the process that wrote status.workerPod (None: not a pool worker's)."""
    if not worker_pod or "/" not in worker_pod:
        return None
    return worker_pod.rsplit("/", 1)[0]


def _micro(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_alive(lease: Mapping[str, Any] | None, now: datetime) -> bool:
    """The Lease was renewed within the duration its holder gave it."""
    if not lease:
        return False
    spec = lease.get("spec") or {}
    renewed = _parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    if renewed is None or not isinstance(duration, int):
        return False
    return (now - renewed).total_seconds() <= duration


def requeue_status(task: GenerationTask, reason: str, message: str, *, attempt_ended: bool) -> GenerationTaskStatus:
    """The status that puts a Running task back in the queue.

    attempt_ended False (the worker died or was stopped mid-way): the attempt is carried on, as
    worker/run.py's claim carries on the attempt of a lost pod: attempts goes one down, so the next
    claim counts the same attempt again (its artifacts keep their names; a vendor job is resumed
    from status.providerTaskID). True (it exited EXIT_RETRY): the next claim is a new attempt."""
    attempts = task.status.attempts or 0
    if not attempt_ended and task.status.phase is Phase.RUNNING and attempts > 0:
        attempts -= 1
    update = transition(task, Phase.QUEUED, reason, message, attempts=attempts)
    update.conditions = set_condition(update.conditions, ConditionType.RUNNING.value, "False", reason, message,
                                      task.metadata.generation)
    return update


def exhausted(task: GenerationTask) -> bool:
    """Every attempt spec.retries allows has been made."""
    return (task.status.attempts or 0) >= task.spec.retries + 1


def exhausted_status(task: GenerationTask) -> GenerationTaskStatus:
    """Failed with BackoffLimitExceeded, as a Job whose backoffLimit ran out."""
    last = task.status.message or "no error was reported"
    return transition(task, Phase.FAILED, "BackoffLimitExceeded",
                      f"all {task.status.attempts or 1} attempt(s) failed; last error: {last}")


def namespaces_of(patterns: list[str]) -> list[str | None]:
    """What to watch: each namespace named exactly, else every namespace (globs are matched locally)."""
    if patterns and not any(ch in p for p in patterns for ch in "*?["):
        return list(dict.fromkeys(patterns))
    return [None]


def in_scope(namespace: str, patterns: list[str]) -> bool:
    """The namespace is one of GENTASK_WATCH_NAMESPACES (names or globs; all when empty)."""
    return not patterns or any(fnmatch.fnmatch(namespace, p) for p in patterns)


# --- one task in a slot --------------------------------------------------------------------------


def claimable(task: GenerationTask) -> bool:
    """Queued and given to the pool: not one waiting for a quota's room (Queued, QuotaWait)."""
    return task.status.phase is Phase.QUEUED and not waits_for_room(task.status.phase, task.status.reason)


class ClaimedElsewhere(Exception):  # noqa: N818 - what happened, not an error
    """Another worker claimed the task first (or it is no longer Queued)."""


class Superseded(KubeError):
    """The task is finished, cancelled, or no longer this worker's: its write is not made."""

    def __init__(self, message: str) -> None:
        super().__init__(409, "Superseded", message)


class PoolWorker(Worker):
    """The worker of run.py, for a pool slot: it reads tasks with get (the pool may), claims only a
    Queued task, and guards every later write by resourceVersion, re-reading on a conflict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claimed_rv: int | None = None
        self._rv: str | None = None
        self._claiming = False

    async def _read(self, namespace: str, name: str) -> GenerationTask:
        task = GenerationTask.model_validate(await self.kube.get_task(namespace, name))
        if self._claiming and not (task.status.finished or task.spec.cancel) and task.status.phase is not Phase.QUEUED:
            raise ClaimedElsewhere(f"{task.status.phase} on {task.status.worker_pod}")
        return task

    async def _claim(self, task: GenerationTask) -> GenerationTask:
        if not claimable(task):
            raise ClaimedElsewhere(f"{task.status.phase} ({task.status.reason}) on {task.status.worker_pod}")
        self._claiming = True
        try:
            claimed = await super()._claim(task)
        finally:
            self._claiming = False
        if claimed.status.phase is Phase.RUNNING and claimed.status.worker_pod == self.pod:
            self.claimed_rv = _rv_int(claimed.metadata.resource_version)
            log.info("task claimed", extra={"task": f"{task.namespace}/{task.name}", "pod": self.pod,
                                            "attempt": claimed.status.attempts})
        return claimed

    async def _patch(self, ns: str, name: str, status: GenerationTaskStatus, rv: str | None = None) -> GenerationTask:
        if rv is not None or self._rv is None:      # the claim: the precondition is the caller's
            task = await super()._patch(ns, name, status, rv)
            self._rv = task.metadata.resource_version
            return task
        for _ in range(10):
            try:
                task = await super()._patch(ns, name, status, self._rv)
            except KubeError as exc:
                if not exc.conflict:
                    raise
                latest = GenerationTask.model_validate(await self.kube.get_task(ns, name))
                if latest.status.finished or latest.spec.cancel or latest.status.worker_pod != self.pod \
                        or latest.status.phase is not Phase.RUNNING:
                    raise Superseded(f"task {ns}/{name} is {latest.status.phase} on {latest.status.worker_pod}; "
                                     f"not written: {status.phase or status.message}") from exc
                self._rv = latest.metadata.resource_version
                continue
            self._rv = task.metadata.resource_version
            return task
        raise Superseded(f"task {ns}/{name} kept changing; not written")


def _rv_int(rv: str | None) -> int | None:
    try:
        return int(rv) if rv else None
    except ValueError:
        return None


@dataclass
class Run:
    """A task a slot runs: its worker (which knows its claim) and the asyncio task."""

    worker: PoolWorker
    job: asyncio.Task[int]
    task: GenerationTask
    stop_reason: str | None = None
    check: asyncio.Task[None] | None = None


@dataclass
class PoolState:
    """What the watches have seen: the Queued tasks (latest object each) and their order."""

    queue: TaskQueue
    queued: dict[Key, GenerationTask] = field(default_factory=dict)


# --- the pool ------------------------------------------------------------------------------------


class Pool:
    """One `gentask worker pool` process: its Lease, its watches, its slots."""

    def __init__(self, kube: KubeClient, settings: Settings, registry: Registry, store: ArtifactStore | None,
                 ident: str | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.registry = registry
        self.store = store
        self.identity = ident or identity()
        self.patterns = settings.watch_namespaces
        self.state = PoolState(TaskQueue(salt=self.identity))
        self.running: dict[Key, Run] = {}
        self.changed = asyncio.Event()
        self.stopping = asyncio.Event()
        self.lease_held = False
        self.holder = f"{self.identity}@{uuid.uuid4().hex[:8]}"
        self.later: set[asyncio.Task[None]] = set()
        self.claims = 0

    # --- life ---

    async def run(self) -> int:
        """Hold the Lease, adopt what a previous life left, watch and run until stop(); 0 when clean."""
        background: list[asyncio.Task[Any]] = []
        try:
            if not await self._acquire_lease():
                return EXIT_OK          # stopped before the Lease was held
            background.append(asyncio.create_task(self._renew_loop()))
            await self._adopt_orphans()
            background += [asyncio.create_task(self._watch(ns)) for ns in namespaces_of(self.patterns)]
            slots = [asyncio.create_task(self._slot(i)) for i in range(self.settings.pool_concurrency)]
            log.info("worker pool started", extra={"pod": self.identity, "slots": len(slots),
                                                   "namespaces": self.patterns or "all"})
            await self.stopping.wait()
            self.changed.set()
            await self._drain(slots)
        finally:
            for task in background + list(self.later):
                task.cancel()
            await asyncio.gather(*background, *self.later, return_exceptions=True)
            await self._release_lease()
        log.info("worker pool stopped", extra={"pod": self.identity, "claims": self.claims})
        return EXIT_OK

    def stop(self) -> None:
        """Stop claiming; what runs gets GENTASK_POOL_DRAIN_SECONDS, the rest is queued again."""
        self.stopping.set()

    async def _drain(self, slots: list[asyncio.Task[None]]) -> None:
        jobs = [r.job for r in self.running.values()]
        if jobs:
            log.info("stopping: %d task(s) running, waiting up to %.0fs", len(jobs), self.settings.pool_drain_seconds)
            await asyncio.wait(jobs, timeout=self.settings.pool_drain_seconds)
        for run in list(self.running.values()):
            if not run.job.done():
                run.stop_reason = "handed back"
                run.job.cancel()
        await asyncio.gather(*slots, return_exceptions=True)

    # --- Lease ---

    def _lease_body(self, now: datetime) -> dict[str, Any]:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": int(self.settings.pool_lease_seconds),
                "renewTime": _micro(now)}

    async def _acquire_lease(self) -> bool:
        ns = self.settings.lease_namespace
        for attempt in itertools.count():
            if self.stopping.is_set():
                return False
            now = datetime.now(UTC)
            try:
                try:
                    await self.kube.create_lease(ns, {
                        "metadata": {"name": self.identity, "labels": {LEASE_LABEL: "true"}},
                        "spec": {**self._lease_body(now), "acquireTime": _micro(now)}})
                except KubeError as exc:
                    if not exc.already_exists:
                        raise
                    await self.kube.patch_lease(ns, self.identity, {"spec": {**self._lease_body(now),
                                                                             "acquireTime": _micro(now)}})
                self.lease_held = True
                return True
            except KubeError as exc:
                delay = ERROR_BACKOFF[min(attempt, len(ERROR_BACKOFF) - 1)]
                log.error("cannot hold the pool Lease %s/%s (%s); trying again in %.0fs", ns, self.identity, exc, delay)
                await self._sleep(delay)
        return False  # pragma: no cover

    async def _renew_loop(self) -> None:
        ns, every = self.settings.lease_namespace, self.settings.pool_lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.kube.patch_lease(ns, self.identity, {"spec": self._lease_body(datetime.now(UTC))})
            except KubeError as exc:
                if exc.not_found:       # deleted behind our back: make it again
                    await self._acquire_lease()
                else:
                    log.warning("could not renew the pool Lease: %s", exc)

    async def _release_lease(self) -> None:
        if not self.lease_held:
            return
        try:
            await self.kube.delete_lease(self.settings.lease_namespace, self.identity)
        except KubeError as exc:
            if not exc.not_found:
                log.warning("could not delete the pool Lease: %s", exc)
        self.lease_held = False

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    # --- what a previous life of this identity left ---

    async def _adopt_orphans(self) -> None:
        prefix = f"{self.identity}/"
        for ns in namespaces_of(self.patterns):
            try:
                items, _ = await self.kube.list_tasks(ns, field_selector="status.phase=Running")
            except KubeError as exc:
                log.warning("could not list running tasks to adopt: %s", exc)
                continue
            for raw in items:
                task = _parse(raw)
                if task is None or not in_scope(task.namespace, self.patterns):
                    continue
                if (task.status.worker_pod or "").startswith(prefix):
                    ended = task.status.reason != "Started"
                    await self._write_back(task, requeue_status(
                        task, "PodLost", f"worker {task.status.worker_pod} restarted; queued again",
                        attempt_ended=ended))

    async def _write_back(self, task: GenerationTask, status: GenerationTaskStatus) -> bool:
        """A guarded write (the task as read); False when it changed meanwhile or is gone."""
        try:
            await self.kube.patch_task_status(task.namespace, task.name, status_patch(status),
                                              task.metadata.resource_version)
        except KubeError as exc:
            if exc.conflict or exc.not_found:
                return False
            raise
        return True

    # --- watches ---

    async def _watch(self, namespace: str | None) -> None:
        failures = 0
        while True:
            try:
                items, rv = await self.kube.list_tasks(namespace, field_selector=UNFINISHED)
                self._relisted(namespace, items)
                failures = 0
                while True:
                    async for kind, obj in self.kube.watch_tasks(namespace, rv, field_selector=UNFINISHED):
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if kind != "BOOKMARK":
                            self._seen(kind, obj)
            except WatchExpired:
                continue
            except KubeError as exc:
                delay = ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF) - 1)]
                failures += 1
                log.warning("watch of %s broke (%s); listing again in %.0fs", namespace or "all namespaces", exc, delay)
                await asyncio.sleep(delay)

    def _relisted(self, namespace: str | None, items: Iterable[dict[str, Any]]) -> None:
        fresh = {(t["metadata"]["namespace"], t["metadata"]["name"]): t for t in items}
        for key in [k for k in self.state.queued if namespace is None or k[0] == namespace]:
            if key not in fresh:
                self._unqueue(key)
        for raw in fresh.values():
            self._seen("ADDED", raw)

    def _unqueue(self, key: Key) -> None:
        self.state.queued.pop(key, None)
        self.state.queue.discard(key)

    def _seen(self, kind: str, raw: dict[str, Any]) -> None:
        meta = raw.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if not in_scope(key[0], self.patterns):
            return
        task = _parse(raw)
        run = self.running.get(key)
        if run is not None and not run.job.done() and _newer(raw, run.worker):
            if kind == "DELETED":
                # A task leaves the watch (its field selector) when it finishes, and the API server
                # says so with DELETED and the task as it was before: this run's own final write, or
                # a deletion. A run that does not end at once is asked about with one read.
                if run.check is None:
                    run.check = asyncio.create_task(self._check_left(key, run))
                    self.later.add(run.check)
                    run.check.add_done_callback(self.later.discard)
            else:
                self._stop(key, run, _why_stop(task, run.worker))
        if task is None or kind == "DELETED" or not claimable(task) or task.spec.cancel \
                or task.metadata.deletion_timestamp:
            self._unqueue(key)
            return
        known = self.state.queued.get(key)
        if known is not None and (_rv_int(known.metadata.resource_version) or 0) > (
                _rv_int(task.metadata.resource_version) or 0):
            return          # an older view than the one held
        self.state.queued[key] = task
        if key not in self.running:
            self.state.queue.put(key, task.spec.priority.value, task.metadata.creation_timestamp)
            self.changed.set()

    def _stop(self, key: Key, run: Run, why: str | None) -> None:
        if why is not None and not run.job.done():
            run.stop_reason = why
            run.job.cancel()
            log.info("stopping the task's run: %s", why, extra={"task": f"{key[0]}/{key[1]}"})

    async def _check_left(self, key: Key, run: Run) -> None:
        """The task left the watch while its run goes on: finished by this run, or gone, or taken."""
        done, _ = await asyncio.wait({run.job}, timeout=LEFT_GRACE)
        if done:
            return
        try:
            task = _parse(await self.kube.get_task(*key))
        except KubeError as exc:
            if exc.not_found:
                self._stop(key, run, "the task was deleted")
            return
        self._stop(key, run, _why_stop(task, run.worker))

    # --- slots ---

    async def _next(self) -> Key | None:
        while not self.stopping.is_set():
            key = self.state.queue.pop()
            if key is not None:
                return key
            self.changed.clear()
            await self.changed.wait()
        return None

    async def _slot(self, index: int) -> None:
        pod = slot_pod(self.identity, index)
        while True:
            key = await self._next()
            if key is None:
                return
            task = self.state.queued.pop(key, None)
            if task is None or key in self.running:
                continue
            worker = PoolWorker(self.kube, self.settings, self.registry, self.store, pod)
            job = asyncio.create_task(worker.run(*key, task))
            run = self.running[key] = Run(worker, job, task)
            try:
                code = await self._outcome(key, run)
            finally:
                self.running.pop(key, None)
            if worker.claimed_rv is not None:
                self.claims += 1
            if code == EXIT_RETRY and run.stop_reason is None:
                later = asyncio.create_task(self._retry_later(key, worker))
                self.later.add(later)
                later.add_done_callback(self.later.discard)

    async def _outcome(self, key: Key, run: Run) -> int | None:
        name = f"{key[0]}/{key[1]}"
        try:
            return await run.job
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            if run.stop_reason == "handed back" and run.worker.claimed_rv is not None:
                await self._hand_back(key, run.worker)
            return None
        except ClaimedElsewhere as exc:
            log.debug("claimed elsewhere: %s", exc, extra={"task": name})
            return None
        except Superseded as exc:
            log.info("%s", exc.message, extra={"task": name})
            return None
        except KubeError as exc:
            if exc.not_found:
                return None
            log.warning("the API server failed the task's run: %s", exc, extra={"task": name})
        except Exception as exc:  # noqa: BLE001 - a task that crashes its worker is retried, never the pool
            log.exception("pool worker failed", extra={"task": name})
            if run.worker.claimed_rv is not None:
                await run.worker.report_retry(*key, f"the worker failed: {type(exc).__name__}: {exc}")
        if run.worker.claimed_rv is None:      # the claim itself failed: the task is still Queued
            asyncio.get_running_loop().call_later(ERROR_BACKOFF[1], self._put_back, key, run.task)
            return None
        return EXIT_RETRY

    def _put_back(self, key: Key, task: GenerationTask) -> None:
        """A task whose claim failed for want of an answer goes back in the queue (unless news came)."""
        if key in self.state.queued or key in self.running or self.stopping.is_set():
            return
        self.state.queued[key] = task
        self.state.queue.put(key, task.spec.priority.value, task.metadata.creation_timestamp)
        self.changed.set()

    async def _hand_back(self, key: Key, worker: PoolWorker) -> None:
        """A run stopped by SIGTERM: queue the task again for another process (same attempt)."""
        try:
            task = GenerationTask.model_validate(await self.kube.get_task(*key))
            if task.status.finished or task.spec.cancel or task.status.worker_pod != worker.pod:
                return
            if await self._write_back(task, requeue_status(task, "PodLost", f"worker {worker.pod} stopped; "
                                                           "queued again", attempt_ended=False)):
                log.info("task handed back to the queue", extra={"task": f"{key[0]}/{key[1]}"})
        except KubeError as exc:
            log.warning("could not hand the task back (the operator will, once this Lease expires): %s", exc,
                        extra={"task": f"{key[0]}/{key[1]}"})

    async def _retry_later(self, key: Key, worker: PoolWorker) -> None:
        """EXIT_RETRY: after a backoff, queue the task again for a new attempt, or fail it when spent."""
        name = f"{key[0]}/{key[1]}"
        for failures in itertools.count():
            try:
                task = GenerationTask.model_validate(await self.kube.get_task(*key))
                if task.status.finished or task.spec.cancel or task.status.worker_pod != worker.pod \
                        or task.status.phase is not Phase.RUNNING:
                    return
                if exhausted(task):
                    await self._write_back(task, exhausted_status(task))
                    return
                await asyncio.sleep(min(RETRY_BACKOFF_MAX, 2.0 ** (task.status.attempts or 1)))
                task = GenerationTask.model_validate(await self.kube.get_task(*key))
                if task.status.finished or task.spec.cancel or task.status.worker_pod != worker.pod:
                    return
                if await self._write_back(task, requeue_status(task, "Retrying", task.status.message or "retrying",
                                                               attempt_ended=True)):
                    log.info("task queued again for another attempt", extra={"task": name})
                    return
            except KubeError as exc:
                if exc.not_found:
                    return
                log.warning("could not queue the task again: %s", exc, extra={"task": name})
                await asyncio.sleep(ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF) - 1)])


def _parse(raw: Mapping[str, Any]) -> GenerationTask | None:
    try:
        return GenerationTask.model_validate(raw)
    except ValidationError:
        return None     # the operator fails such a task with InvalidSpec


def _newer(raw: Mapping[str, Any], worker: PoolWorker) -> bool:
    """The event is about a version of the task after this worker's claim."""
    if worker.claimed_rv is None:
        return False                # not claimed yet: the claim itself finds out
    rv = _rv_int(str((raw.get("metadata") or {}).get("resourceVersion") or ""))
    return rv is not None and rv > worker.claimed_rv


def _why_stop(task: GenerationTask | None, worker: PoolWorker) -> str | None:
    """Why a run must stop, given its task as it is now (None: it goes on)."""
    if task is None:
        return "the task can no longer be read"
    status = task.status
    if task.spec.cancel:
        return "spec.cancel is set"
    if task.metadata.deletion_timestamp:
        return "the task was deleted"
    if status.phase is Phase.CANCELLED:
        return "the task was cancelled"
    if status.phase is Phase.QUEUED:
        return "the task was queued again (this worker was taken for dead)"
    if status.worker_pod != worker.pod:
        return f"the task is now {status.phase} on {status.worker_pod}"
    return None


# --- the command -----------------------------------------------------------------------------------


async def _main(settings: Settings) -> int:
    from gentask.kube.config import load_connection
    from gentask.providers import registry_from_settings
    from gentask.storage import connect

    store = ArtifactStore(connect(settings)) if os.environ.get("MONGO_URL") else None
    connection = load_connection()
    loop = asyncio.get_running_loop()
    async with registry_from_settings(settings) as registry, KubeClient(connection, timeout=None, pool=32) as kube:
        pool = Pool(kube, settings, registry, store)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pool.stop)
        return await pool.run()


def main(argv: list[str] | None = None) -> int:
    """`gentask worker pool`: run until SIGTERM; 0 after a clean stop."""
    parser = argparse.ArgumentParser(prog="gentask worker pool", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"gentask worker pool: {exc}", file=sys.stderr)
        return EXIT_PERMANENT
    setup_logging(settings)
    try:
        return asyncio.run(_main(settings))
    except ConfigError as exc:
        print(f"gentask worker pool: {exc}", file=sys.stderr)
        return EXIT_RETRY


__all__ = ["LEASE_LABEL", "UNFINISHED", "ClaimedElsewhere", "Pool", "PoolWorker", "Superseded", "TaskQueue",
           "exhausted", "exhausted_status", "identity", "in_scope", "lease_alive", "lease_of", "main",
           "namespaces_of", "requeue_status", "slot_pod"]
