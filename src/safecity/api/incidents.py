"""Incident routes: open (calls and reports), list, read with SLA timers and history, act through the lifecycle,
recommend and dispatch, export (GeoJSON, CSV), KPIs; responder routes: registry import, positions, status; community
task links (the signed token is the credential)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from safecity.api.auth import Principal, Role, require
from safecity.api.deps import DispatchDep
from safecity.api.problems import PROBLEM_RESPONSES, UnsupportedMediaType, request_locale
from safecity.api.uploads import CSV_TYPES, GEOJSON_TYPES, ImportRejected, import_body, upload
from safecity.dispatch.dedupe import MergeProposal
from safecity.dispatch.incident import (
    Incident,
    IncidentDraft,
    Position,
    Responder,
    StepIn,
    StepRecord,
    TaskSent,
    TaskView,
)
from safecity.dispatch.lifecycle import OPEN_STAGES, Stage
from safecity.dispatch.recommend import Ranked, ResponderStatus
from safecity.dispatch.responders import RESPONDER_FORMAT, RESPONDER_ID_PATTERN
from safecity.kernel.dispatch_settings import INTERVALS
from safecity.kernel.errors import InvalidInput
from safecity.kernel.tabular import ImportMode, ImportReport, decode_csv, parse_csv, parse_geojson
from safecity.web.task_page import TASK_PAGE, TASK_PAGE_HEADERS

READ = require(Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER, Role.READER)
Opener = Annotated[Principal, require(Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER)]
Actor = Annotated[Principal, require(Role.OPERATOR, Role.DISPATCHER)]
Mover = Annotated[Principal, require(Role.DISPATCHER, Role.RESPONDER, Role.INGEST)]

router = APIRouter(prefix="/api/v1", tags=["incidents"], responses=PROBLEM_RESPONSES)
tasks_router = APIRouter(prefix="/api/v1/tasks", tags=["incidents"], responses=PROBLEM_RESPONSES)
task_page_router = APIRouter(include_in_schema=False)

IncidentId = Annotated[str, Path(pattern=r"^[0-9A-Z]{26}$", description="Incident id (26 characters).")]
ResponderId = Annotated[str, Path(pattern=RESPONDER_ID_PATTERN, description="Responder id.")]
_FILTER = r"^[^\x00-\x1f\x7f]*$"


class Opened(BaseModel):
    """A new incident and the open incidents it may duplicate (nearest first)."""

    incident: Incident
    proposals: list[dict[str, Any]] = Field(description="{into, distance_m, after_s, automatic} per open duplicate.")


class IncidentPage(BaseModel):
    """One page of incidents, newest first."""

    items: list[Incident]
    total: int
    limit: int
    offset: int


class TimerOut(BaseModel):
    """One SLA timer of an incident."""

    interval: str
    limit_s: float
    started_at: datetime
    due_at: datetime
    ended_at: datetime | None
    elapsed_s: float
    breached: bool


class IncidentDetail(BaseModel):
    """An incident with its SLA timers, history and assignments."""

    incident: Incident
    timers: list[TimerOut]
    history: list[StepRecord]
    assignments: list[dict[str, Any]]


class RankedOut(BaseModel):
    """One line of the recommendation."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    status: str
    eligible: bool
    eta_s: float | None
    score_s: float | None
    snap_m: float | None
    stale: bool
    preempts: str | None
    reasons: list[str]
    route: list[tuple[float, float]] = Field(description="(lon, lat) line, for the first few eligible responders.")


class KpiOut(BaseModel):
    """Count, median and 90th percentile (seconds) of one interval in one group."""

    count: int
    median_s: float
    p90_s: float


class KpiGroup(BaseModel):
    """The intervals of one group."""

    group: str | None
    intervals: dict[str, KpiOut]


class Kpis(BaseModel):
    """Stage KPIs of the incidents opened in [since, until)."""

    since: datetime
    until: datetime
    group_by: str
    groups: list[KpiGroup]


class StatusIn(BaseModel):
    """A responder going out of service or back to available."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["available", "out_of_service"]


class TaskLink(BaseModel):
    """A community responder's signed, expiring link."""

    token: str
    path: str = Field(description="Where the responder's page posts: /api/v1/tasks/{action} with the token.")


class TaskAnswer(BaseModel):
    """A community responder's answer through its link."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=10, max_length=2048, pattern=r"^[A-Za-z0-9_.=-]+$")
    outcome: str | None = Field(None, max_length=2000, pattern=_FILTER)


class TaskToken(BaseModel):
    """A task link's token (the part after `#` in `/task#<token>`)."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=10, max_length=2048, pattern=r"^[A-Za-z0-9_.=-]+$")


class TaskOffer(BaseModel):
    """Which responder gets the incident as a task."""

    model_config = ConfigDict(extra="forbid")

    responder_id: str = Field(pattern=RESPONDER_ID_PATTERN)


class TaskSentOut(BaseModel):
    """A task message queued for a responder's contact subscription (follow it in the subscription's deliveries)."""

    incident_id: str
    responder_id: str
    subscription_id: str
    delivery_id: str = Field(description="The outbox row: GET /api/v1/subscriptions/{subscription_id}/deliveries.")
    actions: list[str]
    expires_at: datetime


class ResponderImportRejected(ImportRejected):
    """An all-or-nothing import had bad rows, so nothing was written."""

    code = "dispatch.responder_import_rejected"


class ResponderUploadMissing(InvalidInput):
    """A multipart responder import carried no file."""

    code = "dispatch.responder_upload_missing"
    title_en = "No file uploaded"
    title_zh = "未上传文件"
    message_en = "The form has no file: send it as the field `file` (curl -F file=@responders.csv)."
    message_zh = "表单中没有文件：请以字段 `file` 上传（curl -F file=@responders.csv）。"


def _actor(principal: Principal) -> str:
    return f"{principal.role.value}:{principal.name}"


def _proposal(p: MergeProposal) -> dict[str, Any]:
    return {"into": p.into, "distance_m": p.distance_m, "after_s": p.after_s, "automatic": p.automatic}


# --- export ----------------------------------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "id",
    "type",
    "priority",
    "stage",
    "route",
    "origin",
    "lon",
    "lat",
    "district",
    "town",
    "community",
    "building",
    "department",
    "service_code",
    "unit_id",
    "alert_id",
    "merged_into",
    "perceived_at",
    "warned_at",
    "opened_at",
    "triaged_at",
    "dispatched_at",
    "en_route_at",
    "on_scene_at",
    "disposed_at",
    "closed_at",
    *(f"{name}_s" for name in INTERVALS),
)


def _export_row(incident: Incident) -> dict[str, Any]:
    data = incident.model_dump(mode="json")
    row = {k: data.get(k) for k in EXPORT_COLUMNS if not k.endswith("_s")}
    for name, (start, end) in INTERVALS.items():
        a, b = getattr(incident, start), getattr(incident, end)
        row[f"{name}_s"] = round((b - a).total_seconds(), 3) if a is not None and b is not None else None
    return row


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _feature(incident: Incident, steps: list[StepRecord] | None = None) -> dict[str, Any]:
    properties = _export_row(incident)
    if steps is not None:
        properties["steps"] = [s.model_dump(mode="json") for s in steps]
    geometry = None
    if incident.lon is not None and incident.lat is not None:
        geometry = {"type": "Point", "coordinates": [incident.lon, incident.lat]}
    return {"type": "Feature", "id": incident.id, "geometry": geometry, "properties": properties}


@router.get(
    "/incidents/{incident_id}/export.{fmt}",
    dependencies=[READ],
    summary="One incident and its stages as GeoJSON or CSV",
    response_class=Response,
)
async def export_incident(dispatch: DispatchDep, incident_id: IncidentId, fmt: Literal["geojson", "csv"]) -> Response:
    """The incident with every stage time and interval (CSV: one row; GeoJSON: a Feature with its steps too)."""
    incident = await dispatch.get(incident_id)
    if fmt == "csv":
        return Response(_csv([_export_row(incident)]), media_type="text/csv; charset=utf-8")
    return _geojson(_feature(incident, await dispatch.history(incident_id)))


def _geojson(doc: dict[str, Any]) -> Response:
    return Response(orjson.dumps(doc), media_type="application/geo+json")


@router.get(
    "/incidents/export.{fmt}",
    dependencies=[READ],
    summary="Incidents opened in a period as GeoJSON or CSV",
    response_class=Response,
)
async def export_incidents(
    dispatch: DispatchDep,
    fmt: Literal["geojson", "csv"],
    since: datetime | None = None,
    until: datetime | None = None,
    town: str | None = Query(None, max_length=64, pattern=_FILTER),
    type: str | None = Query(None, max_length=64, pattern=_FILTER),
    limit: int = Query(10_000, ge=1, le=100_000),
) -> Response:
    """For other agencies and analysis: one row (CSV) or Feature (GeoJSON) an incident, with stage intervals."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=30)
    items, _ = await dispatch.list(since=since, until=until, town=town, type=type, limit=limit)
    if fmt == "csv":
        return Response(_csv([_export_row(i) for i in items]), media_type="text/csv; charset=utf-8")
    return _geojson({"type": "FeatureCollection", "features": [_feature(i) for i in items]})


# --- incidents -----------------------------------------------------------------------------------------------------


@router.post("/incidents", response_model=Opened, status_code=201, summary="Open an incident (call or report)")
async def open_incident(body: IncidentDraft, dispatch: DispatchDep, response: Response, principal: Opener) -> Opened:
    """Open an incident from a call or a report: tagged, triaged (department matters diverted at once), with the
    open incidents it may duplicate. A responder's incident is always a report; alerts open their own."""
    if body.origin not in ("call", "report") or body.alert_id is not None:
        raise InvalidInput("origin must be call or report here; alerts open incidents themselves")
    if principal.role is Role.RESPONDER:
        body = body.model_copy(update={"origin": "report"})
    opened = await dispatch.open(body, actor=_actor(principal))
    response.headers["Location"] = f"{router.prefix}/incidents/{opened.incident.id}"
    return Opened(incident=opened.incident, proposals=[_proposal(p) for p in opened.proposals])


@router.get("/incidents", response_model=IncidentPage, dependencies=[READ], summary="List incidents")
async def list_incidents(
    dispatch: DispatchDep,
    stage: Annotated[list[Stage] | None, Query(description="Any of these stages (repeat the parameter).")] = None,
    open_only: Annotated[bool, Query(alias="open", description="Only incidents still being handled.")] = False,
    town: str | None = Query(None, max_length=64, pattern=_FILTER),
    type: str | None = Query(None, max_length=64, pattern=_FILTER),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=100_000_000),
) -> IncidentPage:
    """One page of incidents, newest opened first, with the total that match."""
    stages = set(stage or [])
    if open_only:
        stages = (stages & OPEN_STAGES) if stages else set(OPEN_STAGES)
    items, total = await dispatch.list(
        stages=stages or None, town=town, type=type, since=since, until=until, limit=limit, offset=offset
    )
    return IncidentPage(items=items, total=total, limit=limit, offset=offset)


async def _detail(dispatch: DispatchDep, incident_id: str) -> IncidentDetail:
    incident = await dispatch.get(incident_id)
    now = datetime.now(UTC)
    timers = [
        TimerOut(
            interval=t.interval,
            limit_s=t.limit_s,
            started_at=t.started_at,
            due_at=t.due_at,
            ended_at=t.ended_at,
            elapsed_s=round(t.elapsed_s(now), 3),
            breached=t.breached(now),
        )
        for t in dispatch.timers(incident)
    ]
    return IncidentDetail(
        incident=incident,
        timers=timers,
        history=await dispatch.history(incident_id),
        assignments=await dispatch.assignments(incident_id),
    )


@router.get("/incidents/{incident_id}", response_model=IncidentDetail, dependencies=[READ], summary="Get an incident")
async def get_incident(dispatch: DispatchDep, incident_id: IncidentId) -> IncidentDetail:
    """An incident with its SLA timers, every step (actor, time, evidence) and every assignment."""
    return await _detail(dispatch, incident_id)


@router.post("/incidents/{incident_id}/actions", response_model=Incident, summary="Act on an incident")
async def act(body: StepIn, dispatch: DispatchDep, incident_id: IncidentId, principal: Actor) -> Incident:
    """Take one lifecycle action (409 with the allowed actions when it is not allowed now; 409 with the unit's
    current assignment when another dispatcher sent it first)."""
    return await dispatch.act(incident_id, body, actor=_actor(principal))


@router.get(
    "/incidents/{incident_id}/recommendation",
    response_model=list[RankedOut],
    dependencies=[READ],
    summary="Ranked responders for an incident",
)
async def recommend(
    dispatch: DispatchDep, incident_id: IncidentId, routes: int = Query(3, ge=0, le=20)
) -> list[Ranked]:
    """One list across police units, department crews and community responders, by road time: the eligible ones
    first (with ETA and route), then the others with their reasons."""
    return await dispatch.recommend(incident_id, routes=routes)


@router.post("/incidents/{incident_id}/dispatch", response_model=Incident, summary="Dispatch the best responder")
async def dispatch_best(dispatch: DispatchDep, incident_id: IncidentId, principal: Actor) -> Incident:
    """Dispatch the first eligible responder of the recommendation in one call."""
    return await dispatch.dispatch_best(incident_id, actor=_actor(principal))


@router.post("/incidents/{incident_id}/task-link", response_model=TaskLink, summary="A community responder's task link")
async def task_link(
    dispatch: DispatchDep,
    incident_id: IncidentId,
    _: Actor,
    responder_id: str = Query(pattern=RESPONDER_ID_PATTERN),
) -> TaskLink:
    """A signed, expiring token letting a community responder accept, arrive and report the outcome."""
    await dispatch.get(incident_id)
    await dispatch.responder(responder_id)
    return TaskLink(token=dispatch.task_link(incident_id, responder_id), path=f"{tasks_router.prefix}/{{action}}")


@router.post(
    "/incidents/{incident_id}/tasks",
    response_model=TaskSentOut,
    status_code=202,
    summary="Send a responder the incident as a task",
)
async def offer_task(body: TaskOffer, dispatch: DispatchDep, incident_id: IncidentId, principal: Actor) -> TaskSent:
    """Queue a task message for the responder's contact subscription (webhook, chat group, e-mail, MQTT) with a
    signed, expiring link to accept (which dispatches it), arrive and report the outcome; the offer is a step of the
    incident's history. 409 `dispatch.responder_no_contact` when the responder has no contact, 409
    `dispatch.invalid_transition` when the incident can no longer be dispatched. A responder dispatched directly gets
    its task (arrive, report) without this call."""
    return await dispatch.offer_task(incident_id, body.responder_id, actor=_actor(principal))


@task_page_router.get("/task")
async def task_page() -> HTMLResponse:
    """The page a task link opens (`/task#<token>`); the token never reaches the server in the URL."""
    return HTMLResponse(TASK_PAGE, headers=TASK_PAGE_HEADERS)


@tasks_router.post("/view", response_model=TaskView, summary="What a task link shows")
async def view_task(body: TaskToken, dispatch: DispatchDep) -> TaskView:
    """The incident as far as the task needs, and what the link allows (no API key: the token is the credential;
    403 when it is forged or expired)."""
    return await dispatch.task_view(body.token)


@tasks_router.post("/{action}", response_model=Incident, summary="Answer a task through its link")
async def answer_task(
    body: TaskAnswer, dispatch: DispatchDep, action: Literal["accept", "arrive", "report"]
) -> Incident:
    """What a community responder's link does (no API key: the signed token is the credential; 403 when it is
    forged, expired or does not allow this action)."""
    return await dispatch.act_by_link(body.token, action, outcome=body.outcome)


# --- KPIs ----------------------------------------------------------------------------------------------------------


@router.get("/kpis", response_model=Kpis, dependencies=[READ], summary="Stage KPIs")
async def kpis(
    dispatch: DispatchDep,
    since: datetime | None = None,
    until: datetime | None = None,
    group: Literal["town", "station", "type", "priority", "department", "unit_id", "route", "origin"] = "town",
) -> Kpis:
    """Count, median and 90th percentile of every stage interval, per group, over incidents opened in [since,
    until) (default: the last 7 days)."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=7)
    found = await dispatch.kpis(since=since, until=until, group=group)
    groups = [
        KpiGroup(
            group=None if key is None else str(key),
            intervals={n: KpiOut(count=s.count, median_s=s.median_s, p90_s=s.p90_s) for n, s in by.items()},
        )
        for key, by in sorted(found.items(), key=lambda kv: str(kv[0]))
    ]
    return Kpis(since=since, until=until, group_by=group, groups=groups)


# --- responders ----------------------------------------------------------------------------------------------------


@router.get("/responders", response_model=list[Responder], dependencies=[READ], summary="List responders")
async def list_responders(dispatch: DispatchDep) -> list[Responder]:
    """Every registered responder with its live status and last position."""
    return await dispatch.responders()


@router.post(
    "/responders/import",
    response_model=ImportReport,
    dependencies=[require(Role.OPERATOR)],
    openapi_extra=import_body(RESPONDER_FORMAT.columns, "responder", attributes=False),
    summary="Bulk import responders (CSV or GeoJSON)",
)
async def import_responders(
    request: Request, dispatch: DispatchDep, mode: ImportMode = ImportMode.VALID_ONLY
) -> ImportReport:
    """Create or update responders with line-numbered errors; `all_or_nothing` writes nothing (422) when any row is
    bad. Live status and position are kept for responders already registered."""
    content_type, charset, body = await upload(request, ResponderUploadMissing)
    locale = request_locale(request)
    if content_type in CSV_TYPES:
        text = decode_csv(body, charset, error=RESPONDER_FORMAT.encoding)
        rows, issues = parse_csv(RESPONDER_FORMAT, text, locale)
    elif content_type in GEOJSON_TYPES:
        rows, issues = parse_geojson(RESPONDER_FORMAT, body, locale)
    else:
        raise UnsupportedMediaType(got=content_type or "(none)", accepted=", ".join((*CSV_TYPES, *GEOJSON_TYPES)))
    report = await dispatch.import_responders(rows, issues, mode=mode)
    if not report.applied:
        raise ResponderImportRejected(report)
    return report


@router.get("/responders/{responder_id}", response_model=Responder, dependencies=[READ], summary="Get a responder")
async def get_responder(dispatch: DispatchDep, responder_id: ResponderId) -> Responder:
    """One responder with its live status and last position."""
    return await dispatch.responder(responder_id)


@router.post("/responders/{responder_id}/position", status_code=204, summary="Report a responder's position")
async def report_position(body: Position, dispatch: DispatchDep, responder_id: ResponderId, _: Mover) -> Response:
    """Take a position fix (422 `dispatch.bad_position` when off the map, far off the roads, stale or out of
    order)."""
    await dispatch.report_position(responder_id, body.lon, body.lat, fix_at=body.fix_at, heading=body.heading)
    return Response(status_code=204)


@router.post("/responders/{responder_id}/status", response_model=Responder, summary="Set a responder's status")
async def set_status(body: StatusIn, dispatch: DispatchDep, responder_id: ResponderId, principal: Mover) -> Responder:
    """Out of service, or available again (statuses tied to an incident move with the incident's steps)."""
    return await dispatch.set_status(responder_id, ResponderStatus(body.status), actor=_actor(principal))
