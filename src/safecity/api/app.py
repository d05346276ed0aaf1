"""FastAPI app assembly: lifespan bound to the node, problem+json handlers, body cap, ops probes, routers.

app = create_app(runtime.api_services(), extra_routers=[incidents.router])

Routers get what they need through typed ports (`safecity.api.deps`), never the runtime or the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from safecity.api import alerts, auth, devices, events, incidents, ingest, notify, open311, places, routing, rules
from safecity.api.deps import MetricsDep, ReadinessDep
from safecity.api.docs import install_docs
from safecity.api.ports import ApiServices
from safecity.api.problems import ProblemMiddleware, install_problem_handlers
from safecity.kernel.logging import install_redaction

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
        # Open311 GeoReport v2 answers in its own error format and takes its key as the spec says (open311.py).
        "/open311/v2/discovery.{fmt}",
        "/open311/v2/services.{fmt}",
        "/open311/v2/services/{service_code}.{fmt}",
        "/open311/v2/requests.{fmt}",
        "/open311/v2/requests/{service_request_id}.{fmt}",
        # The signed task link is a community responder's credential.
        "/api/v1/tasks/{action}",
    }
)

ops_router = APIRouter(tags=["ops"])


@ops_router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Answer 200 while the process runs."""
    return {"status": "ok"}


@ops_router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"description": "A dependency is not ready."}},
)
async def readyz(readiness: ReadinessDep) -> JSONResponse:
    """200 when the database, the bus, (if enabled) the MQTT broker answer and every background loop runs; else 503."""
    report = await readiness()
    return JSONResponse(report.body(), status_code=200 if report.ready else 503)


@ops_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(render: MetricsDep) -> Response:
    """Prometheus text exposition of this node's metrics (bus backlog read at scrape time)."""
    return Response(render(), media_type=CONTENT_TYPE_LATEST)


def create_app(services: ApiServices, *, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """Build the HTTP app around the node's services (`Runtime.api_services()`); the app's lifespan starts and
    stops the node through `services.lifecycle`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_redaction()  # again: the server may have configured logging after the app was built
        await services.lifecycle.start()
        try:
            yield
        finally:
            await services.lifecycle.stop()

    app = FastAPI(
        title="SafeCity API",
        version="0.1.0",
        summary="Public-safety operations platform: sense, warn, dispatch, divert, share, serve.",
        lifespan=lifespan,
        # Our own /docs and /redoc (safecity.api.docs) serve Swagger UI and ReDoc from local assets, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    # Keys may arrive in a query string (`/api/v1/alerts/live?key=`): no access-log line may carry them.
    install_redaction()
    install_docs(app)
    install_problem_handlers(app)
    app.add_middleware(ProblemMiddleware, max_body_bytes=services.settings.http.max_body_bytes)
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
    app.include_router(incidents.router)
    app.include_router(incidents.tasks_router)
    app.include_router(incidents.task_page_router)
    app.include_router(open311.router)
    for router in extra_routers:
        app.include_router(router)
    return app
