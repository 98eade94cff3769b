"""Observing every task change: into the MongoDB mirror, one Event for its outcome, the metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gentask.domain.reasons import Phase
from gentask.domain.task import GenerationTask
from gentask.kube.errors import KubeError
from gentask.operator.context import OperatorContext
from gentask.operator.writes import record_event


async def observe(ctx: OperatorContext, task: GenerationTask, raw: Mapping[str, Any]) -> None:
    """Every change: into MongoDB (the object as sent), an Event when it ends, the metrics."""
    spec, status = task.spec, task.status
    uid, phase = task.uid, status.phase or Phase.PENDING
    # A task just created (no status yet) is mirrored a little later, with its next change when that
    # comes first: a quick task is one write. The REST API mirrors the tasks it creates at once.
    ctx.mirror.put(dict(raw), hold=0.0 if raw.get("status") else ctx.settings.mirror_hold_seconds)
    if ctx.notifier is not None:
        ctx.notifier.observe(task)     # webhooks: what the status shows happened and is not delivered yet
    ctx.metrics.observe_task(uid, phase.value, spec.type.value, spec.provider)
    previous = Phase.parse(ctx.seen.get(uid))
    ctx.seen[uid] = phase.value
    if previous is phase or previous is None and phase is Phase.PENDING:
        return
    await _record_transitions(ctx, task, previous, phase)
    created, started = task.metadata.creation_timestamp, status.start_time
    passed_running = previous is not None and previous.rank < Phase.RUNNING.rank <= phase.rank
    if passed_running and created and started:
        ctx.metrics.queue_wait.labels(spec.type.value, spec.priority.value).observe(
            max(0.0, (started - created).total_seconds()))
    if phase.terminal:
        done = status.completion_time
        if started and done:
            ctx.metrics.duration.labels(spec.type.value, spec.provider, phase.value).observe(
                max(0.0, (done - started).total_seconds()))
        for failure in status.provider_failures:
            ctx.metrics.provider_errors.labels(failure.provider, failure.reason).inc()
        if previous is not None and not previous.terminal:    # seen unfinished, now finished: counted once
            ctx.metrics.count_cost(task.namespace, spec.user_id, status.cost)


async def _record_transitions(ctx: OperatorContext, task: GenerationTask, previous: Phase | None,
                              phase: Phase) -> None:
    """One Event a task, for its outcome: Queued and Running show in its status and conditions.

    An Event is a write to the API server like any other, and a task's happy path is kept to five
    (Job, Queued, Running, the outcome, this Event). The outcome's message says how many
    attempts it took. Events for what went wrong on the way (a Job deleted behind the operator's
    back, say) are recorded where that is found.
    """
    status = task.status
    reason = status.reason or phase.value
    ctx.metrics.transitions.labels(phase.value, reason).inc()
    if previous is None or previous.terminal or not phase.terminal:
        return          # a (re)start sees the task mid-way or done: its outcome was recorded already
    attempts = status.attempts or 0
    tried = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    message = status.message or f"task is {phase.value}"
    await record_event(ctx, task, reason, f"{message}{tried}", warning=phase is Phase.FAILED)


async def after_leaving(ctx: OperatorContext, raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """A task left the watch: the task as it is now if it finished, None (and forgotten) if it is gone.

    The operator watches unfinished tasks only (kube.names.UNFINISHED), so the API server reports a
    task that finishes as DELETED, with its content from before. One read tells the two apart."""
    meta = raw.get("metadata") or {}
    uid = meta.get("uid") or ""
    try:
        now = await ctx.kube.get_task(meta.get("namespace") or "", meta.get("name") or "")
    except KubeError as exc:
        if not exc.not_found:
            raise
        now = None
    if now is None or (now.get("metadata") or {}).get("uid") != uid:
        forget(ctx, uid)            # deleted (a task of the same name made since is another task)
        if ctx.executor is not None:      # inline: its run stops, and a queued copy is not run
            ctx.executor.cancel(meta.get("namespace") or "", meta.get("name") or "", uid)
        return None
    return now


def forget(ctx: OperatorContext, uid: str) -> None:
    """A task is gone: its record is marked deleted, its metrics, memory and TTL timer dropped."""
    ctx.mirror.delete(uid)
    ctx.metrics.forget_task(uid)
    ctx.seen.pop(uid, None)
    ctx.jobs_ensured.discard(uid)
    if ctx.notifier is not None:
        ctx.notifier.forget(uid)
    if ctx.quotas is not None:
        ctx.quotas.forget(uid)
    timer = ctx.ttl_timers.pop(uid, None)
    if timer:
        timer.cancel()
