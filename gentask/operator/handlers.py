"""Kopf handlers: thin entry points that parse the object once and hand it to the reconcilers.

Only event handlers (level-triggered, like a controller-runtime reconcile): Kopf then stores no
handler progress and adds no finalizer, so the happy path costs no write of Kopf's own. Kopf
logs in with the connection gentask.kube.config resolves (`login`), so Kopf and gentask reach
the cluster one way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from gentask.config import load_settings
from gentask.domain.quota import PLURAL as QUOTA_PLURAL
from gentask.domain.task import GROUP, PLURAL, VERSION
from gentask.kube.client import KubeClient
from gentask.kube.config import Connection, load_connection
from gentask.kube.names import LABEL_TASK, UNFINISHED, UNSUCCESSFUL_JOBS
from gentask.logs import setup_logging
from gentask.operator import jobs, reconcile, resync
from gentask.operator.context import OperatorContext
from gentask.operator.metrics import Metrics
from gentask.operator.observe import after_leaving
from gentask.operator.server import serve
from gentask.storage import MirrorWriter

log = logging.getLogger("gentask.operator")

# The operator's requests wait as long as the API server needs, as with the kubernetes package
# before: a handler that gave up on a slow (overloaded) server would leave its task until the
# next event. At most KUBE_POOL requests at once (the thread pool before allowed about 6).
KUBE_TIMEOUT: float | None = None
KUBE_POOL = 16
LIST_CHUNK = 500


async def connection_info(connection: Connection) -> kopf.ConnectionInfo:
    """Kopf's view of a gentask connection: server, TLS material, token and when it expires."""
    token = await connection.authorization_async()
    return kopf.ConnectionInfo(
        server=connection.host,
        ca_path=connection.ca_file, ca_data=connection.ca_data.encode() if connection.ca_data else None,
        insecure=connection.insecure or None,
        scheme="Bearer" if token else None, token=token.removeprefix("Bearer ") if token else None,
        certificate_path=connection.cert_file, private_key_path=connection.key_file,
        default_namespace=connection.namespace,
        expiration=connection.tokens.expiration if connection.tokens else None,
    )


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    """Kopf's credentials, from gentask's one resolver (kubeconfig, else in-cluster)."""
    return await connection_info(load_connection())


STARTUP_BACKOFF = 5.0     # seconds before Kopf runs a failed start-up again (its default: 60)


@kopf.on.startup(backoff=STARTUP_BACKOFF)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Build the shared context: the client, providers, metrics, the mirror and its background tasks."""
    config = load_settings()
    setup_logging(config)
    from gentask.providers import registry_from_settings
    settings.posting.level = logging.WARNING          # our own Events say what happened
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.idle_timeout = 1.0
    settings.batching.batch_window = 0.05
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # Only unfinished tasks and unfinished Jobs, filtered by the API server: finished ones cost the
    # operator no memory and no event at start, however many there are (the resync's audit pages
    # through them for TTLs and the mirror). Listings come a page at a time.
    settings.watching.field_selectors[GROUP, VERSION, PLURAL] = UNFINISHED
    settings.watching.field_selectors["batch", "v1", "jobs"] = UNSUCCESSFUL_JOBS
    settings.watching.label_selectors["batch", "v1", "jobs"] = LABEL_TASK
    settings.watching.chunk_size = LIST_CHUNK
    metrics = Metrics()
    ctx = OperatorContext(settings=config, kube=KubeClient(load_connection(), timeout=KUBE_TIMEOUT, pool=KUBE_POOL),
                          registry=registry_from_settings(config), metrics=metrics,
                          mirror=MirrorWriter(config))
    from gentask.operator.notify import Notifier
    from gentask.operator.quota import Quotas
    from gentask.operator.tenants import Tenants
    ctx.notifier = Notifier(ctx)
    ctx.tenants = Tenants(config, ctx.kube)
    ctx.quotas = Quotas(config, ctx.kube, ctx.mirror)
    ctx.quotas.wake = lambda ns, name: resync.wake(ctx, ns, name)
    try:
        await resync.quota_sync(ctx)    # before the watches: counts from what is, not from memory
    except BaseException:
        await ctx.registry.aclose()     # the next try builds everything anew: nothing left open
        await ctx.kube.close()
        raise
    ctx.background.append(asyncio.create_task(ctx.quotas.loop()))
    metrics.webhook_pending.set_function(lambda: len(ctx.notifier.loops))
    metrics.mirror_lag.set_function(lambda: ctx.mirror.lag)
    metrics.mirror_pending.set_function(lambda: ctx.mirror.pending)
    ctx.mirror.start()
    ctx.background.append(asyncio.create_task(resync.resync_loop(ctx)))
    if config.tenant_label:      # a namespace that gets the label starts its waiting tasks at once
        ctx.background.append(asyncio.create_task(resync.tenant_watch_loop(ctx)))
    if config.tenancy:           # a task waiting for its namespace's Secret starts within seconds of it
        ctx.background.append(asyncio.create_task(resync.tenant_recheck_loop(ctx)))
    if config.executor == "inline":
        from gentask.operator.inline import InlineExecutor
        from gentask.storage import ArtifactStore, connect
        ctx.executor = InlineExecutor(ctx, ArtifactStore(connect(config)))
        ctx.executor.start()
    elif config.executor == "pool":         # the worker pool runs the tasks (gentask.operator.pool)
        from gentask.operator.pool import PoolExecutor
        ctx.executor = PoolExecutor()
    if config.metrics_port:
        ctx.background.append(asyncio.create_task(serve(ctx, config.metrics_port)))
    memo.ctx = ctx
    ctx.ready = True
    log.info("operator started", extra={"executor": config.executor, "namespaces": config.watch_namespaces or "all",
                                        "tenants": (config.tenant_label, config.tenant_namespaces)
                                        if config.tenancy else "every watched namespace"})


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the executor and the background tasks; close the providers and the client."""
    ctx: OperatorContext = memo.ctx
    ctx.ready = False
    if ctx.executor is not None:
        await ctx.executor.stop()
    await ctx.notifier.close()          # what was sent but not recorded is sent again after a restart
    await ctx.mirror.stop()             # what waits for MongoDB gets a few seconds more
    for task in ctx.background:
        task.cancel()
    await asyncio.gather(*ctx.background, return_exceptions=True)
    await ctx.registry.aclose()
    await ctx.kube.close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def task_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every change of a GenerationTask: parsed once, then reconciled; a DELETED one is forgotten."""
    ctx: OperatorContext = memo.ctx
    raw = dict(body)
    try:
        if type == "DELETED":
            # Gone, or finished: a task that finishes leaves the watch (its field selector), and the
            # API server says so with DELETED and the task as it was before. Which one, a read tells,
            # unless the inline executor wrote that outcome itself (and observed its answer).
            if ctx.executor is not None and ctx.executor.left(raw):
                return
            now = await after_leaving(ctx, raw)
            if now is None:
                return
            raw = now
        task, spec_error = reconcile.parse_task(raw)
        await reconcile.reconcile_task(ctx, task, raw, spec_error)
    except Exception as exc:  # noqa: BLE001 - try again on the next event or resync
        log.exception("reconcile failed", extra={"task": body["metadata"]["name"]})
        raise kopf.TemporaryError(str(exc), delay=5) from exc


@kopf.on.event(GROUP, VERSION, QUOTA_PLURAL)
async def quota_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A GenerationQuota added, changed or deleted: the limits the next admissions use."""
    ctx: OperatorContext = memo.ctx
    if ctx.quotas is not None:
        ctx.quotas.saw_quota(dict(body), deleted=type == "DELETED")


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TASK: kopf.PRESENT})
async def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every change of a task's Job: what its pod could not report."""
    ctx: OperatorContext = memo.ctx
    # DELETED also when a Job completes (it leaves the watch's field selector): reconcile_job reads
    # the task first, finished then, and only for an unfinished task checks that the Job is gone.
    await jobs.reconcile_job(ctx, dict(body), deleted=type == "DELETED")
