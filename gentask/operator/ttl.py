"""ttlSecondsAfterFinished: a finished task is deleted that long after it finished (MongoDB keeps its record)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from gentask.domain.task import GenerationTask
from gentask.kube.errors import KubeError
from gentask.operator.context import OperatorContext
from gentask.operator.observe import forget

log = logging.getLogger("gentask.operator")


def schedule_ttl(ctx: OperatorContext, task: GenerationTask) -> None:
    """Arm the task's TTL timer once (a timer per uid; the resync re-arms them after a restart)."""
    uid, done = task.uid, task.status.completion_time
    if done is None or uid in ctx.ttl_timers:
        return
    remaining = task.spec.ttl_seconds_after_finished - (datetime.now(UTC) - done).total_seconds()
    loop = asyncio.get_running_loop()
    namespace, name = task.namespace, task.name
    ctx.ttl_timers[uid] = loop.call_later(max(0.0, remaining), lambda: loop.create_task(
        expire(ctx, namespace, name, uid)))


async def expire(ctx: OperatorContext, namespace: str, name: str, uid: str) -> None:
    """Delete that incarnation of the task (uid precondition: a new task of the same name stays)."""
    ctx.ttl_timers.pop(uid, None)
    try:
        await ctx.kube.delete_task(namespace, name, uid=uid, propagation="Background")
        ctx.metrics.api_writes.labels("task-delete").inc()
        log.info("task expired after ttlSecondsAfterFinished", extra={"task": f"{namespace}/{name}"})
    except KubeError as exc:
        if not (exc.not_found or exc.conflict):
            log.warning("could not delete expired task %s/%s: %s", namespace, name, exc.reason)
            return
    # A finished task is outside the operator's watch: no DELETED event follows, so it is
    # forgotten (and its record marked deleted) here.
    forget(ctx, uid)
