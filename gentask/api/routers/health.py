"""Probes and metrics: /healthz (the process answers), /readyz (cluster and MongoDB), /metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from gentask.api.deps import Services, ServicesDep
from gentask.api.errors import APIError, Unavailable
from gentask.api.faults import RETRY_AFTER, storage_errors
from gentask.api.routers.tasks import error_responses
from gentask.api.schemas import Envelope, Readiness

router = APIRouter(tags=["health"])

MONGO_PROBE_TIMEOUT = 2.0


@router.get("/healthz", response_model=Envelope[dict[str, str]], summary="Liveness: the process answers")
async def healthz() -> Envelope[dict[str, str]]:
    """Liveness: the process answers."""
    return Envelope[dict[str, str]](success=True, data={"status": "ok"}, message="ok")


@router.get("/readyz", response_model=Envelope[Readiness], summary="Readiness: the cluster watch is live",
            responses={503: {**error_responses(503)[503], "description": "not ready: the cluster watch is down"}})
async def readyz(services: ServicesDep) -> Envelope[Readiness]:
    """Ready while the task watch is live. MongoDB is reported, not required: creates and results
    work without it (lists answer 503), so a MongoDB outage must not take the API out of service."""
    indexes = list(services.tasks.indexes.values())
    down = [i for i in indexes if not (i.synced.is_set() and i.healthy)]
    cluster = "ok" if not down else "; ".join(f"unavailable ({i.namespace}): {i.last_error}" for i in down)
    try:
        await asyncio.wait_for(asyncio.to_thread(_probe_mongo, services), MONGO_PROBE_TIMEOUT)
        mongodb = "ok"
    except APIError as exc:
        mongodb = f"unavailable: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - any failure (a timeout, too) is "unavailable"
        mongodb = f"unavailable: {type(exc).__name__}"
    if cluster != "ok":
        raise Unavailable(f"not ready: cluster {cluster}; mongodb {mongodb}", retry_after=RETRY_AFTER)
    return Envelope[Readiness](success=True, data=Readiness(cluster=cluster, mongodb=mongodb,
                                                             tasks_watched=sum(len(i) for i in indexes)),
                               message="ready" if mongodb == "ok" else "ready (MongoDB unavailable: lists answer 503)")


def _probe_mongo(services: Services) -> None:
    with storage_errors():
        services.storage.open_mirror().get("readyz-probe")


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(services: ServicesDep) -> PlainTextResponse:
    """The API's metrics in the Prometheus text format."""
    return PlainTextResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")
