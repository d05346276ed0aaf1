"""FastAPI app assembly: lifespan bound to the runtime, problem+json handlers, body cap, ops probes, routers.

app = create_app(runtime, extra_routers=[alerts.router, incidents.router])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from safecity.api import alerts, auth, devices, events, ingest, notify, places, routing, rules
from safecity.api.docs import install_docs
from safecity.api.problems import ProblemMiddleware, install_problem_handlers
from safecity.kernel.logging import install_redaction

log = structlog.get_logger(__name__)

# Paths that need no credentials (probes, metrics, API description). Everything else requires a role.
# The CAP feed is public too: other agencies' CAP aggregators poll it and hold no key of ours (alerts carry no
# personal data; actors, feedback and assignees are not in CAP).
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/cap/feed.atom",
        "/cap/alerts/{public_alert_id}.xml",
    }
)
CHECK_TIMEOUT_S = 2.0

ops_router = APIRouter(tags=["ops"])


@ops_router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Answer 200 while the process runs."""
    return {"status": "ok"}


async def _check_database(runtime: Any) -> None:
    async with runtime.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check_bus(runtime: Any) -> None:
    if not await runtime.bus.healthy():
        raise RuntimeError("bus is not healthy")


class LoopsDown(Exception):
    """Supervised background loops are not running (failed and waiting to restart, or ended)."""


async def _check_tasks(runtime: Any) -> None:
    down = runtime.supervisor.down()
    if down:
        raise LoopsDown(", ".join(down))


async def _check_broker(runtime: Any) -> None:
    mqtt = runtime.settings.mqtt
    _, writer = await asyncio.open_connection(mqtt.host, mqtt.port)
    writer.close()
    await writer.wait_closed()


async def _run_check(name: str, check: Any, runtime: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await check(runtime)
    except Exception as err:
        # A probe reports failures; it must not raise. The reason is the error type only (no internals).
        log.warning("readiness_check_failed", check=name, error=type(err).__name__)
        report = {"ok": False, "error": type(err).__name__, "ms": round((time.perf_counter() - started) * 1000, 1)}
        if isinstance(err, LoopsDown):
            report["down"] = str(err).split(", ")
        return report
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


@ops_router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"description": "A dependency is not ready."}},
)
async def readyz(request: Request) -> JSONResponse:
    """200 when the database, the bus, (if enabled) the MQTT broker answer and every background loop runs; else 503."""
    runtime = request.app.state.runtime
    checks: dict[str, Any] = {"database": _check_database, "bus": _check_bus, "tasks": _check_tasks}
    if runtime.settings.mqtt.enabled:
        checks["broker"] = _check_broker
    names = list(checks)
    results = await asyncio.gather(*(_run_check(n, checks[n], runtime) for n in names))
    report = dict(zip(names, results, strict=True))
    ready = all(r["ok"] for r in results)
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": report}, status_code=200 if ready else 503
    )


@ops_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this node's metrics (bus backlog read at scrape time)."""
    runtime = request.app.state.runtime
    runtime.update_lag_metrics()
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(runtime: Any, *, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """Build the HTTP app around a runtime (started and stopped by the app's lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_redaction()  # again: the server may have configured logging after the app was built
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="SafeCity API",
        version="0.1.0",
        summary="Public-safety operations platform: sense, warn, dispatch, divert, share, serve.",
        lifespan=lifespan,
        # Our own /docs and /redoc (safecity.api.docs) serve Swagger UI and ReDoc from local assets, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    # Keys may arrive in a query string (`/api/v1/alerts/live?key=`): no access-log line may carry them.
    install_redaction()
    install_docs(app)
    install_problem_handlers(app)
    app.add_middleware(ProblemMiddleware, max_body_bytes=runtime.settings.http.max_body_bytes)
    app.include_router(ops_router)
    app.include_router(auth.keys_router)
    app.include_router(devices.router)
    app.include_router(ingest.router)
    app.include_router(events.router)
    app.include_router(routing.router)
    app.include_router(routing.tiles_router)
    app.include_router(alerts.router)
    app.include_router(alerts.feed_router)
    app.include_router(notify.router)
    app.include_router(rules.router)
    app.include_router(places.router)
    for router in extra_routers:
        app.include_router(router)
    return app
