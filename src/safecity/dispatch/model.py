"""Dispatch types on the bus: incident changes (Frigate's new / update / end shape), unit assignments, responder
positions and status.

An incident's whole record lives in the store; the bus carries what changed, with the incident's state before and
after, so the map, the department diversion and the upstream tier can follow without reading the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from safecity.dispatch.lifecycle import Action, Stage
from safecity.dispatch.recommend import ResponderKind, ResponderStatus
from safecity.kernel.envelope import EventKey, Payload
from safecity.sensing.model import Tags


class IncidentState(msgspec.Struct, frozen=True, kw_only=True):
    """An incident as the live map shows it."""

    id: str
    type: str
    priority: int
    stage: Stage
    tags: Tags
    lon: float | None
    lat: float | None
    unit_id: str | None
    version: int
    opened_at: datetime
    updated_at: datetime


class IncidentChanged(Payload, frozen=True):
    """An incident opened (`new`), moved (`update`) or ended (`end`: closed, merged or cancelled)."""

    type: Literal["new", "update", "end"]
    action: Action | None  # None when it opened
    actor: str
    at: datetime
    before: IncidentState | None
    after: IncidentState


class UnitAssigned(Payload, frozen=True):
    """A responder was assigned to an incident."""

    incident_id: str
    unit_id: str
    eta_s: float | None
    actor: str
    at: datetime


class ResponderMoved(Payload, frozen=True):
    """A responder reported a position (snapped to the road network where it could be)."""

    responder_id: str
    kind: ResponderKind
    status: ResponderStatus
    lon: float
    lat: float
    heading: float | None
    fix_at: datetime
    snap_m: float | None
    incident_id: str | None


class ResponderStatusChanged(Payload, frozen=True):
    """A responder's status changed (available, dispatched, en route, on scene, out of service)."""

    responder_id: str
    kind: ResponderKind
    status: ResponderStatus
    previous: ResponderStatus
    incident_id: str | None
    actor: str
    at: datetime


class RankedUnit(msgspec.Struct, frozen=True, kw_only=True):
    """One eligible responder of a recommendation."""

    responder_id: str
    eta_s: float | None
    score_s: float | None


class RecommendationChanged(Payload, frozen=True):
    """The first eligible responders of an open, undispatched incident changed (a unit moved, changed status, or
    the incident itself changed): the dispatcher's list is stale."""

    incident_id: str
    top: list[RankedUnit]
    at: datetime


INCIDENT_CHANGED: EventKey[IncidentChanged] = EventKey("incident.changed", IncidentChanged)
UNIT_ASSIGNED: EventKey[UnitAssigned] = EventKey("incident.unit_assigned", UnitAssigned)
RESPONDER_MOVED: EventKey[ResponderMoved] = EventKey("responder.moved", ResponderMoved)
RECOMMENDATION_CHANGED: EventKey[RecommendationChanged] = EventKey(
    "incident.recommendation_changed", RecommendationChanged
)
RESPONDER_STATUS_CHANGED: EventKey[ResponderStatusChanged] = EventKey(
    "responder.status_changed", ResponderStatusChanged
)
