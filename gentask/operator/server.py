"""Metrics and probes: /metrics (Prometheus), /healthz (the process lives), /readyz (started,
and the API server answers)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gentask.operator.context import OperatorContext


async def serve(ctx: OperatorContext, port: int) -> None:
    """Serve /metrics, /healthz and /readyz on `port` until cancelled."""
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=ctx.metrics.render(), content_type="text/plain", charset="utf-8")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        checks = {"started": ctx.ready, "mirror": "ok" if ctx.mirror.healthy else "catching up"}
        try:
            await asyncio.wait_for(ctx.kube.version(), 3)
            checks["kubernetes"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            checks["kubernetes"] = f"unreachable: {type(exc).__name__}"
        ok = ctx.ready and checks["kubernetes"] == "ok"
        return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks},
                                 status=200 if ok else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
