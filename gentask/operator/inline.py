"""The inline executor: the worker's code in the operator's own process.

Bounded concurrency (GENTASK_INLINE_CONCURRENCY), critical before default before low, first
come first served within a priority. For clusters without spare nodes and for throughput: no
pod start per task. A task whose worker exits EXIT_RETRY is queued again (up to spec.retries).

Few writes a task. The queue is this process's memory: a validated task that no GenerationQuota
governs waits in it `Pending`, with no `Queued` write (the operator is one replica, and a restart
lists the Pending tasks again). Its run claims it late: a task whose outcome comes within
GENTASK_INLINE_CLAIM_SECONDS (1 s) gets one status write, its outcome with the claim's fields
(Accepted, Scheduled, attempts, workerPod, startTime), at the resourceVersion it was queued at;
one that takes longer is marked `Running` then, as any worker marks it, and so is one that first
writes something else (a vendor job's id). So the happy path of a quick task is the outcome and
its Event: two writes. A change to the task meanwhile (spec.cancel, a delete) makes that write
fail with 409; the worker reads the task and drops its outcome when the task is cancelled or
finished. The outcome's answer is the task as it is: the operator observes it from there (mirror,
Event, TTL), without the read a task that leaves the watch otherwise costs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gentask.domain.reasons import Phase
from gentask.domain.task import GenerationTask, GenerationTaskStatus
from gentask.kube.conditions import utc_now
from gentask.kube.errors import KubeError
from gentask.kube.names import EXIT_OK, EXIT_RETRY
from gentask.kube.status import transition
from gentask.operator.context import OperatorContext
from gentask.worker.run import Worker

if TYPE_CHECKING:
    from gentask.storage import ArtifactStore

log = logging.getLogger("gentask.operator.inline")
RANK = {"critical": 0, "default": 1, "low": 2}
SETTLED_MAX = 10_000     # uids whose outcome this executor wrote, until their watch's DELETED comes


class Superseded(Exception):  # noqa: N818 - what happened, not an error
    """The task was cancelled, deleted or finished while it ran: its outcome is not written."""

    def __init__(self, latest: GenerationTask) -> None:
        phase = latest.status.phase.value if latest.status.phase else "Pending"
        what = "deleted" if latest.metadata.deletion_timestamp else "cancelled" if latest.spec.cancel else phase
        super().__init__(f"task {latest.namespace}/{latest.name} is {what} (phase {phase}); its outcome is dropped")
        self.latest = latest


class InlineWorker(Worker):
    """The worker of run.py in the operator: it reads tasks with get, and claims late.

    `claim_after`: seconds before the claim is written (None: at once, as a Job's worker claims). A
    task still unclaimed on the server when its outcome comes gets the claim's fields with the
    outcome, in one write at the resourceVersion it was queued at."""

    def __init__(self, *args: Any, claim_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claim_after = claim_after
        self.unclaimed: GenerationTask | None = None     # the task as run, its claim not written yet
        self.claim_fields: dict[str, Any] = {}
        self.timer: asyncio.Task[None] | None = None
        self.claiming = False
        self.final: dict[str, Any] | None = None         # the API server's answer to the outcome's write
        self.uid: str | None = None                      # the task's: a read that finds another is a 404
        self.running = GenerationTaskStatus()             # the claim to write (Running)

    async def _read(self, namespace: str, name: str) -> GenerationTask:
        task = GenerationTask.model_validate(await self.kube.get_task(namespace, name))
        if self.uid is not None and task.uid != self.uid:     # deleted, and a new task of its name made since
            raise KubeError(404, "NotFound", f"task {namespace}/{name} (uid {self.uid}) was deleted; the task of "
                                             f"that name now is another (uid {task.uid})")
        return task

    async def run(self, namespace: str, name: str, queued: GenerationTask | None = None) -> int:
        """Worker.run, for this task's uid only: a task of the same name made since is another task."""
        self.uid = queued.uid if queued is not None else None
        return await super().run(namespace, name, queued)

    async def _claim(self, task: GenerationTask) -> GenerationTask:
        status = task.status
        if self.claim_after is None or status.phase not in (None, Phase.PENDING):
            return await super()._claim(task)          # a task a restart finds Queued or Running: as before
        attempt = (status.attempts or 0) + 1
        self.claim_fields = {"attempts": attempt, "worker_pod": self.pod, "start_time": utc_now()}
        queued = transition(task, Phase.QUEUED, "Validated", "queued for the inline executor")
        as_queued = task.model_copy(update={"status": status.model_copy(update=dict(queued))})
        running = transition(as_queued, Phase.RUNNING, "Started", f"attempt {attempt} running on pod {self.pod}",
                             **self.claim_fields)
        self.unclaimed = task.model_copy(update={"status": as_queued.status.model_copy(update=dict(running))})
        self.running = running
        self.timer = asyncio.get_running_loop().create_task(self._claim_later(self.claim_after))
        return self.unclaimed

    async def _claim_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.claiming = True
        try:
            await self._claim_now()
        finally:
            self.claiming = False

    async def _claim_now(self) -> None:
        """Write the claim (Running): the run takes a while, or writes something before its outcome."""
        task, self.unclaimed = self.unclaimed, None
        if task is None:
            return
        try:
            await super()._patch(task.namespace, task.name, self.running, task.metadata.resource_version)
        except KubeError as exc:
            if not exc.conflict:
                raise
            latest = await self._read(task.namespace, task.name)
            if latest.status.finished or latest.spec.cancel or latest.metadata.deletion_timestamp:
                raise Superseded(latest) from exc
            await Worker._claim(self, latest)      # changed otherwise (a label, say): claimed as a Job's worker is

    async def _settle_claim(self) -> None:
        """Before any other write: the claim's timer stops, or its write under way is waited for."""
        timer, self.timer = self.timer, None
        if timer is None:
            return
        if not self.claiming:
            timer.cancel()
        try:
            await timer
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _patch_raw(self, ns: str, name: str, status: GenerationTaskStatus, rv: str | None = None
                         ) -> dict[str, Any]:
        if rv is not None:                  # a claim: its precondition is the caller's
            return await super()._patch_raw(ns, name, status, rv)
        await self._settle_claim()
        task = self.unclaimed
        if task is not None and (status.phase is None or not status.phase.terminal):
            await self._claim_now()          # a vendor job's id, a progress note: the claim comes first
            task = None
        if task is None:
            return self._kept(await super()._patch_raw(ns, name, status))
        self.unclaimed = None                # the outcome, with the claim's fields, at the version run
        outcome = status.model_copy(update=self.claim_fields)
        version = task.metadata.resource_version
        for _ in range(5):
            try:
                return self._kept(await super()._patch_raw(ns, name, outcome, version))
            except KubeError as exc:
                if not exc.conflict:
                    raise
                latest = await self._read(ns, name)
                if latest.status.finished or latest.spec.cancel or latest.metadata.deletion_timestamp:
                    raise Superseded(latest) from exc
                version = latest.metadata.resource_version
        raise RuntimeError("could not write the outcome: the task kept changing")

    def _kept(self, raw: dict[str, Any]) -> dict[str, Any]:
        if Phase.parse((raw.get("status") or {}).get("phase")) in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED):
            self.final = raw
        return raw


class InlineExecutor:
    """Runs tasks with the worker's code, a bounded number at a time, by priority."""

    # A validated task that no GenerationQuota governs is handed over Pending (no Queued write).
    takes_pending = True

    def __init__(self, ctx: OperatorContext, store: ArtifactStore | None) -> None:
        self.ctx = ctx
        self.store = store
        self.queue: asyncio.PriorityQueue[tuple[int, int, tuple[str, str]]] = asyncio.PriorityQueue()
        self.known: dict[tuple[str, str], GenerationTask] = {}      # queued or running: the newest copy seen
        self.running: dict[tuple[str, str], asyncio.Task[int]] = {}
        self.retries: dict[tuple[str, str], int] = {}
        self.settled: OrderedDict[str, None] = OrderedDict()       # uids whose outcome a run here wrote
        self.seq = itertools.count()
        self.workers: list[asyncio.Task[None]] = []
        self.pod = f"inline-{socket.gethostname()}"

    def start(self) -> None:
        """Start the GENTASK_INLINE_CONCURRENCY work loops."""
        self.workers = [asyncio.create_task(self._work(i)) for i in range(self.ctx.settings.inline_concurrency)]

    async def stop(self) -> None:
        """Cancel the work loops and the tasks they run."""
        for task in self.workers + list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.workers, *self.running.values(), return_exceptions=True)

    def ensure(self, task: GenerationTask) -> None:
        """Queue the task unless it is queued or running already (then keep the newer copy)."""
        key = (task.namespace, task.name)
        if key in self.known:
            self.saw(task)
            return
        self.known[key] = task
        self.queue.put_nowait((RANK.get(task.spec.priority.value, 1), next(self.seq), key))

    def saw(self, task: GenerationTask) -> None:
        """A newer copy of a task queued here (cancelled, deleted): what its run starts from."""
        key = (task.namespace, task.name)
        known = self.known.get(key)
        if known is not None and known.uid == task.uid and _rv(task) > _rv(known):
            self.known[key] = task

    def cancel(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Stop the task's run if one is under way; a queued one is not run. `uid`: only that task's
        (a task of the same name made since is another task)."""
        key = (namespace, name)
        known = self.known.get(key)
        if uid is not None and known is not None and known.uid != uid:
            return
        running = self.running.get(key)
        if running is not None:
            running.cancel()
        elif known is not None:
            self.known[key] = known.model_copy(update={"spec": known.spec.model_copy(update={"cancel": True})})

    def left(self, raw: Mapping[str, Any]) -> bool:
        """A task left the watch: True when that is its outcome a run here wrote (and observed)."""
        uid = (raw.get("metadata") or {}).get("uid") or ""
        if uid in self.settled:
            del self.settled[uid]
            return True
        return False

    async def _work(self, index: int) -> None:
        while True:
            _, _, key = await self.queue.get()
            task = self.known.get(key)
            if task is None or task.spec.cancel or task.metadata.deletion_timestamp:
                self.known.pop(key, None)
                continue
            worker = InlineWorker(self.ctx.kube, self.ctx.settings, self.ctx.registry, self.store, self.pod,
                                  claim_after=self.ctx.settings.inline_claim_seconds or None)
            job = asyncio.create_task(worker.run(*key, task))
            self.running[key] = job
            try:
                code: int | None = await job
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                code = None
            except Superseded as exc:
                log.info("%s", exc, extra={"task": f"{key[0]}/{key[1]}"})
                code = EXIT_OK
            except KubeError as exc:
                if exc.not_found:
                    log.info("task is gone (deleted while it ran); its outcome is dropped",
                             extra={"task": f"{key[0]}/{key[1]}"})
                else:
                    log.exception("inline worker failed", extra={"task": f"{key[0]}/{key[1]}"})
                code = EXIT_OK if exc.not_found else EXIT_RETRY
            except Exception:  # noqa: BLE001 - a task that crashes its worker is retried, never the executor
                log.exception("inline worker failed", extra={"task": f"{key[0]}/{key[1]}"})
                code = EXIT_RETRY
            finally:
                self.running.pop(key, None)
                if worker.timer is not None:
                    worker.timer.cancel()
            self.known.pop(key, None)
            if worker.final is not None:
                await self._observe(worker.final)
            if code == EXIT_RETRY:
                self.retries[key] = self.retries.get(key, 0) + 1
                await asyncio.sleep(min(30.0, 2.0 ** self.retries[key]))
                await self._again(key)

    async def _again(self, key: tuple[str, str]) -> None:
        """Queue a task again after a failed attempt, as it is now (its attempt counted), unless it is gone."""
        try:
            task = GenerationTask.model_validate(await self.ctx.kube.get_task(*key))
        except KubeError as exc:
            if exc.not_found:
                return
            log.warning("could not read the task to try it again: %s", exc.reason, extra={"task": "/".join(key)})
            return          # the resync (every GENTASK_RESYNC_SECONDS) hands it over again
        if not (task.status.finished or task.spec.cancel or task.metadata.deletion_timestamp):
            self.ensure(task)

    async def _observe(self, raw: dict[str, Any]) -> None:
        """The outcome as written: observed at once (mirror, Event, TTL); its watch event needs no read."""
        from gentask.operator.reconcile import parse_task, reconcile_task
        uid = raw["metadata"]["uid"]
        self.settled[uid] = None
        while len(self.settled) > SETTLED_MAX:
            self.settled.popitem(last=False)
        try:
            task, spec_error = parse_task(raw)
            await reconcile_task(self.ctx, task, raw, spec_error)
        except Exception:  # noqa: BLE001 - the watch's event and the resync's audit look again
            self.settled.pop(uid, None)
            log.exception("could not observe the outcome", extra={"task": raw["metadata"].get("name")})


def _rv(task: GenerationTask) -> int:
    try:
        return int(task.metadata.resource_version or 0)
    except ValueError:
        return 0
