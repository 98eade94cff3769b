"""Typed dependencies: routes take `caller: CallerDep, tasks: TasksDep` as plain parameters.

Every dependency is `async def`: FastAPI runs a plain `def` dependency in its thread pool, which
cost more than the whole rest of a result read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from gentask.api.auth import ANONYMOUS, Caller, KeyRing, presented_key
from gentask.api.errors import TooManyRequests, Unauthorized
from gentask.api.events import EventHub
from gentask.api.index import TaskIndex
from gentask.api.limits import RateLimiter
from gentask.api.metrics import Metrics
from gentask.api.service import TaskService
from gentask.api.signing import LinkSigner
from gentask.config import Settings
from gentask.storage import MirrorWriter


@dataclass
class Services:
    """Everything the routes use, built once per app in its lifespan."""

    settings: Settings
    keys: KeyRing
    limiter: RateLimiter
    metrics: Metrics
    storage: MirrorWriter
    index: TaskIndex
    tasks: TaskService
    links: LinkSigner
    hub: EventHub                       # GENTASK_NAMESPACE's
    hubs: dict[str, EventHub] | None = None     # one a namespace the API serves (docs/tenants.md)

    def hub_of(self, caller: Caller) -> EventHub:
        """The event hub of the caller's namespace."""
        return (self.hubs or {}).get(self.tasks.namespace_of(caller), self.hub)


async def get_services(request: Request) -> Services:
    """The app's services."""
    services: Services = request.app.state.services
    return services


async def get_tasks(request: Request) -> TaskService:
    """The task service."""
    tasks: TaskService = request.app.state.services.tasks
    return tasks


async def get_links(request: Request) -> LinkSigner:
    """The signer of artifact links."""
    links: LinkSigner = request.app.state.services.links
    return links


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_caller(request: Request) -> Caller:
    """The authenticated caller, after the per-user rate limit (401 and 429 otherwise).

    The headers are read here rather than through FastAPI's security classes, which cost a
    dependency solve each on every request; the OpenAPI document declares the schemes instead
    (app.SECURITY_SCHEMES)."""
    services: Services = request.app.state.services
    if services.settings.auth_disabled:
        caller = ANONYMOUS
    else:
        key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        found = services.keys.lookup(key) if key else None
        if found is None:
            raise Unauthorized(None if not key else "unknown API key")
        caller = found
    wait = services.limiter.take(caller.limit_key)
    if wait:
        services.metrics.rejected["rate"] += 1
        raise TooManyRequests(f"rate limit of {services.limiter.rate:g} requests/s per user exceeded "
                              "(GENTASK_API_RATE_PER_USER)", retry_after=wait)
    return caller


IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CallerDep = Annotated[Caller, Depends(get_caller)]
TasksDep = Annotated[TaskService, Depends(get_tasks)]
LinksDep = Annotated[LinkSigner, Depends(get_links)]
IdempotencyKeyDep = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN,
    description="the same key and body return the same task; the same key with another body is 409")]
