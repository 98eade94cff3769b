"""The operator's writes to the API server, each counted in gentask_operator_api_writes_total."""

from __future__ import annotations

from typing import Any

from gentask.domain.task import GenerationTask, GenerationTaskStatus
from gentask.kube import events
from gentask.kube.errors import KubeError
from gentask.kube.status import status_patch
from gentask.operator.context import OperatorContext


async def write_status(ctx: OperatorContext, task: GenerationTask, status: GenerationTaskStatus
                       ) -> GenerationTask | None:
    """Patch status only if the task is still what the operator saw (resourceVersion): a worker
    may have moved it on meanwhile, and a stale write must never undo that. None on conflict;
    the event the other write caused brings the task back to the operator."""
    try:
        updated = await ctx.kube.patch_task_status(task.namespace, task.name, status_patch(status),
                                                   task.metadata.resource_version)
    except KubeError as exc:
        if exc.not_found or exc.conflict:
            return None
        raise
    ctx.metrics.api_writes.labels("status").inc()
    return GenerationTask.model_validate(updated)


async def create_once(ctx: OperatorContext, manifest: dict[str, Any]) -> bool:
    """Create an object with a deterministic name; False when it exists already (made before)."""
    try:
        await ctx.kube.create_object(manifest)
    except KubeError as exc:
        if exc.conflict:
            return False
        raise
    ctx.metrics.api_writes.labels(manifest["kind"]).inc()
    return True


async def record_event(ctx: OperatorContext, task: GenerationTask, reason: str, message: str,
                       warning: bool = False) -> None:
    """An Event about the task (counted whether or not the API server kept it, as before)."""
    await events.emit(ctx.kube, task, reason, message, warning=warning)
    ctx.metrics.api_writes.labels("event").inc()
