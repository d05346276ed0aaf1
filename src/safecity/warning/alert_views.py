"""Alert read models: what the API and the CAP feed show of an alert, and the public feed's ids (no storage here).

`safecity.warning.alerts` stores alerts and runs their lifecycle; these types are what its reads return, so a
router can name them without importing the service or the store.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from datetime import datetime
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict

from safecity.kernel.errors import NotFound
from safecity.warning import cap
from safecity.warning.model import AlertState, Audience, Category, Certainty, Severity, Urgency

# Hop order along the perceive -> warn -> deliver path; latencies are reported between neighbours present.
HOP_ORDER = ("occurred", "received", "tagged", "fired", "stored", "delivered")
# Entries a page of the public CAP feed, unless the reader asks for another size.
FEED_PAGE = 100
_PUBLIC_TAG = re.compile(r"^[0-9a-f]{32}$")


class AlertNotFound(NotFound):
    """No alert has this id."""

    code = "alert.not_found"
    message_en = "Alert {id} was not found."
    message_zh = "未找到告警 {id}。"


def latencies_ms(hops: dict[str, datetime]) -> dict[str, float]:
    """Milliseconds between neighbouring hops present (`received_to_tagged`, ...) and `occurred_to_fired`."""
    present = [h for h in HOP_ORDER if h in hops]
    out = {f"{a}_to_{b}": _ms(hops[a], hops[b]) for a, b in itertools.pairwise(present)}
    if "occurred" in hops and "fired" in hops:
        out["occurred_to_fired"] = _ms(hops["occurred"], hops["fired"])
    return out


def _ms(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() * 1000.0, 3)


class AlertStep(BaseModel):
    """One lifecycle step: who moved the alert where, when, and what they said."""

    model_config = ConfigDict(frozen=True)

    id: str
    state: AlertState
    actor: str
    at: datetime
    feedback: str | None = None
    assignee: str | None = None


class AlertContributor(BaseModel):
    """A device that joined an alert, and the event of its first contribution."""

    model_config = ConfigDict(frozen=True)

    device_id: str
    event_id: str
    at: datetime


class Alert(BaseModel):
    """A stored alert with its hop times, hop latencies and lifecycle steps."""

    model_config = ConfigDict(frozen=True)

    id: str
    rule_id: str
    group_key: str
    state: AlertState
    category: Category
    severity: Severity
    urgency: Urgency
    certainty: Certainty
    headline: dict[str, str]
    description: dict[str, str]
    opens_incident: bool
    town: str | None = None
    community: str | None = None
    building: str | None = None
    area: dict[str, Any] | None = None
    trigger_event_ids: list[str]
    trigger_message_id: str | None = None
    count: int
    devices: list[str] = []
    contributors: list[AlertContributor] = []
    first_at: datetime
    last_at: datetime
    hops: dict[str, datetime]
    latency_ms: dict[str, float]
    assignee: str | None = None
    references: str | None = None
    created_at: datetime
    updated_at: datetime
    scope: Audience = Audience.RESTRICTED
    steps: list[AlertStep] = []


class AlertPage(BaseModel):
    """One page of alerts (without steps) and the total that match."""

    items: list[Alert]
    total: int
    limit: int
    offset: int


def public_id(secret: bytes, alert_id: str) -> str:
    """The alert's id in the public CAP feed: `<id>-<tag>`, the tag a keyed HMAC, so public ids cannot be guessed
    or counted through (the internal ids are time-sortable)."""
    tag = hmac.new(secret, f"cap-public:{alert_id}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{alert_id}-{tag}"


def alert_of_public_id(secret: bytes, value: str) -> str | None:
    """The alert id a public id names, or None when its tag is not ours (compared in constant time)."""
    alert_id, _, tag = value.partition("-")
    if not _PUBLIC_TAG.match(tag) or not hmac.compare_digest(public_id(secret, alert_id), value):
        return None
    return alert_id


class FeedPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of the public CAP feed, newest change first, and whether older / newer pages exist."""

    entries: list[tuple[Alert, cap.CapAlert]]
    has_older: bool
    has_newer: bool
