"""Settings of the dispatch slice (the `[dispatch]` section): triage table, duplicate window, ranking weights, SLA
targets. Kept in the kernel with every other section so that settings load and validate in one place.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# name -> (from stage time, to stage time). Names are the KPI names of the API and docs/dispatch.md.
INTERVALS: dict[str, tuple[str, str]] = {
    "warn": ("perceived_at", "warned_at"),
    "dispatch": ("opened_at", "dispatched_at"),
    "turnout": ("dispatched_at", "en_route_at"),
    "travel": ("dispatched_at", "on_scene_at"),
    "response": ("opened_at", "on_scene_at"),
    "on_scene": ("on_scene_at", "disposed_at"),
    "close": ("opened_at", "closed_at"),
}


class Route(StrEnum):
    """Who handles an incident type."""

    POLICE = "police"
    DEPARTMENT = "department"
    COMMUNITY = "community"


class TypeRule(BaseModel):
    """How incidents of one type are handled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: Route = Route.POLICE
    priority: int = Field(3, ge=1, le=9, description="1 = most urgent.")
    needs: frozenset[str] = Field(frozenset(), description="Capabilities a responder must have.")
    department: str | None = Field(None, description="Owning department (route department).")
    service_code: str | None = Field(None, description="Its Open311 service code (route department).")

    @model_validator(mode="after")
    def _department_has_a_service(self) -> TypeRule:
        if self.route is Route.DEPARTMENT and not (self.department and self.service_code):
            raise ValueError("a department route needs department and service_code")
        return self


def _default_types() -> dict[str, TypeRule]:
    """A district's usual table (the Jiading demo's types)."""
    water = TypeRule(route=Route.DEPARTMENT, priority=4, department="water", service_code="water.leak")
    return {
        "fire": TypeRule(priority=1, needs=frozenset({"fire"})),
        "smoke": TypeRule(priority=1, needs=frozenset()),
        "intrusion": TypeRule(priority=2, needs=frozenset({"patrol"})),
        "traffic_collision": TypeRule(priority=2, needs=frozenset({"traffic"})),
        "medical": TypeRule(priority=1, needs=frozenset({"first_aid"})),
        "crowd": TypeRule(priority=2, needs=frozenset({"patrol"})),
        "hotlist_vehicle": TypeRule(priority=2, needs=frozenset({"patrol"})),
        "dispute": TypeRule(priority=3, needs=frozenset({"patrol"})),
        "parking": TypeRule(route=Route.COMMUNITY, priority=5),
        "water_leak": water,
        "road_damage": TypeRule(
            route=Route.DEPARTMENT, priority=4, department="urban_management", service_code="road.damage"
        ),
        "noise": TypeRule(route=Route.DEPARTMENT, priority=5, department="urban_management", service_code="city.noise"),
    }


class TriageSettings(BaseModel):
    """The type table and what an unknown type gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: dict[str, TypeRule] = Field(
        default_factory=_default_types,
        description="Incident type -> route (police, department, community), priority, needed capabilities, "
        "owning department and Open311 service code (docs/dispatch.md).",
    )
    default_priority: int = Field(3, ge=1, le=9, description="Priority of a type missing from the table.")


class AreaType(StrEnum):
    """How built-up the incident's area is (on-scene targets differ)."""

    URBAN = "urban"
    RURAL = "rural"


Seconds = Annotated[float, Field(gt=0)]


class Target(BaseModel):
    """Limits in seconds for some intervals, for incidents of `priority` (None: any) in `area` (None: any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    priority: int | None = Field(None, ge=1, le=9)
    area: AreaType | None = None
    limits: dict[str, Seconds]

    @field_validator("limits")
    @classmethod
    def _known_intervals(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(INTERVALS))
        if unknown:
            raise ValueError(f"unknown interval(s) {', '.join(unknown)}; known: {', '.join(INTERVALS)}")
        return value


def _default_targets() -> list[Target]:
    return [
        Target(limits={"warn": 1.0, "dispatch": 60.0}),
        Target(area=AreaType.URBAN, limits={"response": 300.0}),
        Target(area=AreaType.RURAL, limits={"response": 600.0}),
    ]


class SlaSettings(BaseModel):
    """Targets of the loop; the most specific matching target wins per interval (priority and area > one > none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[Target] = Field(
        default_factory=_default_targets,
        description="Limits in seconds per interval (warn, dispatch, turnout, travel, response, on_scene, close), "
        "optionally for one priority and/or area; the most specific target wins per interval.",
    )
    rural_towns: frozenset[str] = Field(frozenset(), description="Town ids whose incidents use the rural targets.")

    def limits_for(self, priority: int, area: AreaType) -> dict[str, float]:
        """The limit of each interval for an incident of `priority` in `area`."""
        chosen: dict[str, tuple[int, float]] = {}
        for target in self.targets:
            if target.priority not in (None, priority) or target.area not in (None, area):
                continue
            rank = (target.priority is not None) + (target.area is not None)
            for name, limit in target.limits.items():
                if name not in chosen or rank >= chosen[name][0]:
                    chosen[name] = (rank, limit)
        return {name: limit for name, (_, limit) in chosen.items()}

    def area_of(self, town: str | None) -> AreaType:
        """Rural when the town is listed as rural, else urban."""
        return AreaType.RURAL if town is not None and town in self.rural_towns else AreaType.URBAN


class DedupeSettings(BaseModel):
    """When a new incident is proposed as a duplicate of an open one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distance_m: float = Field(200.0, gt=0, description="At most this far from the open incident (metres).")
    window_s: float = Field(900.0, gt=0, description="Opened at most this long after the open incident (seconds).")
    same_building: bool = Field(
        True, description="Incidents tagged with the same building are near whatever the distance."
    )
    auto_merge_types: frozenset[str] = Field(
        frozenset(), description="Incident types merged without asking the operator (e.g. fire alarms of one building)."
    )


class RankSettings(BaseModel):
    """How the recommender weighs what it knows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stale_after_s: float = Field(120.0, gt=0, description="A position older than this is stale (flagged, penalized).")
    stale_penalty_s: float = Field(180.0, ge=0, description="Seconds added to a stale responder's travel time.")
    preempt_penalty_s: float = Field(
        120.0, ge=0, description="Seconds added to a responder taken from an incident of lower priority."
    )
    limit: int = Field(10, ge=1, le=200, description="How many eligible responders the list holds at most.")


def _default_alert_types() -> dict[str, str]:
    """The default rule pack's incident-opening rules (`warning/rulepacks/default.yaml`)."""
    return {
        "fire.": "fire",
        "security.night_intrusion": "intrusion",
        "security.hotlist_vehicle": "hotlist_vehicle",
        "safety.crowd_": "crowd",
        "traffic.fire_lane_parking": "parking",
    }


def incident_type_of(rule_id: str, alert_types: dict[str, str]) -> str:
    """The incident type an alert of `rule_id` opens: its exact entry, else the longest matching prefix, else the
    rule id itself (triage then treats it as an unknown type: a police matter at the default priority)."""
    if rule_id in alert_types:
        return alert_types[rule_id]
    prefixes = [p for p in alert_types if p.endswith((".", "_")) and rule_id.startswith(p)]
    return alert_types[max(prefixes, key=len)] if prefixes else rule_id


class DispatchSettings(BaseModel):
    """The dispatch slice."""

    model_config = ConfigDict(extra="forbid")

    triage: TriageSettings = Field(default_factory=TriageSettings)
    dedupe: DedupeSettings = Field(default_factory=DedupeSettings)
    rank: RankSettings = Field(default_factory=RankSettings)
    sla: SlaSettings = Field(default_factory=SlaSettings)
    alert_types: dict[str, str] = Field(
        default_factory=_default_alert_types,
        description="Rule id (or a prefix ending in '.' or '_') -> the incident type its alerts open "
        "(rules with `opens_incident`); unmatched: the rule id.",
    )
    sla_check_s: float = Field(5.0, gt=0, le=600, description="How often running SLA timers are checked (seconds).")
    task_link_ttl_s: float = Field(
        86_400.0, gt=0, le=30 * 86_400, description="How long a community responder's task link stays valid."
    )
    task_link_base_url: str = Field(
        "http://127.0.0.1:8700",
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The address responders open task links at (this node's public URL); a link reads "
        "`<base>/task#<token>`.",
    )
