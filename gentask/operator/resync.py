"""The periodic repair: start what a missed event left unstarted; audit TTLs and the mirror.

Two rounds, both a page of tasks at a time, so memory stays one page however many tasks exist:

- the resync (every GENTASK_RESYNC_SECONDS) lists unfinished tasks only (the field selector the
  watch uses) and starts any a missed event left waiting;
- the audit (at start, again SETTLE_SECONDS later, then every GENTASK_AUDIT_SECONDS) pages through every task: TTL
  timers of finished tasks are armed (the watch never shows them), whatever MongoDB lacks or has
  older is mirrored again (no faster than the writer drains), and records of tasks that are gone
  are marked deleted.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from gentask.domain.reasons import QUOTA_WAIT, Phase, waits_for_room
from gentask.kube.errors import KubeError
from gentask.kube.names import UNFINISHED
from gentask.operator.context import OperatorContext
from gentask.operator.observe import forget
from gentask.operator.pool import requeue_lost
from gentask.operator.reconcile import parse_task, reconcile_task
from gentask.operator.ttl import schedule_ttl
from gentask.worker.pool import in_scope, namespaces_of

log = logging.getLogger("gentask.operator")

GLOB = "*?["
# The audit hands the mirror writer more only while fewer than this many changes wait in it: what
# waits is held in memory, and on a slow MongoDB the whole history must not be.
MIRROR_BACKLOG = 1000
# The first audit runs before Kopf's watches have listed: a task that finishes in between is in
# neither (the watch shows unfinished tasks only), and its Job may complete before the Job watch
# lists too. A second audit this long after the start, when the watches are long established,
# mirrors such a task (found by the operator-killed-mid-burst test: one record stayed behind).
SETTLE_SECONDS = 30.0


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in GLOB)


async def _pages(ctx: OperatorContext, field_selector: str | None) -> AsyncIterator[list[dict[str, Any]]]:
    """The tasks of the watched namespaces (GENTASK_WATCH_NAMESPACES: names or globs), a page at a time."""
    patterns = ctx.settings.watch_namespaces
    for ns in namespaces_of(patterns):      # exact names one by one; globs (or all): one listing
        async for page in ctx.kube.task_pages(ns, field_selector=field_selector):
            yield page if ns is not None else [t for t in page if in_scope(t["metadata"]["namespace"], patterns)]


async def resync(ctx: OperatorContext) -> dict[str, int]:
    """Start every unfinished task a missed event left unstarted."""
    tasks = started = 0
    listed: set[str] = set()
    known = set(ctx.quotas.entries) if ctx.quotas is not None else set()
    async for page in _pages(ctx, UNFINISHED):
        for raw in page:
            tasks += 1
            listed.add(raw["metadata"]["uid"])
            phase = Phase.parse((raw.get("status") or {}).get("phase"))
            reason = (raw.get("status") or {}).get("reason")
            unstarted = phase in (None, Phase.PENDING) or waits_for_room(phase, reason) or (
                phase is Phase.QUEUED and ctx.executor is None and raw["metadata"]["uid"] not in ctx.jobs_ensured)
            if not unstarted or raw["metadata"].get("deletionTimestamp"):
                continue
            if ctx.quotas is not None and reason == QUOTA_WAIT:
                continue        # waits for room: the quotas look at it again when some frees, in order
            # Kopf does not retry an event handler that failed (a burst that timed the client out, an
            # API server that refused a write): without this such a task would wait for its next change,
            # which never comes. Starting twice is harmless: the Queued write is guarded by resourceVersion.
            try:
                task, spec_error = parse_task(raw)
                await reconcile_task(ctx, task, raw, spec_error)
                started += 1
            except Exception as exc:  # noqa: BLE001 - the next round tries again; one task must not stop the rest
                log.warning("resync could not start task %s: %s", raw["metadata"].get("name"), exc)
    await requeue_lost(ctx)       # pool executor: tasks of dead pool workers (gentask.operator.pool)
    if ctx.quotas is not None:
        await _settle_quotas(ctx, known - listed)
    return {"tasks": tasks, "started": started}


async def _settle_quotas(ctx: OperatorContext, missing: set[str]) -> None:
    """Tasks the quotas count as unfinished that the listing did not show: finished or gone while no
    watch looked (between the start-up listing and Kopf's watch, say). One read each tells."""
    for uid in missing:
        entry = ctx.quotas.entries.get(uid)
        if entry is None:
            continue
        try:
            raw = await ctx.kube.get_task(entry.namespace, entry.name)
        except KubeError as exc:
            if not exc.not_found:
                raise
            raw = None
        if raw is None or raw["metadata"].get("uid") != uid:
            ctx.quotas.forget(uid)
        else:
            ctx.quotas.saw(raw)


async def quota_sync(ctx: OperatorContext) -> None:
    """The quotas seeded from one listing of the GenerationQuotas and the unfinished tasks of the watched
    namespaces (before Kopf's watches start, so no task is admitted on half the picture)."""
    patterns = ctx.settings.watch_namespaces
    quotas: list[dict[str, Any]] = []
    try:
        for ns in namespaces_of(patterns):
            quotas += [q for q in await ctx.kube.list_quotas(ns) if in_scope(q["metadata"]["namespace"], patterns)]
    except KubeError as exc:
        if not exc.not_found:
            raise
        log.warning("the GenerationQuota CRD is not installed (crds/generationquotas.gentask.io.yaml): no quotas")
    await ctx.quotas.sync(quotas, _pages(ctx, UNFINISHED))
    log.info("quotas synced", extra={"quotas": len(quotas), "unfinished": len(ctx.quotas.entries)})


async def wake(ctx: OperatorContext, namespace: str, name: str) -> None:
    """A task waiting for a quota's room, looked at again (it may start now)."""
    try:
        raw = await ctx.kube.get_task(namespace, name)
    except KubeError as exc:
        if exc.not_found:
            return
        raise
    task, spec_error = parse_task(raw)
    await reconcile_task(ctx, task, raw, spec_error)


async def audit(ctx: OperatorContext) -> dict[str, int]:
    """Every task, a page at a time: TTL timers armed, the mirror repaired, records of gone tasks marked.

    The mirror's uid -> resourceVersion map is read while the tasks are paged through (on a
    large history MongoDB takes a while); what only uids and versions are kept of meanwhile. The
    tasks MongoDB lacks or has older are then read again, a page at a time, and mirrored no faster
    than the writer drains."""
    reading = asyncio.ensure_future(_mirrored(ctx))
    versions: dict[str, int] = {}
    armed = 0
    try:
        async for page in _pages(ctx, None):
            for raw in page:
                uid = raw["metadata"]["uid"]
                versions[uid] = int(raw["metadata"]["resourceVersion"])
                phase = Phase.parse((raw.get("status") or {}).get("phase"))
                if phase is None or not phase.terminal:
                    continue        # the watch has it
                spec = raw.get("spec") or {}      # counted in gentask_tasks, as if watched
                ctx.metrics.observe_task(uid, phase.value, str(spec.get("type")), str(spec.get("provider")))
                if spec.get("notify") and ctx.notifier is not None:     # webhooks a restart left undelivered
                    try:
                        ctx.notifier.observe(parse_task(raw)[0])
                    except ValidationError as exc:
                        log.warning("audit cannot read task %s: %s", raw["metadata"].get("name"), exc)
                if uid not in ctx.ttl_timers:
                    try:
                        schedule_ttl(ctx, parse_task(raw)[0])
                        armed += 1
                    except ValidationError as exc:      # a status the models refuse: its events say so
                        log.warning("audit cannot read task %s: %s", raw["metadata"].get("name"), exc)
        known = await reading
    finally:
        reading.cancel()
    if known is None:
        return {"tasks": len(versions), "ttl_armed": armed, "mirrored_again": 0, "marked_deleted": 0}
    stale = {uid for uid, version in versions.items() if known.get(uid) != version}
    mirrored = 0
    if stale:
        async for page in _pages(ctx, None):
            for raw in page:
                if raw["metadata"]["uid"] in stale:
                    ctx.mirror.put(raw)
                    mirrored += 1
            while ctx.mirror.pending > MIRROR_BACKLOG:
                if not ctx.mirror.healthy:      # MongoDB went away: the next audit repairs the rest
                    log.info("audit stops mirroring: MongoDB is unavailable (%s)", ctx.mirror.last_error)
                    return {"tasks": len(versions), "ttl_armed": armed, "mirrored_again": mirrored,
                            "marked_deleted": 0}
                await asyncio.sleep(0.2)
    gone = [uid for uid in known if uid not in versions and await _really_gone(ctx, uid)]
    for uid in gone:
        forget(ctx, uid)
    return {"tasks": len(versions), "ttl_armed": armed, "mirrored_again": mirrored, "marked_deleted": len(gone)}


async def _really_gone(ctx: OperatorContext, uid: str) -> bool:
    """A record the listing did not show: gone, unless it was made while the audit paged (one read)."""
    record = await asyncio.to_thread(ctx.mirror.open_mirror().get, uid)
    if not record:
        return False
    try:
        now = await ctx.kube.get_task(record.get("namespace") or "", record.get("name") or "")
    except KubeError as exc:
        if exc.not_found:
            return True
        raise
    return (now.get("metadata") or {}).get("uid") != uid


async def _mirrored(ctx: OperatorContext) -> dict[str, int] | None:
    """The uid -> resourceVersion of the live records of the watched namespaces; None if unreadable
    (MongoDB away: the audit then leaves the mirror to the next one; the writer keeps what the
    watch gives it)."""
    patterns = ctx.settings.watch_namespaces
    try:
        mirror = await asyncio.to_thread(ctx.mirror.open_mirror)
        if not patterns:
            everything: dict[str, int] = await asyncio.to_thread(mirror.uids)
            return everything
        names = {p for p in patterns if not _is_glob(p)}
        if any(_is_glob(p) for p in patterns):
            names |= {n["metadata"]["name"] for n in await ctx.kube.list_namespaces()
                      if any(fnmatch.fnmatch(n["metadata"]["name"], p) for p in patterns)}
        known: dict[str, int] = {}
        for ns in names:
            known.update(await asyncio.to_thread(mirror.uids, ns))
        return known
    except Exception as exc:  # noqa: BLE001 - MongoDB down (or refusing): the next audit tries again
        log.info("audit could not read the mirror: %s", exc)
        return None


async def resync_loop(ctx: OperatorContext) -> None:
    """The audit at once and again SETTLE_SECONDS later, then the resync every GENTASK_RESYNC_SECONDS
    and the audit every GENTASK_AUDIT_SECONDS, until cancelled; a failed round is logged, the next one
    comes."""
    audit_due = time.monotonic()
    audits = 0
    while True:
        now = time.monotonic()
        round_, job = ("audit", audit) if now >= audit_due else ("resync", resync)
        if round_ == "audit":
            audits += 1
            wait = min(SETTLE_SECONDS, ctx.settings.audit_seconds) if audits == 1 else ctx.settings.audit_seconds
            audit_due = now + wait
        try:
            counts = await job(ctx)
            log.info("%s done in %.2fs", round_, time.monotonic() - now, extra=counts)
        except Exception:  # noqa: BLE001 - a failed round is logged; the next one runs on time
            log.exception("%s failed", round_)
        await asyncio.sleep(min(ctx.settings.resync_seconds, max(0.0, audit_due - time.monotonic())))


async def start_waiting(ctx: OperatorContext, namespace: str, reasons: frozenset[str] | None = None) -> int:
    """Reconcile the tasks of a namespace that wait for it (reason NamespaceNotEnabled, CredentialsMissing
    or ProviderNotConfigured, or those of `reasons`): it just got the tenant label, or its Secret may
    be fixed. Returns how many were waiting."""
    from gentask.operator.tenants import WAITING_REASONS
    started = 0
    async for page in ctx.kube.task_pages(namespace, field_selector=f"status.phase={Phase.PENDING.value}"):
        for raw in page:
            if (raw.get("status") or {}).get("reason") not in (reasons or WAITING_REASONS):
                continue
            try:
                task, spec_error = parse_task(raw)
                await reconcile_task(ctx, task, raw, spec_error)
                started += 1
            except Exception as exc:  # noqa: BLE001 - the resync tries again
                log.warning("could not start waiting task %s: %s", raw["metadata"].get("name"), exc)
    return started


async def tenant_watch_loop(ctx: OperatorContext) -> None:
    """Watch the namespaces carrying GENTASK_TENANT_LABEL: one that gets it starts its waiting tasks
    at once (else the next resync would), one that loses it is no longer served. Only namespaces in
    GENTASK_WATCH_NAMESPACES are looked at."""
    from gentask.kube.errors import WatchExpired
    label = ctx.settings.tenant_label or ""
    patterns = ctx.settings.watch_namespaces
    tenants = ctx.tenants
    while True:
        try:
            items, version = await ctx.kube.list_namespaces_labelled(label)
            names = {ns["metadata"]["name"] for ns in items if in_scope(ns["metadata"]["name"], patterns)}
            for gone in tenants.labelled - names:
                tenants.saw(gone, False)
            fresh = [name for name in sorted(names) if tenants.saw(name, True)]
            tenants.synced = True
            for name in fresh:      # at start, and after a gap: what got the label meanwhile starts
                await start_waiting(ctx, name)
            async for kind, obj in ctx.kube.watch_namespaces(version, label_selector=label):
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                name = (obj.get("metadata") or {}).get("name") or ""
                if kind == "BOOKMARK" or not in_scope(name, patterns):
                    continue
                if tenants.saw(name, kind != "DELETED"):
                    waiting = await start_waiting(ctx, name)
                    if waiting:
                        log.info("namespace %s is now a tenant: %d waiting task(s) looked at again", name, waiting)
        except asyncio.CancelledError:
            raise
        except WatchExpired:
            continue
        except Exception as exc:  # noqa: BLE001 - list again after a pause; the resync covers the gap
            tenants.synced = False          # meanwhile each namespace is read (5 s cache)
            log.warning("the tenant namespace watch failed (%s); trying again in 5 s", exc)
            await asyncio.sleep(5)


async def tenant_recheck_loop(ctx: OperatorContext) -> None:
    """Every RECHECK_SECONDS, the namespaces whose tasks wait for their credentials Secret look again:
    a Secret created or fixed starts them within seconds. A namespace leaves the set when none waits."""
    from gentask.operator.tenants import RECHECK_SECONDS, SECRET_REASONS
    tenants = ctx.tenants
    while True:
        await asyncio.sleep(RECHECK_SECONDS)
        for namespace in sorted(tenants.waiting):
            try:
                if not await start_waiting(ctx, namespace, SECRET_REASONS):
                    tenants.waiting.discard(namespace)
            except Exception as exc:  # noqa: BLE001 - the next round (or the resync) tries again
                log.warning("could not look again at the waiting tasks of %s: %s", namespace, exc)
