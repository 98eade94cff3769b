"""A task's Job: made once, and what the pod could not report (deadline, backoff, pod lost, Job deleted).

A lost or evicted pod needs nothing here: the Job makes another pod (podFailurePolicy ignores
DisruptionTarget) and the worker carries on with the same attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gentask.domain.reasons import Phase
from gentask.domain.task import KIND, GenerationTask, ObjectMeta
from gentask.kube import events
from gentask.kube.errors import KubeError
from gentask.kube.jobs import job_manifest, worker_rbac
from gentask.kube.status import transition
from gentask.operator.context import OperatorContext
from gentask.operator.writes import create_once, write_status

log = logging.getLogger("gentask.operator")

# A namespace's worker account is made once; made again (a create that finds it, not a write)
# at most this often, in case the namespace was deleted and made anew meanwhile.
WORKER_RBAC_RECHECK = 600.0


async def ensure_job(ctx: OperatorContext, task: GenerationTask) -> bool:
    """Create the task's Job unless it exists (and, first in a namespace, the namespace's worker
    account). True when the Job was created."""
    def due() -> bool:
        ensured = ctx.worker_rbac.get(task.namespace)
        return ensured is None or time.monotonic() - ensured > WORKER_RBAC_RECHECK
    if due():
        # one ensure a namespace at a time: a burst of first tasks would each send the three creates
        async with ctx.worker_rbac_locks.setdefault(task.namespace, asyncio.Lock()):
            if due():
                for manifest in worker_rbac(task.namespace, ctx.settings.worker_egress):
                    await create_once(ctx, manifest)
                ctx.worker_rbac[task.namespace] = time.monotonic()
    return await create_once(ctx, job_manifest(task, ctx.settings))


def _job_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Failed", "Complete") and c.get("status") == "True":
            return dict(c)
    return None


async def reconcile_job(ctx: OperatorContext, job: dict[str, Any], deleted: bool) -> None:
    """A Job changed or went: turn what its pod could not report into the task's status."""
    meta = ObjectMeta.model_validate(job.get("metadata") or {})
    owner = next((o for o in meta.owner_references if o.kind == KIND), None)
    if owner is None or not meta.namespace:
        return
    cond = _job_condition(job)
    if not deleted and (cond is None or cond["type"] == "Complete"):
        return          # running, or done: the worker reported (no read of the task for every Job change)
    try:
        raw = await ctx.kube.get_task(meta.namespace, owner.name)
    except KubeError as exc:
        if exc.not_found:
            return
        raise
    task = GenerationTask.model_validate(raw)
    if task.uid != owner.uid:
        return
    status = task.status
    if status.finished or task.spec.cancel or task.metadata.deletion_timestamp:
        return
    if deleted:
        await job_deleted(ctx, task)
        return
    if cond is None or cond["type"] == "Complete":
        return
    reason, message = cond.get("reason") or "", cond.get("message") or ""
    last = status.message or "no error was reported"
    if reason == "DeadlineExceeded":
        update = transition(task, Phase.FAILED, "DeadlineExceeded",
                            f"the task ran longer than timeoutSeconds={task.spec.timeout_seconds}")
    elif reason == "BackoffLimitExceeded":
        update = transition(task, Phase.FAILED, "BackoffLimitExceeded",
                            f"all {status.attempts or 1} attempt(s) failed; last error: {last}")
    else:   # PodFailurePolicy and anything else the worker did not report itself
        update = transition(task, Phase.FAILED, "InternalError", f"the Job failed ({reason}: {message}); last: {last}")
    await write_status(ctx, task, update)


async def job_deleted(ctx: OperatorContext, task: GenerationTask) -> None:
    """A Job deleted behind our back while its task runs: make it again (documented choice).

    The worker resumes an asynchronous vendor job from the status, so the recreated Job does not
    pay twice; the attempt counter carries on.
    """
    if ctx.executor is not None:
        return
    created = await ensure_job(ctx, task)
    if created:
        # not counted in api_writes, as before this module existed
        await events.emit(ctx.kube, task, "JobDeleted", "the task's Job was deleted while the task ran; recreated it",
                          warning=True)
        log.warning("recreated a Job deleted behind our back", extra={"task": task.name})
