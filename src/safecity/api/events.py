"""Read tagged events and dead letters."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field

from safecity.api.auth import Principal, require
from safecity.api.deps import DeadLettersDep, EventsDep
from safecity.kernel import clock
from safecity.kernel.errors import InvalidInput, NotFound
from safecity.sensing.model import DeadLetterReason, EventKind
from safecity.sharing.principal import Role

router = APIRouter(prefix="/api/v1", tags=["events"])

READERS = (Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER)
# Ids of devices and places are printable ASCII (they appear in MQTT topics); reject anything else at the edge.
IdParam = Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class EventOut(BaseModel):
    """A stored, tagged event."""

    id: str
    key: str
    kind: str
    device_id: str
    message_id: str | None
    occurred_at: datetime
    received_at: datetime
    stored_at: datetime
    district: str | None = None
    town: str | None
    community: str | None
    building: str | None
    device_kind: str | None
    lon: float | None
    lat: float | None
    value: float | None
    state: str | None
    data: dict[str, Any]
    pseudonyms: dict[str, str] = Field(description="Personal fields as keyed HMACs; never the clear value.")
    source: str
    tier: str
    correlation_id: str
    hops: dict[str, Any]


class EventPage(BaseModel):
    """A page of events, newest first; pass `next_after` as `after_id` for the next page."""

    items: list[EventOut]
    next_after: str | None


class DeadLetterOut(BaseModel):
    """A refused input with its reason."""

    id: str
    received_at: datetime
    reason: str
    detail: str
    source: str
    topic: str | None
    device_id: str | None
    kind: str | None
    raw_size: int
    raw_base64: str = Field(description="Raw bytes (cut at the configured cap), base64.")


class DeadLetterPage(BaseModel):
    """A page of dead letters, newest first."""

    items: list[DeadLetterOut]
    next_after: str | None
    counts: dict[str, int] = Field(description="All dead letters by reason.")


@router.get("/events", response_model=EventPage, summary="List stored events")
async def list_events(
    events: EventsDep,
    _: Annotated[Principal, require(*READERS)],
    kind: EventKind | None = None,
    device_id: IdParam = None,
    district: IdParam = None,
    town: IdParam = None,
    community: IdParam = None,
    building: IdParam = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[str | None, Query(max_length=26, pattern=r"^[0-9A-Za-z]+$")] = None,
) -> EventPage:
    """Filter by kind, device or place and time; keyset pagination by id."""
    rows = await events.list(
        kind=kind.value if kind else None,
        device_id=device_id,
        district=district,
        town=town,
        community=community,
        building=building,
        since=since,
        until=until,
        limit=limit,
        after_id=after_id,
    )
    items = [EventOut.model_validate(r) for r in rows]
    return EventPage(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get("/events/counts", response_model=dict[str, int], summary="Stored events by kind")
async def event_counts(events: EventsDep, _: Annotated[Principal, require(*READERS)]) -> dict[str, int]:
    """Counts of stored events per kind."""
    return await events.count_by_kind()


class HeatCell(BaseModel):
    """One grid cell and the events in it."""

    west: float
    south: float
    count: int


class Heat(BaseModel):
    """Events with a position in [since, until) counted on a grid of `cell_deg` degrees (busiest cells first)."""

    since: datetime
    until: datetime
    cell_deg: float
    kind: EventKind | None
    total: int
    cells: list[HeatCell]


# Counts per cell carry no personal data: every role that reads incidents may see them (raw events need READERS).
HEAT_READERS = (*READERS, Role.READER)
HEAT_MAX_DAYS = 31


@router.get("/events/heat", response_model=Heat, dependencies=[require(*HEAT_READERS)], summary="Event heat map")
async def heat(
    events: EventsDep,
    since: Annotated[AwareDatetime | None, Query(description="Start (aware); default: until - 1 h.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="End (with a zone); default: now.")] = None,
    cell_deg: Annotated[float, Query(ge=0.0005, le=1.0, allow_inf_nan=False, description="Cell, degrees.")] = 0.005,
    kind: EventKind | None = None,
) -> Heat:
    """Events counted per grid cell on the server (the map's heat layer), at most 20,000 cells, busiest first."""
    until = until or clock.now()
    since = since or until - timedelta(hours=1)
    if since >= until or until - since > timedelta(days=HEAT_MAX_DAYS):
        raise InvalidInput(f"since must be before until, at most {HEAT_MAX_DAYS} days apart")
    found = await events.heat(since=since, until=until, cell_deg=cell_deg, kind=str(kind) if kind else None)
    cells = [HeatCell(west=round(w, 7), south=round(s, 7), count=n) for w, s, n in found]
    return Heat(since=since, until=until, cell_deg=cell_deg, kind=kind, total=sum(c.count for c in cells), cells=cells)


@router.get("/events/{event_id}", response_model=EventOut, summary="One stored event")
async def get_event(events: EventsDep, event_id: str, _: Annotated[Principal, require(*READERS)]) -> EventOut:
    """Return one event by id."""
    row = await events.get(event_id)
    if row is None:
        raise NotFound(what="event", id=event_id)
    return EventOut.model_validate(row)


def _dead_letter(row: dict[str, Any]) -> DeadLetterOut:
    return DeadLetterOut(
        **{
            k: row[k]
            for k in ("id", "received_at", "reason", "detail", "source", "topic", "device_id", "kind", "raw_size")
        },
        raw_base64=base64.b64encode(row["raw"]).decode(),
    )


@router.get("/dead-letters", response_model=DeadLetterPage, summary="List dead letters")
async def list_dead_letters(
    dead_letters: DeadLettersDep,
    _: Annotated[Principal, require(Role.OPERATOR)],
    reason: DeadLetterReason | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[str | None, Query(max_length=26, pattern=r"^[0-9A-Za-z]+$")] = None,
) -> DeadLetterPage:
    """Refused inputs with their reasons and raw bytes, newest first."""
    rows = await dead_letters.list(reason=reason.value if reason else None, since=since, limit=limit, after_id=after_id)
    items = [_dead_letter(r) for r in rows]
    counts = await dead_letters.count_by_reason()
    return DeadLetterPage(items=items, next_after=items[-1].id if len(items) == limit else None, counts=counts)


@router.get("/dead-letters/{dead_letter_id}", response_model=DeadLetterOut, summary="One dead letter")
async def get_dead_letter(
    dead_letters: DeadLettersDep, dead_letter_id: str, _: Annotated[Principal, require(Role.OPERATOR)]
) -> DeadLetterOut:
    """Return one dead letter by id."""
    row = await dead_letters.get(dead_letter_id)
    if row is None:
        raise NotFound(what="dead letter", id=dead_letter_id)
    return _dead_letter(row)
