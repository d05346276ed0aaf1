"""Rule kind `geofence`: an object enters, exits or dwells in a zone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import shapely
from pydantic import Field, field_validator, model_validator
from shapely.geometry import Polygon

from safecity.warning.handlers import MAX_TRIGGER_IDS, EventView, Handler, Hit, RuleState, hit, part_of, ref
from safecity.warning.model import Area
from safecity.warning.rules import EventNames, RuleBase, RuleKind, When, Window, _Model

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

KEY = "geofence"


class Zone(_Model):
    """A named polygon, ring of (lon, lat) pairs."""

    name: str
    polygon: list[tuple[float, float]] = Field(min_length=3)

    @field_validator("polygon")
    @classmethod
    def _coords(cls, value: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for lon, lat in value:
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(f"coordinate ({lon}, {lat}) is not (lon, lat) in WGS84")
        polygon = shapely.Polygon([*value, value[0]])
        if not shapely.is_valid(polygon) or polygon.area <= 0:
            reason = shapely.is_valid_reason(polygon) if not shapely.is_valid(polygon) else "it has no area"
            raise ValueError(f"the zone is not a simple polygon ({reason}): list its corners in order, as (lon, lat)")
        return value


class GeofenceRule(RuleBase):
    """Fires when an object enters, exits or dwells in a zone (inside = in the polygon and `when` holds)."""

    kind: Literal["geofence"]
    events: EventNames
    when: When | None = None
    zone: Zone
    trigger: Literal["enter", "exit", "dwell"]
    dwell: Window | None = None

    @model_validator(mode="after")
    def _dwell(self) -> GeofenceRule:
        if self.trigger == "dwell" and self.dwell is None:
            raise ValueError("windows must be bounded: trigger 'dwell' needs `dwell`")
        return self


@dataclass(eq=False)
class GeofenceState(RuleState):
    """Per key (object): whether it is inside, since when, its events, and whether its dwell fired."""


class GeofenceHandler(Handler[GeofenceRule, GeofenceState]):
    """Tracks each object inside or outside the zone; a dwell arms a timer."""

    def __init__(self, rule: GeofenceRule, engine: Engine, state: GeofenceState) -> None:
        super().__init__(rule, engine, state)
        self.match = self.matcher(rule.events, rule.when)
        ring = list(rule.zone.polygon)
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        self.ring = ring
        self.polygon = Polygon(ring)
        shapely.prepare(self.polygon)
        self.area = Area(description=rule.zone.name, polygon=[(float(x), float(y)) for x, y in ring])

    def names(self) -> set[str]:
        return set(self.rule.events)

    def on_event(self, ev: EventView) -> list[Hit]:
        if ev.name not in self.match.events or ev.lon is None or ev.lat is None:
            return []
        inside = bool(shapely.contains_xy(self.polygon, ev.lon, ev.lat)) and self.match(ev)
        part = part_of(self.rule, ev)
        parts = self.state.parts
        st = parts.get(part)
        if st is None:
            if not inside:
                return []
            st = parts.touch(part, lambda: {"inside": False})
        was = st["inside"]
        st["inside"] = inside
        trigger = self.rule.trigger
        if inside and not was:
            st.update(since=ev.t, ids=[ref(ev)], fired=False, tags=ev.tags, lon=ev.lon, lat=ev.lat)
            if trigger == "enter":
                return [hit(part, [ref(ev)], ev)]
            if trigger == "dwell":
                assert self.rule.dwell is not None
                self.engine.arm(self, part, ev.t + self.rule.dwell)
            return []
        if was and not inside:
            return [hit(part, [ref(ev)], ev)] if trigger == "exit" else []
        if inside and trigger == "dwell" and not st["fired"]:
            assert self.rule.dwell is not None
            st["ids"] = [*st["ids"][-(MAX_TRIGGER_IDS - 1) :], ref(ev)]
            if ev.t - st["since"] >= self.rule.dwell:
                st["fired"] = True
                return [hit(part, st["ids"], ev)]
        return []

    def on_due(self, part: str, deadline: float) -> list[Hit]:
        st = self.state.parts.get(part)
        if st is None or not st["inside"] or st["fired"]:
            return []
        assert self.rule.dwell is not None
        if st["since"] + self.rule.dwell != deadline:
            return []
        st["fired"] = True
        return [Hit(part, st["ids"], deadline, st["tags"], st["lon"], st["lat"], None)]


KIND = RuleKind(KEY, GeofenceRule, GeofenceHandler, GeofenceState)
