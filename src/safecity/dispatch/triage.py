"""Triage (pure): which incident types are police matters and which go to a department, at what priority, needing
which capabilities. One table, from settings; an unknown type is a police matter at the default priority, so nothing
is dropped for want of a line in the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from safecity.kernel.dispatch_settings import Route, TriageSettings


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
