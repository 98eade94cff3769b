"""Kopf handlers: thin entry points that hand the object to gentask.operator.reconcile.

Only event handlers (level-triggered, like a controller-runtime reconcile): Kopf then stores no
handler progress and adds no finalizer, so the happy path costs no write of Kopf's own.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from gentask.config import load_settings
from gentask.domain.task import GROUP, PLURAL, VERSION
from gentask.kube.client import api_client
from gentask.kube.names import LABEL_TASK
from gentask.logs import setup_logging
from gentask.operator import reconcile
from gentask.operator.context import MirrorQueue, OperatorContext
from gentask.operator.metrics import Metrics
from gentask.operator.server import serve

log = logging.getLogger("gentask.operator")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    config = load_settings()
    setup_logging(config)
    from gentask.providers import registry_from_settings
    settings.posting.level = logging.WARNING          # our own Events say what happened
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.idle_timeout = 1.0
    settings.batching.batch_window = 0.05
    settings.networking.error_backoffs = [1, 2, 5, 10]
    metrics = Metrics()
    ctx = OperatorContext(settings=config, api=api_client(), registry=registry_from_settings(config),
                          metrics=metrics, mirror=MirrorQueue(config, metrics))
    ctx.background.append(asyncio.create_task(ctx.mirror.run()))
    ctx.background.append(asyncio.create_task(reconcile.resync_loop(ctx)))
    if config.executor == "inline":
        from gentask.operator.inline import InlineExecutor
        from gentask.storage import ArtifactStore, connect
        ctx.executor = InlineExecutor(ctx, ArtifactStore(connect(config)))
        ctx.executor.start()
    if config.metrics_port:
        ctx.background.append(asyncio.create_task(serve(ctx, config.metrics_port)))
    memo.ctx = ctx
    ctx.ready = True
    log.info("operator started", extra={"executor": config.executor, "namespaces": config.watch_namespaces or "all"})


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    ctx: OperatorContext = memo.ctx
    ctx.ready = False
    if ctx.executor is not None:
        await ctx.executor.stop()
    for task in ctx.background:
        task.cancel()
    await asyncio.gather(*ctx.background, return_exceptions=True)
    await ctx.registry.aclose()
    ctx.api.close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def task_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    ctx: OperatorContext = memo.ctx
    task = dict(body)
    if type == "DELETED":
        reconcile.forget(ctx, body["metadata"]["uid"])
        return
    try:
        await reconcile.reconcile_task(ctx, task)
    except Exception as exc:  # noqa: BLE001 - try again on the next event or resync
        log.exception("reconcile failed", extra={"task": body["metadata"]["name"]})
        raise kopf.TemporaryError(str(exc), delay=5) from exc


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TASK: kopf.PRESENT})
async def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    ctx: OperatorContext = memo.ctx
    await reconcile.reconcile_job(ctx, dict(body), deleted=type == "DELETED")
