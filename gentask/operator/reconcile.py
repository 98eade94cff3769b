"""Level-triggered reconciliation of one GenerationTask: start (validate, queue, Job), cancel.

Every function reads what is, and does what is missing; each is safe to run again (the Job and
its RBAC have deterministic names, so a create that finds them there is a no-op). No Kopf here:
the handlers in gentask.operator.handlers parse the object Kopf delivered (`parse_task`) and
call these with it. Observing lives in observe, Job outcomes in jobs, TTLs in ttl, the periodic
repair in resync.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from gentask.domain.catalog import InvalidSpecError, ModelRetiredError, validate_spec
from gentask.domain.reasons import ConditionType, Phase, waits_for_room
from gentask.domain.task import GenerationTask, GenerationTaskSpec, GenerationTaskStatus, ObjectMeta, Priority, TaskType
from gentask.kube.conditions import set_condition
from gentask.kube.errors import KubeError
from gentask.kube.names import job_name
from gentask.kube.status import transition
from gentask.operator.context import OperatorContext
from gentask.operator.jobs import ensure_job
from gentask.operator.observe import forget, observe
from gentask.operator.quota import Exceeded, Wait
from gentask.operator.tenants import SECRET_REASONS, Refusal
from gentask.operator.ttl import schedule_ttl
from gentask.operator.writes import record_event, write_status

log = logging.getLogger("gentask.operator")

E = TypeVar("E", TaskType, Priority)

__all__ = ["cancel", "forget", "parse_task", "reconcile_task", "start", "wait"]


def _member(enum: type[E], value: Any, default: E) -> E:
    try:
        return enum(value)
    except ValueError:
        return default


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_task(raw: Mapping[str, Any]) -> tuple[GenerationTask, str | None]:
    """The typed task, and why the models refuse its spec (None when they accept it).

    The CRD is generated from the same models, so a spec it lets through and the models refuse is
    rare; such a task still gets observed and failed with InvalidSpec: its spec is then read
    leniently (known enums, defaults for the rest). Any other invalid part raises ValidationError."""
    try:
        return GenerationTask.model_validate(raw), None
    except ValidationError as exc:
        error = exc
    spec = dict(raw.get("spec") or {})
    try:
        GenerationTaskSpec.model_validate(spec)
    except ValidationError as exc:
        problem = str(exc)
    else:
        raise error
    lenient = GenerationTaskSpec.model_construct(
        type=_member(TaskType, spec.get("type"), TaskType.TEXT), provider=str(spec.get("provider") or ""),
        model=str(spec.get("model") or ""), prompt=str(spec.get("prompt") or ""),
        priority=_member(Priority, spec.get("priority"), Priority.DEFAULT), retries=_int(spec.get("retries"), 3),
        timeout_seconds=_int(spec.get("timeoutSeconds"), 600),
        ttl_seconds_after_finished=_int(spec.get("ttlSecondsAfterFinished"), 86400), cancel=bool(spec.get("cancel")))
    task = GenerationTask.model_construct(metadata=ObjectMeta.model_validate(raw.get("metadata") or {}), spec=lenient,
                                          status=GenerationTaskStatus.model_validate(raw.get("status") or {}))
    return task, problem


async def reconcile_task(ctx: OperatorContext, task: GenerationTask, raw: Mapping[str, Any],
                         spec_error: str | None = None) -> None:
    """One look at a task: observe it, then do what its phase still lacks."""
    if ctx.quotas is not None:
        ctx.quotas.saw(raw)            # where it stands for the quotas (gentask.operator.quota)
    await observe(ctx, task, raw)
    if ctx.executor is not None:
        ctx.executor.saw(task)         # a task queued here runs from its newest copy
    phase = task.status.phase
    if task.metadata.deletion_timestamp:
        return
    if phase is not None and phase.terminal:
        schedule_ttl(ctx, task)
        return
    if task.spec.cancel:
        await cancel(ctx, task)
        return
    if phase in (None, Phase.PENDING) or waits_for_room(phase, task.status.reason):
        await start(ctx, task, spec_error, raw)      # a task waiting for a quota's room: admitted yet?
    elif ctx.executor is not None:
        ctx.executor.ensure(task)          # inline: a restarted operator picks its tasks up again
    elif task.uid not in ctx.jobs_ensured:
        await ensure_job(ctx, task)        # a restart may have come between the Queued write and the Job
        ctx.jobs_ensured.add(task.uid)


async def start(ctx: OperatorContext, task: GenerationTask, spec_error: str | None = None,
                raw: Mapping[str, Any] | None = None) -> None:
    """Validate against the catalog, then hand the task to its executor: status Queued.

    In a tenant setup (gentask.operator.tenants) a task of a namespace gentask does not serve, or
    whose namespace lacks the credentials its pod needs, waits instead (Pending with the reason). So
    does a task over a GenerationQuota's concurrency (QuotaWait); one over its tasks a day or cost a
    month fails (QuotaExceeded) before any Job or vendor call (gentask.operator.quota)."""
    tenants = ctx.tenants
    if tenants is not None and tenants.enabled and not await tenants.served(task.namespace):
        await wait(ctx, task, tenants.not_enabled(task.namespace))
        return
    if spec_error is not None:     # pydantic: a spec the CRD let through but the models refuse
        await write_status(ctx, task, transition(task, Phase.FAILED, "InvalidSpec", spec_error))
        return
    try:
        validate_spec(task.spec, enabled=ctx.registry.names())
    except InvalidSpecError as exc:
        reason = "ModelRetired" if isinstance(exc, ModelRetiredError) else "InvalidSpec"
        await write_status(ctx, task, transition(task, Phase.FAILED, reason, str(exc)))
        return
    except ValueError as exc:
        await write_status(ctx, task, transition(task, Phase.FAILED, "InvalidSpec", str(exc)))
        return
    refusal = await ctx.notifier.refusal(task) if ctx.notifier is not None else None
    if refusal is not None:         # a receiver gentask may not call: no run, and nothing is sent to it
        await write_status(ctx, task, transition(task, Phase.FAILED, "InvalidSpec", refusal))
        return
    if tenants is not None and tenants.enabled:
        refusal = await tenants.refusal(task, check_credentials=ctx.executor is None)
        if refusal is not None:
            await wait(ctx, task, refusal)
            return
    if ctx.quotas is not None:       # GenerationQuotas: wait for room, or fail before any vendor call
        verdict = await ctx.quotas.admit(task, raw)
        if isinstance(verdict, Wait):     # Queued, reason QuotaWait: in the queue, not yet given to an executor
            await wait(ctx, task, Refusal(verdict.reason, verdict.message), phase=Phase.QUEUED)
            return
        if isinstance(verdict, Exceeded):
            await write_status(ctx, task, transition(task, Phase.FAILED, "QuotaExceeded", verdict.message))
            return
    if ctx.executor is not None and ctx.executor.takes_pending and not (
            ctx.quotas is not None and ctx.quotas.of(task.namespace, task.spec.user_id)):
        ctx.executor.ensure(task)    # inline: queued in its memory, Pending (gentask.operator.inline)
        return
    if ctx.executor is not None:     # inline, or the worker pool (gentask.operator.pool): no Job
        message = getattr(ctx.executor, "queued_message", "queued for the inline executor")
        await write_status(ctx, task, transition(task, Phase.QUEUED, "Validated", message, attempts=0))
        ctx.executor.ensure(task)
        return
    job = job_name(task.name)
    queued = await write_status(ctx, task, transition(task, Phase.QUEUED, "JobCreated",
                                                      f"Job {job} created; waiting for a node", job_name=job,
                                                      attempts=0))
    if queued is not None:     # Queued first, then the Job: no worker can write before the operator has
        await ensure_job(ctx, queued)     # its pod carries the queued task: the version its worker claims
        ctx.jobs_ensured.add(task.uid)


async def wait(ctx: OperatorContext, task: GenerationTask, refusal: Refusal, phase: Phase = Phase.PENDING) -> None:
    """The task waits with the refusal's reason and message (Scheduled False), and one Warning Event
    says so; nothing is written when the status says it already. It waits Pending when gentask cannot
    run it yet (its namespace, its credentials), Queued when it waits its turn (a quota's concurrency)."""
    status = task.status
    if ctx.tenants is not None and refusal.reason in SECRET_REASONS:
        ctx.tenants.waiting.add(task.namespace)        # looked at again soon (resync.tenant_recheck_loop)
    if status.phase is phase and status.reason == refusal.reason and status.message == refusal.message:
        return
    pending = transition(task, phase, refusal.reason, refusal.message)
    pending.conditions = set_condition(pending.conditions, ConditionType.SCHEDULED.value, "False", refusal.reason,
                                       refusal.message, task.metadata.generation)
    if await write_status(ctx, task, pending) is not None:
        await record_event(ctx, task, refusal.reason, refusal.message, warning=True)
        log.info("task waits: %s", refusal.reason, extra={"task": f"{task.namespace}/{task.name}"})


async def cancel(ctx: OperatorContext, task: GenerationTask) -> None:
    """spec.cancel: the Job goes, the vendor job is cancelled where the vendor allows, Cancelled."""
    from gentask.providers import Submitted, cancel_job

    if ctx.executor is not None:
        ctx.executor.cancel(task.namespace, task.name)
    else:
        try:
            await ctx.kube.delete_job(task.namespace, job_name(task.name), propagation="Background")
            ctx.metrics.api_writes.labels("Job-delete").inc()
        except KubeError as exc:
            if not exc.not_found:
                raise
    message = "cancelled by spec.cancel"
    submitted = Submitted.from_status(task.status)
    if submitted is not None:
        try:
            await cancel_job(submitted, registry=ctx.registry)
            message += f"; vendor job {submitted.task_id} cancelled"
        except Exception as exc:  # noqa: BLE001 - the vendor may refuse (e.g. a job already running)
            message += f"; the vendor did not cancel job {submitted.task_id}: {exc}"
    latest = GenerationTask.model_validate(await ctx.kube.get_task(task.namespace, task.name))
    if latest.status.finished:
        return
    await write_status(ctx, latest, transition(latest, Phase.CANCELLED, "Cancelled", message))
