"""Warning types: CAP 1.2 vocabularies, alert lifecycle states, and the alert payloads on the bus.

An alert is raised by a rule on the event that completes its condition; repeats of the same condition (same rule,
same group key) update one alert with a counter instead of raising new ones.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec

from safecity.kernel.envelope import EventKey, Payload
from safecity.sensing.model import Tags


class Category(StrEnum):
    """CAP 1.2 `category`."""

    GEO = "Geo"
    MET = "Met"
    SAFETY = "Safety"
    SECURITY = "Security"
    RESCUE = "Rescue"
    FIRE = "Fire"
    HEALTH = "Health"
    ENV = "Env"
    TRANSPORT = "Transport"
    INFRA = "Infra"
    CBRNE = "CBRNE"
    OTHER = "Other"


class Severity(StrEnum):
    """CAP 1.2 `severity`."""

    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Urgency(StrEnum):
    """CAP 1.2 `urgency`."""

    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class Certainty(StrEnum):
    """CAP 1.2 `certainty`."""

    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


class Audience(StrEnum):
    """Who may see a rule's alerts: CAP 1.2 `scope`. Only `Public` alerts reach the public CAP feed."""

    PUBLIC = "Public"
    RESTRICTED = "Restricted"  # operations staff: police, command centre, responders
    PRIVATE = "Private"


class AlertState(StrEnum):
    """Lifecycle: new -> acknowledged -> assigned -> resolved, or cancelled from any open state."""

    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"


class Circle(msgspec.Struct, frozen=True, kw_only=True):
    """A circle: centre (lon, lat) and radius in metres."""

    lon: float
    lat: float
    radius_m: float


class Area(msgspec.Struct, frozen=True, kw_only=True):
    """Where an alert applies. Coordinates are (lon, lat) inside; CAP's `lat,lon` order is the renderer's job."""

    description: str  # a place's name (zh) or a zone's name; CAP's areaDesc of the zh-CN <info>
    polygon: list[tuple[float, float]] | None = None  # closed ring: first == last
    circle: Circle | None = None
    description_en: str | None = None  # areaDesc of the en-US <info>; None: the same as `description`


class Text(msgspec.Struct, frozen=True, kw_only=True):
    """A text in both UI languages (CAP writes one `<info>` block per language)."""

    zh: str
    en: str


class Contributor(msgspec.Struct, frozen=True, kw_only=True):
    """A device that joined an open alert, with the event of its first contribution."""

    device_id: str
    event_id: str
    at: datetime  # event time of that event


class AlertRaised(Payload, frozen=True):
    """A rule fired: a new alert (or, on `alert.updated`, the same alert with its counter moved)."""

    alert_id: str
    rule_id: str
    group_key: str
    headline: Text
    description: Text
    category: Category
    severity: Severity
    urgency: Urgency
    certainty: Certainty
    opens_incident: bool
    tags: Tags
    area: Area | None
    trigger_event_ids: list[str]
    count: int
    first_at: datetime
    last_at: datetime
    # Per-hop times of the completing event and the alert: occurred, received, tagged, fired (delivered is
    # stamped by each channel) — so perceive -> warn latency is visible on every alert.
    hops: dict[str, datetime] = msgspec.field(default_factory=dict)
    # The sender's own message id (payload `id`) of the completing event, when it had one: lets a device-side
    # system match the alert to its message (the Node-RED contract's `trigger_id`).
    trigger_message_id: str | None = None
    # Every distinct device that joined this alert so far (which detectors), first one first; the alert's `count`
    # is the number of firings, `len(contributors)` the number of devices.
    contributors: list[Contributor] = msgspec.field(default_factory=list)
    # The rule's audience (CAP scope). Restricted when absent: a message from an older node is never made public.
    scope: Audience = Audience.RESTRICTED


class AlertStateChanged(Payload, frozen=True):
    """Someone moved an alert through its lifecycle."""

    alert_id: str
    state: AlertState
    actor: str
    at: datetime
    feedback: str | None = None
    assignee: str | None = None


ALERT_RAISED: EventKey[AlertRaised] = EventKey("alert.raised", AlertRaised)
ALERT_UPDATED: EventKey[AlertRaised] = EventKey("alert.updated", AlertRaised)
ALERT_STATE_CHANGED: EventKey[AlertStateChanged] = EventKey("alert.state_changed", AlertStateChanged)
