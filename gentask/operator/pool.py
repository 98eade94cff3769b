"""The operator's side of the worker pool (GENTASK_EXECUTOR=pool): queue, and recover the lost.

The operator validates a task and writes Queued ("Validated", "queued for the worker pool"); the
pool's processes (`gentask worker pool`, gentask.worker.pool) claim and run it. It makes no Job.
spec.cancel and deletes go as for the inline executor: the operator writes Cancelled, and the pool
worker that runs the task sees it in its watch and stops (its own writes are guarded, so the
final phase stays Cancelled).

A pool process that dies mid-task leaves its task Running. Each process holds a Lease (named
after it, label gentask.io/pool-worker) in GENTASK_POOL_LEASE_NAMESPACE that it renews every third
of its duration; on every resync the operator queues again each Running task whose worker's Lease
is missing or expired. A Lease rather than "does the pod still exist": it works the same for a
pod, a process on a laptop and a pod that is alive but hung (its renewals stop), costs one small
write per process every few seconds whatever the number of tasks, and needs no read of pods.
A heartbeat in each task's status would cost a write per running task per interval instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gentask.domain.reasons import Phase
from gentask.domain.task import GenerationTask
from gentask.kube.errors import KubeError
from gentask.operator.context import OperatorContext
from gentask.operator.writes import write_status
from gentask.worker.pool import LEASE_LABEL, in_scope, lease_alive, lease_of, namespaces_of, requeue_status

log = logging.getLogger("gentask.operator.pool")

QUEUED_MESSAGE = "queued for the worker pool"


class PoolExecutor:
    """ctx.executor in pool mode: the operator runs nothing itself; the pool's watches do the rest."""

    queued_message = QUEUED_MESSAGE
    takes_pending = False        # the pool's workers claim Queued tasks: the operator writes Queued

    def saw(self, task: GenerationTask) -> None:
        """Nothing: the pool's workers keep their own copies (their watch)."""

    def left(self, raw: Mapping[str, Any]) -> bool:
        """Never: the pool's workers write the outcomes; a task that leaves the watch is read."""
        return False

    def start(self) -> None:
        """Nothing runs in the operator."""

    async def stop(self) -> None:
        """Nothing to stop."""

    def ensure(self, task: GenerationTask) -> None:
        """A Queued task waits for the pool: nothing to do here."""

    def cancel(self, namespace: str, name: str, uid: str | None = None) -> None:
        """The pool worker running the task sees Cancelled (and spec.cancel) in its watch and stops."""


async def requeue_lost(ctx: OperatorContext) -> int:
    """Queue again the Running tasks of dead pool workers (Lease missing or expired); how many.

    Called by the resync; does nothing unless GENTASK_EXECUTOR=pool. Lists only Running tasks
    (a field selector the API server evaluates), then the pool's Leases once."""
    if ctx.settings.executor != "pool":
        return 0
    patterns = ctx.settings.watch_namespaces
    running: list[dict[str, Any]] = []
    for ns in namespaces_of(patterns):
        items, _ = await ctx.kube.list_tasks(ns, field_selector=f"status.phase={Phase.RUNNING.value}")
        running += [t for t in items if in_scope(t["metadata"]["namespace"], patterns)
                    and not t["metadata"].get("deletionTimestamp") and not (t.get("spec") or {}).get("cancel")]
    if not running:
        return 0
    namespace = ctx.settings.lease_namespace
    try:
        leases = {lease["metadata"]["name"]: lease
                  for lease in await ctx.kube.list_leases(namespace, label_selector=LEASE_LABEL)}
    except KubeError as exc:       # without the Leases nobody is known dead: queue nothing twice
        log.warning("cannot read the worker pool's Leases in %s: %s", namespace, exc)
        return 0
    now = datetime.now(UTC)
    requeued = 0
    for raw in running:
        worker = (raw.get("status") or {}).get("workerPod")
        holder = lease_of(worker)
        if holder is not None and lease_alive(leases.get(holder), now):
            continue
        try:
            task = GenerationTask.model_validate(raw)
            why = "no Lease" if holder is None or holder not in leases else "its Lease expired"
            status = requeue_status(task, "PodLost", f"worker {worker} is gone ({why}); queued again",
                                    attempt_ended=task.status.reason != "Started")
            if await write_status(ctx, task, status) is not None:
                requeued += 1
                log.warning("queued again a task whose pool worker is gone",
                            extra={"task": f"{task.namespace}/{task.name}", "pod": worker, "why": why})
        except Exception as exc:  # noqa: BLE001 - the next resync tries again; one task must not stop the rest
            log.warning("could not queue task %s again: %s", raw["metadata"].get("name"), exc)
    return requeued
