"""Triage (pure): which incident types are police matters and which go to a department, at what priority, needing
which capabilities. One table, from settings; an unknown type is a police matter at the default priority, so nothing
is dropped for want of a line in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


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

    types: dict[str, TypeRule] = Field(default_factory=_default_types)
    default_priority: int = Field(3, ge=1, le=9)


@dataclass(frozen=True, slots=True)
class Triage:
    """The outcome for one incident."""

    route: Route
    priority: int
    needs: frozenset[str]
    department: str | None
    service_code: str | None
    known_type: bool


def triage(incident_type: str, settings: TriageSettings, *, priority: int | None = None) -> Triage:
    """Route, priority and needs of an incident type (`priority` given by an operator wins over the table's)."""
    rule = settings.types.get(incident_type)
    if rule is None:
        return Triage(Route.POLICE, priority or settings.default_priority, frozenset(), None, None, known_type=False)
    return Triage(rule.route, priority or rule.priority, rule.needs, rule.department, rule.service_code, True)
