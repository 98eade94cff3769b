"""Level-triggered reconciliation of one GenerationTask and of its Job.

Every function reads what is, and does what is missing; each is safe to run again (the Job and
its RBAC have deterministic names, so a create that finds them there is a no-op). No Kopf here:
the handlers in gentask.operator.handlers call these with the object Kopf delivered.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from gentask.domain.catalog import InvalidSpecError, validate_spec
from gentask.domain.reasons import Phase
from gentask.domain.task import GROUP, PLURAL, VERSION, GenerationTaskSpec
from gentask.kube import events
from gentask.kube.jobs import job_manifest, worker_rbac
from gentask.kube.names import job_name
from gentask.kube.status import get_task, patch_status, transition
from gentask.operator.context import OperatorContext

log = logging.getLogger("gentask.operator")

TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _k(fn, *args, **kwargs):
    return await asyncio.to_thread(fn, *args, **kwargs)


# ---- observing: mirror, events, metrics -------------------------------------------------------

def observe(ctx: OperatorContext, task: dict) -> None:
    """Every change: into MongoDB, an Event on a phase transition, the metrics."""
    meta, spec = task["metadata"], task.get("spec", {})
    status = task.get("status") or {}
    uid, phase = meta["uid"], status.get("phase") or "Pending"
    ctx.mirror.put(task)
    ctx.metrics.observe_task(uid, phase, spec.get("type", ""), spec.get("provider", ""))
    previous = ctx.seen.get(uid)
    ctx.seen[uid] = phase
    if previous == phase or previous is None and phase == "Pending":
        return
    _record_transitions(ctx, task, previous, phase)
    created = _parse_time(meta.get("creationTimestamp"))
    started = _parse_time(status.get("startTime"))
    passed_running = previous is not None and Phase(previous).rank < Phase.RUNNING.rank <= Phase(phase).rank
    if passed_running and created and started:
        ctx.metrics.queue_wait.labels(spec.get("type", ""), spec.get("priority", "")).observe(
            max(0.0, (started - created).total_seconds()))
    if phase in TERMINAL:
        done = _parse_time(status.get("completionTime"))
        if started and done:
            ctx.metrics.duration.labels(spec.get("type", ""), spec.get("provider", ""), phase).observe(
                max(0.0, (done - started).total_seconds()))
        for failure in status.get("providerFailures") or []:
            ctx.metrics.provider_errors.labels(failure.get("provider", ""), failure.get("reason", "")).inc()


def _record_transitions(ctx: OperatorContext, task: dict, previous: str | None, phase: str) -> None:
    """An Event for every phase the task passed since the operator last saw it.

    Kopf hands over the latest state of an object, so a quick task may go Queued → Succeeded
    between two looks; the Running it passed through still gets its Event (from the status'
    startTime and attempts), in order.
    """
    status = task.get("status") or {}
    reason = status.get("reason") or phase
    ctx.metrics.transitions.labels(phase, reason).inc()
    if previous is None:
        return          # an operator (re)start sees the task mid-way: its Events were recorded already
    before = Phase(previous).rank
    if before < Phase.RUNNING.rank < Phase(phase).rank and status.get("startTime"):
        events.emit(ctx.api, task, "Started", f"attempt {status.get('attempts') or 1} started")
        ctx.metrics.api_writes.labels("event").inc()
    events.emit(ctx.api, task, reason, status.get("message") or f"task is {phase}", warning=phase == "Failed")
    ctx.metrics.api_writes.labels("event").inc()


def forget(ctx: OperatorContext, uid: str) -> None:
    ctx.mirror.delete(uid)
    ctx.metrics.forget_task(uid)
    ctx.seen.pop(uid, None)
    ctx.jobs_ensured.discard(uid)
    timer = ctx.ttl_timers.pop(uid, None)
    if timer:
        timer.cancel()


# ---- the task ---------------------------------------------------------------------------------------

async def reconcile_task(ctx: OperatorContext, task: dict) -> None:
    observe(ctx, task)
    meta, spec = task["metadata"], task["spec"]
    status = task.get("status") or {}
    phase = status.get("phase")
    if meta.get("deletionTimestamp"):
        return
    if phase in TERMINAL:
        schedule_ttl(ctx, task)
        return
    if spec.get("cancel"):
        await cancel(ctx, task)
        return
    if phase in (None, "Pending"):
        await start(ctx, task)
    elif ctx.executor is not None:
        ctx.executor.ensure(task)          # inline: a restarted operator picks its tasks up again
    elif meta["uid"] not in ctx.jobs_ensured:
        await ensure_job(ctx, task)        # a restart may have come between the Queued write and the Job
        ctx.jobs_ensured.add(meta["uid"])


async def start(ctx: OperatorContext, task: dict) -> None:
    """Validate against the catalog, then hand the task to its executor: status Queued."""
    meta = task["metadata"]
    try:
        validate_spec(GenerationTaskSpec.model_validate(task["spec"]), enabled=ctx.registry.names())
    except InvalidSpecError as exc:
        reason = "ModelRetired" if type(exc).__name__ == "ModelRetiredError" else "InvalidSpec"
        await write_status(ctx, task, transition(task, Phase.FAILED, reason, str(exc)))
        return
    except ValueError as exc:    # pydantic: a spec the CRD let through but the models refuse
        await write_status(ctx, task, transition(task, Phase.FAILED, "InvalidSpec", str(exc)))
        return
    if ctx.executor is not None:
        await write_status(ctx, task, transition(task, Phase.QUEUED, "Validated", "queued for the inline executor",
                                                 attempts=0))
        ctx.executor.ensure(task)
        return
    queued = await write_status(ctx, task, transition(task, Phase.QUEUED, "JobCreated", f"Job {job_name(meta['name'])} "
                                                      "created; waiting for a node", jobName=job_name(meta["name"]),
                                                      attempts=0))
    if queued is not None:     # Queued first, then the Job: no worker can write before the operator has
        await ensure_job(ctx, task)
        ctx.jobs_ensured.add(meta["uid"])


async def ensure_job(ctx: OperatorContext, task: dict) -> bool:
    """Create the task's worker RBAC and Job unless they exist. True when the Job was created."""
    ns = task["metadata"]["namespace"]
    core, rbac, batch = (client.CoreV1Api(ctx.api), client.RbacAuthorizationV1Api(ctx.api),
                         client.BatchV1Api(ctx.api))
    creators = {"ServiceAccount": core.create_namespaced_service_account,
                "Role": rbac.create_namespaced_role, "RoleBinding": rbac.create_namespaced_role_binding}
    for manifest in worker_rbac(task):
        await _create(ctx, creators[manifest["kind"]], ns, manifest)
    return await _create(ctx, batch.create_namespaced_job, ns, job_manifest(task, ctx.settings))


async def _create(ctx: OperatorContext, create, namespace: str, manifest: dict) -> bool:
    try:
        await _k(create, namespace, manifest)
        ctx.metrics.api_writes.labels(manifest["kind"]).inc()
        return True
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise


async def write_status(ctx: OperatorContext, task: dict, patch: dict[str, Any]) -> dict | None:
    """Patch status only if the task is still what the operator saw (resourceVersion): a worker
    may have moved it on meanwhile, and a stale write must never undo that. None on conflict;
    the event the other write caused brings the task back to the operator."""
    meta = task["metadata"]
    try:
        updated = await _k(patch_status, ctx.api, meta["namespace"], meta["name"], patch, meta.get("resourceVersion"))
    except ApiException as exc:
        if exc.status in (404, 409):
            return None
        raise
    ctx.metrics.api_writes.labels("status").inc()
    return updated


async def cancel(ctx: OperatorContext, task: dict) -> None:
    """spec.cancel: the Job goes, the vendor job is cancelled where the vendor allows, Cancelled."""
    from gentask.providers import Submitted, cancel_job
    from gentask.domain.task import GenerationTaskStatus

    meta = task["metadata"]
    if ctx.executor is not None:
        ctx.executor.cancel(meta["namespace"], meta["name"])
    else:
        try:
            await _k(client.BatchV1Api(ctx.api).delete_namespaced_job, job_name(meta["name"]), meta["namespace"],
                     propagation_policy="Background")
            ctx.metrics.api_writes.labels("Job-delete").inc()
        except ApiException as exc:
            if exc.status != 404:
                raise
    message = "cancelled by spec.cancel"
    submitted = Submitted.from_status(GenerationTaskStatus.model_validate(task.get("status") or {}))
    if submitted is not None:
        try:
            await cancel_job(submitted, registry=ctx.registry)
            message += f"; vendor job {submitted.task_id} cancelled"
        except Exception as exc:  # noqa: BLE001 - the vendor may refuse (e.g. a job already running)
            message += f"; the vendor did not cancel job {submitted.task_id}: {exc}"
    latest = await _k(get_task, ctx.api, meta["namespace"], meta["name"])
    if (latest.get("status") or {}).get("phase") in TERMINAL:
        return
    await write_status(ctx, latest, transition(latest, Phase.CANCELLED, "Cancelled", message))


def schedule_ttl(ctx: OperatorContext, task: dict) -> None:
    """Delete a finished task ttlSecondsAfterFinished after it finished (MongoDB keeps its record)."""
    meta, status = task["metadata"], task.get("status") or {}
    uid = meta["uid"]
    done = _parse_time(status.get("completionTime"))
    if done is None or uid in ctx.ttl_timers:
        return
    ttl = task["spec"].get("ttlSecondsAfterFinished", 86400)
    remaining = ttl - (datetime.now(timezone.utc) - done).total_seconds()
    loop = asyncio.get_running_loop()
    ctx.ttl_timers[uid] = loop.call_later(max(0.0, remaining), lambda: loop.create_task(
        _expire(ctx, meta["namespace"], meta["name"], uid)))


async def _expire(ctx: OperatorContext, namespace: str, name: str, uid: str) -> None:
    ctx.ttl_timers.pop(uid, None)
    try:
        await _k(client.CustomObjectsApi(ctx.api).delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                 name, body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid),
                                                   propagation_policy="Background"))
        ctx.metrics.api_writes.labels("task-delete").inc()
        log.info("task expired after ttlSecondsAfterFinished", extra={"task": f"{namespace}/{name}"})
    except ApiException as exc:
        if exc.status not in (404, 409):
            log.warning("could not delete expired task %s/%s: %s", namespace, name, exc.reason)


# ---- the Job: what the pod could not report ------------------------------------------------------

def _job_condition(job: dict) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Failed", "Complete") and c.get("status") == "True":
            return c
    return None


async def reconcile_job(ctx: OperatorContext, job: dict, deleted: bool) -> None:
    meta = job["metadata"]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "GenerationTask"), None)
    if owner is None:
        return
    try:
        task = await _k(get_task, ctx.api, meta["namespace"], owner["name"])
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    if task["metadata"]["uid"] != owner["uid"]:
        return
    status = task.get("status") or {}
    if status.get("phase") in TERMINAL or task["spec"].get("cancel") or task["metadata"].get("deletionTimestamp"):
        return
    if deleted:
        await job_deleted(ctx, task)
        return
    cond = _job_condition(job)
    if cond is None or cond["type"] == "Complete":
        return
    reason, message = cond.get("reason") or "", cond.get("message") or ""
    last = status.get("message") or "no error was reported"
    if reason == "DeadlineExceeded":
        patch = transition(task, Phase.FAILED, "DeadlineExceeded",
                           f"the task ran longer than timeoutSeconds={task['spec'].get('timeoutSeconds')}")
    elif reason == "BackoffLimitExceeded":
        patch = transition(task, Phase.FAILED, "BackoffLimitExceeded",
                           f"all {status.get('attempts') or 1} attempt(s) failed; last error: {last}")
    else:   # PodFailurePolicy and anything else the worker did not report itself
        patch = transition(task, Phase.FAILED, "InternalError", f"the Job failed ({reason}: {message}); last: {last}")
    await write_status(ctx, task, patch)


async def job_deleted(ctx: OperatorContext, task: dict) -> None:
    """A Job deleted behind our back while its task runs: make it again (documented choice).

    The worker resumes an asynchronous vendor job from the status, so the recreated Job does not
    pay twice; the attempt counter carries on.
    """
    if ctx.executor is not None:
        return
    created = await ensure_job(ctx, task)
    if created:
        events.emit(ctx.api, task, "JobDeleted", "the task's Job was deleted while the task ran; recreated it",
                    warning=True)
        log.warning("recreated a Job deleted behind our back", extra={"task": task["metadata"]["name"]})


# ---- periodic resync -----------------------------------------------------------------------------------

async def resync(ctx: OperatorContext) -> dict[str, int]:
    """Repair what a missed event could leave: the mirror, expired TTLs, a vanished Job."""
    custom = client.CustomObjectsApi(ctx.api)
    patterns = ctx.settings.watch_namespaces
    if patterns and not any(ch in p for p in patterns for ch in "*?["):
        tasks: list[dict] = []
        for ns in patterns:
            listing = await _k(custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL)
            tasks += listing.get("items", [])
    else:   # everything, or glob patterns as Kopf takes them: list once, keep what they match
        listing = await _k(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        tasks = [t for t in listing.get("items", [])
                 if not patterns or any(fnmatch.fnmatch(t["metadata"]["namespace"], p) for p in patterns)]
    live = {t["metadata"]["uid"]: t for t in tasks}
    for task in tasks:
        if (task.get("status") or {}).get("phase") in TERMINAL:
            schedule_ttl(ctx, task)
    known = await _mirrored(ctx, patterns, tasks)
    stale = [t for uid, t in live.items() if known is None or known.get(uid) != int(t["metadata"]["resourceVersion"])]
    for task in stale:              # only what MongoDB lacks or has older
        ctx.mirror.put(task)
    gone = [uid for uid in (known or {}) if uid not in live]
    for uid in gone:
        ctx.mirror.delete(uid)
    return {"tasks": len(tasks), "mirrored_again": len(stale), "marked_deleted": len(gone)}


async def _mirrored(ctx: OperatorContext, patterns: list[str], tasks: list[dict]) -> dict[str, int] | None:
    """uid -> resourceVersion of the live records of the watched namespaces; None if unreadable."""
    if ctx.mirror.mirror is None:
        return None
    try:
        if not patterns:
            return await asyncio.to_thread(ctx.mirror.mirror.uids)
        names = {t["metadata"]["namespace"] for t in tasks} | {p for p in patterns if not any(ch in p for ch in "*?[")}
        if any(ch in p for p in patterns for ch in "*?["):
            listing = await _k(client.CoreV1Api(ctx.api).list_namespace)
            names |= {n.metadata.name for n in listing.items if any(fnmatch.fnmatch(n.metadata.name, p) for p in patterns)}
        known: dict[str, int] = {}
        for ns in names:
            known.update(await asyncio.to_thread(ctx.mirror.mirror.uids, ns))
        return known
    except Exception as exc:  # noqa: BLE001 - MongoDB down: everything goes through the queue
        log.info("resync could not read the mirror: %s", exc)
        return None


async def resync_loop(ctx: OperatorContext) -> None:
    while True:
        await asyncio.sleep(ctx.settings.resync_seconds)
        started = time.monotonic()
        try:
            counts = await resync(ctx)
            log.info("resync done in %.2fs", time.monotonic() - started, extra=counts)
        except Exception:  # noqa: BLE001
            log.exception("resync failed")
