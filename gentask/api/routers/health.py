"""Probes and metrics: /healthz (the process answers), /readyz (cluster and MongoDB), /metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from gentask.api.deps import ServicesDep
from gentask.api.schemas import Envelope, ErrorEnvelope, Readiness

router = APIRouter(tags=["health"])

MONGO_PROBE_TIMEOUT = 2.0


@router.get("/healthz", response_model=Envelope[dict], summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"success": True, "data": {"status": "ok"}, "message": "ok"}


@router.get("/readyz", response_model=Envelope[Readiness], summary="Readiness: the cluster watch is live",
            responses={503: {"model": ErrorEnvelope, "description": "the cluster is unreachable"}})
async def readyz(services: ServicesDep):
    """Ready while the task watch is live. MongoDB is reported, not required: creates and results
    work without it (lists answer 503), so a MongoDB outage must not take the API out of service."""
    index = services.index
    cluster = "ok" if index.synced.is_set() and index.healthy else f"unavailable: {index.last_error}"
    try:
        await asyncio.wait_for(asyncio.to_thread(_probe_mongo, services), MONGO_PROBE_TIMEOUT)
        mongodb = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is "unavailable"
        mongodb = f"unavailable: {getattr(exc, 'message', None) or type(exc).__name__}"
    data = {"cluster": cluster, "mongodb": mongodb, "tasks_watched": len(index)}
    if cluster != "ok":
        return JSONResponse({"success": False, "data": None, "message": f"not ready: cluster {cluster}; "
                             f"mongodb {mongodb}"}, status_code=503, headers={"Retry-After": "5"})
    return {"success": True, "data": data, "message": "ready" if mongodb == "ok" else "ready (MongoDB unavailable: "
            "lists answer 503)"}


def _probe_mongo(services) -> None:
    mirror = services.store.mirror()
    try:
        mirror.get("readyz-probe")
    except services.store.errors() as exc:
        raise services.store.unavailable(exc) from exc


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(services: ServicesDep) -> PlainTextResponse:
    return PlainTextResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")
