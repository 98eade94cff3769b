"""The FastAPI application: `create_app(settings)`; `uvicorn gentask.api.app:app` builds one from
the environment when the attribute is first read (no app exists at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gentask.api.auth import KeyRing
from gentask.api.collector import FreezeSurvivors
from gentask.api.deps import Services
from gentask.api.errors import install_handlers
from gentask.api.events import EventHub, follow_shutdown, running_server
from gentask.api.index import TaskIndex
from gentask.api.limits import RateLimiter
from gentask.api.metrics import Metrics, MetricsMiddleware
from gentask.api.middleware import BodyLimitMiddleware
from gentask.api.routers import callbacks, console, events, health, models, tasks, usage
from gentask.api.schemas import restrict_providers
from gentask.api.service import TaskService
from gentask.api.signing import LinkSigner
from gentask.config import Settings, SettingsError, load_settings
from gentask.kube.tasks import TaskClient, load_connection
from gentask.storage import MirrorWriter

log = logging.getLogger("gentask.api")

MIRROR_PENDING_MAX = 10_000      # tasks whose create-time mirror write may wait; more are dropped (counted)

DESCRIPTION = """
Kubernetes-native AI generation tasks behind the old Volcengine AI Server's REST interface.

Every answer is the envelope `{success, data, message}` (failures add `errors` for invalid fields).
Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`. See docs/api.md.
"""


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the API key, instead"},
}


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The generated document, narrowed to the enabled providers, plus the API-key schemes on every /api
    operation."""
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            restrict_providers(schema, app.state.settings.providers)   # the catalog as this server offers it
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in schema["paths"].items():
                if path.startswith("/api/"):
                    for operation in operations.values():     # a route may say otherwise (openapi_extra)
                        operation.setdefault("security", [{"bearer": []}, {"apiKey": []}])
            app.openapi_schema = schema
        return app.openapi_schema
    return build


def create_app(settings: Settings | None = None, *, kubeconfig: str | None = None) -> FastAPI:
    """A new app; its lifespan connects to the cluster, starts the task watch and the mirror writer."""
    settings = settings or load_settings()
    if settings.auth_disabled and settings.environment == "production":
        raise SettingsError("invalid setting GENTASK_AUTH_DISABLED=true: authentication cannot be off "
                            "when ENVIRONMENT=production")
    try:
        keys = KeyRing.parse(settings.api_keys.get_secret_value() if settings.api_keys else None)
    except ValueError as exc:
        raise SettingsError(f"invalid setting {exc}") from None
    metrics = Metrics()
    links = LinkSigner.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_disabled and not len(keys):
            log.warning("no API keys are configured (GENTASK_API_KEYS) and authentication is on: "
                        "every /api request will be refused with 401")
        if settings.auth_disabled:
            log.warning("authentication is OFF (GENTASK_AUTH_DISABLED): every caller acts as admin")
        if links.ephemeral:
            log.warning("no link signing key is configured (GENTASK_API_LINK_KEYS): artifact links are signed "
                        "with a key made at start, so they stop working when this process restarts and other "
                        "API replicas refuse them (403); set GENTASK_API_LINK_KEYS (the chart always does)")
        client = TaskClient(load_connection(kubeconfig), timeout=settings.api_kube_timeout)
        # One index (and event hub) per namespace the API serves: GENTASK_NAMESPACE and each namespace an
        # API key names (docs/tenants.md); a caller's requests look in its own namespace only.
        namespaces = [settings.namespace, *sorted(keys.namespaces() - {settings.namespace})]
        indexes = {ns: TaskIndex(client, ns) for ns in namespaces}
        index = indexes[settings.namespace]
        storage = MirrorWriter(settings, max_pending=MIRROR_PENDING_MAX)
        storage.start()
        metrics.gauges["gentask_api_watched_tasks"] = lambda: sum(len(i) for i in indexes.values())
        metrics.gauges["gentask_api_watch_healthy"] = lambda: int(all(i.healthy for i in indexes.values()))
        metrics.gauges["gentask_api_mirror_pending"] = lambda: storage.pending
        metrics.gauges["gentask_api_mirror_lag_seconds"] = lambda: round(storage.lag, 3)
        hubs = {ns: EventHub(i, max_streams=settings.api_sse_max_streams,
                             max_per_user=settings.api_sse_max_streams_per_user, queue=settings.api_sse_queue,
                             heartbeat=settings.api_sse_heartbeat_seconds, lifetime=settings.api_sse_max_seconds,
                             links=links) for ns, i in indexes.items()}
        for ns, i in indexes.items():
            i.listener = hubs[ns]
        hub = hubs[settings.namespace]
        metrics.gauges["gentask_api_sse_streams"] = lambda: sum(len(h) for h in hubs.values())
        metrics.counters["gentask_api_sse_events_total"] = ("Events sent on the event streams.",
                                                            lambda: sum(h.events_sent for h in hubs.values()))
        metrics.counters["gentask_api_sse_resyncs_total"] = ("Event streams that fell behind and were resynced "
                                                             "from the index.",
                                                             lambda: sum(h.resyncs for h in hubs.values()))
        app.state.services = Services(settings=settings, keys=keys, limiter=RateLimiter(
            settings.api_rate_per_user, settings.api_rate_burst), metrics=metrics, storage=storage, index=index,
            tasks=TaskService(settings, client, index, storage, metrics, indexes), links=links, hub=hub,
            hubs=hubs)
        server = running_server()       # uvicorn waits for open responses before it tells the app it stops
        shutdown = None if server is None else asyncio.create_task(follow_shutdown(server, hub),
                                                                   name="gentask-api-sse-shutdown")
        collector = FreezeSurvivors()      # the index's objects would make every full collection long
        collector.start()
        watches = [asyncio.create_task(i.run(), name=f"gentask-api-watch-{ns}") for ns, i in indexes.items()]
        with contextlib.suppress(asyncio.TimeoutError):       # serve even if the cluster is not there yet
            await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in indexes.values())), 5)
        log.info("REST API ready", extra={"namespace": settings.namespace, "namespaces": namespaces,
                                          "watched": sum(len(i) for i in indexes.values()),
                                          "auth": not settings.auth_disabled})
        try:
            yield
        finally:
            for each in hubs.values():
                each.close()
            for background in (*watches, shutdown):
                if background is not None:
                    background.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await background
            await client.close()
            await storage.stop()
            await collector.stop()

    app = FastAPI(title="gentask REST API", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs", openapi_url="/openapi.json", redoc_url=None)
    app.state.settings = settings
    app.openapi = _openapi(app)  # type: ignore[method-assign]  # FastAPI's documented way to customize the schema
    install_handlers(app)
    app.include_router(tasks.router)
    app.include_router(events.router)
    app.include_router(callbacks.router)
    app.include_router(models.router)
    app.include_router(usage.router)
    app.include_router(health.router)
    app.include_router(console.router)
    app.include_router(console.pages)      # /console and / (the web console; docs/console.md)
    app.add_middleware(BodyLimitMiddleware, limit=settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    """`gentask.api.app:app` for uvicorn: built from the environment on first access."""
    if name == "app":
        from gentask.logs import setup_logging
        settings = load_settings()
        setup_logging(settings)
        built = create_app(settings)
        globals()["app"] = built
        return built
    raise AttributeError(name)
