"""The periodic resync: repair what a missed event could leave (unstarted tasks, the mirror, TTL timers)."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from typing import Any

from pydantic import ValidationError

from gentask.domain.reasons import Phase
from gentask.operator.context import OperatorContext
from gentask.operator.reconcile import parse_task, reconcile_task
from gentask.operator.ttl import schedule_ttl

log = logging.getLogger("gentask.operator")

GLOB = "*?["


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in GLOB)


async def resync(ctx: OperatorContext) -> dict[str, int]:
    """Repair what a missed event could leave: a task never started, the mirror, expired TTLs, a vanished Job."""
    patterns = ctx.settings.watch_namespaces
    if patterns and not any(_is_glob(p) for p in patterns):
        tasks: list[dict[str, Any]] = []
        for ns in patterns:
            items, _ = await ctx.kube.list_tasks(ns)
            tasks += items
    else:   # everything, or glob patterns as Kopf takes them: list once, keep what they match
        items, _ = await ctx.kube.list_tasks(None)
        tasks = [t for t in items
                 if not patterns or any(fnmatch.fnmatch(t["metadata"]["namespace"], p) for p in patterns)]
    live = {t["metadata"]["uid"]: t for t in tasks}
    started = 0
    for raw in tasks:
        phase = Phase.parse((raw.get("status") or {}).get("phase"))
        unstarted = phase in (None, Phase.PENDING) or (phase is Phase.QUEUED and ctx.executor is None
                                                       and raw["metadata"]["uid"] not in ctx.jobs_ensured)
        if unstarted and not raw["metadata"].get("deletionTimestamp"):
            # Kopf does not retry an event handler that failed (a burst that timed the client out, an
            # API server that refused a write): without this such a task would wait for its next change,
            # which never comes. Starting twice is harmless: the Queued write is guarded by resourceVersion.
            try:
                task, spec_error = parse_task(raw)
                await reconcile_task(ctx, task, raw, spec_error)
                started += 1
            except Exception as exc:  # noqa: BLE001 - the next round tries again; one task must not stop the rest
                log.warning("resync could not start task %s: %s", raw["metadata"].get("name"), exc)
        if phase is not None and phase.terminal:
            try:
                schedule_ttl(ctx, parse_task(raw)[0])
            except ValidationError as exc:      # a status the models refuse: its events say so
                log.warning("resync cannot read task %s: %s", raw["metadata"].get("name"), exc)
    known = await _mirrored(ctx, patterns, tasks)
    stale = [t for uid, t in live.items() if known is None or known.get(uid) != int(t["metadata"]["resourceVersion"])]
    for raw in stale:              # only what MongoDB lacks or has older
        ctx.mirror.put(raw)
    gone = [uid for uid in (known or {}) if uid not in live]
    for uid in gone:
        ctx.mirror.delete(uid)
    return {"tasks": len(tasks), "started": started, "mirrored_again": len(stale), "marked_deleted": len(gone)}


async def _mirrored(ctx: OperatorContext, patterns: list[str], tasks: list[dict[str, Any]]) -> dict[str, int] | None:
    """The uid -> resourceVersion of the live records of the watched namespaces; None if unreadable."""
    mirror = ctx.mirror.mirror
    if mirror is None:
        return None
    try:
        if not patterns:
            everything: dict[str, int] = await asyncio.to_thread(mirror.uids)
            return everything
        names = {t["metadata"]["namespace"] for t in tasks} | {p for p in patterns if not _is_glob(p)}
        if any(_is_glob(p) for p in patterns):
            names |= {n["metadata"]["name"] for n in await ctx.kube.list_namespaces()
                      if any(fnmatch.fnmatch(n["metadata"]["name"], p) for p in patterns)}
        known: dict[str, int] = {}
        for ns in names:
            known.update(await asyncio.to_thread(mirror.uids, ns))
        return known
    except Exception as exc:  # noqa: BLE001 - MongoDB down: everything goes through the queue
        log.info("resync could not read the mirror: %s", exc)
        return None


async def resync_loop(ctx: OperatorContext) -> None:
    """Resync every GENTASK_RESYNC_SECONDS until cancelled; a failed round is logged, the next one comes."""
    while True:
        await asyncio.sleep(ctx.settings.resync_seconds)
        started = time.monotonic()
        try:
            counts = await resync(ctx)
            log.info("resync done in %.2fs", time.monotonic() - started, extra=counts)
        except Exception:  # noqa: BLE001 - a failed resync is logged; the next one runs on time
            log.exception("resync failed")
