"""Subscriptions and their filters: which alerts go to whom, by area, category, severity and place (pure logic)."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from shapely.geometry import Point, Polygon

from safecity.warning.model import AlertRaised, Area, Category, Severity

# `Channel` (the enum of built-in channels) lives in the channel registry; re-exported here where callers import it.
from safecity.warning.notify.channels import Channel as Channel  # noqa: PLC0414 (an explicit re-export)
from safecity.warning.notify.channels import ChannelKey, component

# CAP severities, weakest first ("Unknown" ranks lowest: a min-severity filter never lets it through unless asked).
SEVERITY_RANK: dict[Severity, int] = {
    Severity.UNKNOWN: 0,
    Severity.MINOR: 1,
    Severity.MODERATE: 2,
    Severity.SEVERE: 3,
    Severity.EXTREME: 4,
}

# Metres per degree of latitude; longitude shrinks by cos(lat). Good to well under 1% over a district.
_M_PER_DEG = 111_320.0


class Locale(StrEnum):
    """Languages of chat and e-mail messages."""

    ZH = "zh-CN"
    EN = "en"


LonLat = tuple[Annotated[float, Field(ge=-180, le=180)], Annotated[float, Field(ge=-90, le=90)]]


class CircleFilter(BaseModel):
    """A circle: centre (lon, lat) and radius in metres."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    radius_m: float = Field(gt=0, le=200_000)


class AreaFilter(BaseModel):
    """Where alerts must touch: a closed polygon ring of (lon, lat) or a circle (exactly one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    polygon: list[LonLat] | None = Field(default=None, min_length=4, max_length=2000)
    circle: CircleFilter | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> AreaFilter:
        if (self.polygon is None) == (self.circle is None):
            raise ValueError("give exactly one of polygon or circle")
        if self.polygon is not None:
            if tuple(self.polygon[0]) != tuple(self.polygon[-1]):
                raise ValueError("polygon ring must be closed (first point == last point)")
            if not Polygon(self.polygon).is_valid:
                raise ValueError("polygon is not valid (self-intersecting?)")
        return self


class SubscriptionFilter(BaseModel):
    """Which alerts a subscription receives; every given criterion must hold, an empty one means 'any'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    area: AreaFilter | None = None
    categories: list[Category] = Field(default_factory=list, max_length=20)
    min_severity: Severity = Severity.UNKNOWN
    towns: list[str] = Field(default_factory=list, max_length=500)
    communities: list[str] = Field(default_factory=list, max_length=2000)
    tasks_only: bool = Field(
        False,
        description="Receive no alerts, only the task messages of the responders whose `contact` this subscription is.",
    )


class Subscription(BaseModel):
    """A stored subscription (the secret stays inside the service; the API never returns it)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    channel: ChannelKey
    target: str
    secret: str | None = None
    filter: SubscriptionFilter
    locale: Locale = Locale.ZH
    escalate_after_s: float | None = None
    escalate_to: str | None = None
    enabled: bool = True
    created_at: datetime

    @field_validator("escalate_after_s")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("escalate_after_s must be positive")
        return value


def _to_metres(lon: float, lat: float, lon0: float, lat0: float) -> tuple[float, float]:
    # Local equirectangular projection around (lon0, lat0): exact enough for district-sized areas.
    return ((lon - lon0) * _M_PER_DEG * math.cos(math.radians(lat0)), (lat - lat0) * _M_PER_DEG)


def _polygon_near_circle(ring: list[tuple[float, float]], lon0: float, lat0: float, radius_m: float) -> bool:
    poly = Polygon([_to_metres(x, y, lon0, lat0) for x, y in ring])
    return bool(poly.distance(Point(0.0, 0.0)) <= radius_m)


def _circles_touch(a: CircleFilter, lon: float, lat: float, radius_m: float) -> bool:
    dx, dy = _to_metres(lon, lat, a.lon, a.lat)
    return math.hypot(dx, dy) <= a.radius_m + radius_m


def area_matches(want: AreaFilter, area: Area | None) -> bool:
    """Return whether an alert's area touches the filter's area (an alert without an area never does)."""
    if area is None:
        return False
    if want.circle is not None:
        c = want.circle
        if area.circle is not None:
            return _circles_touch(c, area.circle.lon, area.circle.lat, area.circle.radius_m)
        if area.polygon:
            return _polygon_near_circle(list(area.polygon), c.lon, c.lat, c.radius_m)
        return False
    assert want.polygon is not None
    ring = [(float(x), float(y)) for x, y in want.polygon]
    if area.polygon:
        return bool(Polygon(ring).intersects(Polygon(list(area.polygon))))
    if area.circle is not None:
        return _polygon_near_circle(ring, area.circle.lon, area.circle.lat, area.circle.radius_m)
    return False


def matches(flt: SubscriptionFilter, alert: AlertRaised) -> bool:
    """Return whether an alert passes a subscription filter."""
    if flt.tasks_only:
        return False
    if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[flt.min_severity]:
        return False
    if flt.categories and alert.category not in flt.categories:
        return False
    if flt.towns or flt.communities:
        in_town = alert.tags.town is not None and alert.tags.town in flt.towns
        in_community = alert.tags.community is not None and alert.tags.community in flt.communities
        if not (in_town or in_community):
            return False
    return flt.area is None or area_matches(flt.area, alert.area)


def matching(subscriptions: list[Subscription], alert: AlertRaised) -> list[Subscription]:
    """Return the enabled subscriptions whose filter the alert passes."""
    return [s for s in subscriptions if s.enabled and matches(s.filter, alert)]


class SubscriptionCreate(BaseModel):
    """A new subscription. Webhooks without a secret get a generated one, returned once."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    channel: ChannelKey
    target: str = Field(
        default="",
        max_length=2000,
        description="Webhook URL, MQTT topic prefix, or apprise URL (wecombot://, dingtalk://, feishu://, mailto://).",
    )
    secret: str | None = Field(default=None, max_length=200, description="Webhook signing secret (whsec_...).")
    filter: SubscriptionFilter = Field(default_factory=SubscriptionFilter)
    locale: Locale = Locale.ZH
    escalate_after_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    escalate_to: str | None = Field(default=None, pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$")
    enabled: bool = True


class SubscriptionPatch(BaseModel):
    """A partial change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    target: str | None = Field(default=None, max_length=2000)
    secret: str | None = Field(default=None, max_length=200)
    filter: SubscriptionFilter | None = None
    locale: Locale | None = None
    escalate_after_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    escalate_to: str | None = Field(default=None, pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$")
    enabled: bool | None = None


def masked_target(channel: str, target: str) -> str:
    """Return a target safe to show, as its channel masks it (apprise URLs: scheme only; URLs: no credentials)."""
    return component(channel).mask_target(target)
