"""One ranked responder list for an incident (pure): police units, department crews and community responders by road
travel time, availability, capability and the incident's priority.

The caller computes travel times with the road engine (honouring closures and speed factors) and passes them in; this
module decides order and eligibility. Nothing here blocks on one responder: a responder the road engine could not
route is listed as unroutable with its reason, after every routable one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from safecity.kernel.dispatch_settings import RankSettings


class ResponderKind(StrEnum):
    """Who a responder is."""

    POLICE = "police"
    DEPARTMENT = "department"
    COMMUNITY = "community"


class ResponderStatus(StrEnum):
    """Where a responder is in its work."""

    AVAILABLE = "available"
    DISPATCHED = "dispatched"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    OUT_OF_SERVICE = "out_of_service"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A responder as the recommender sees it."""

    id: str
    kind: ResponderKind
    status: ResponderStatus
    capabilities: frozenset[str]
    fix_at: datetime | None
    on_duty: bool = True
    # The priority of the incident it is committed to now (1 = most urgent), when dispatched or en route.
    busy_priority: int | None = None
    busy_incident: str | None = None


@dataclass(frozen=True, slots=True)
class Travel:
    """The road engine's answer for one responder: seconds and route, or why it could not route it."""

    eta_s: float | None
    route: tuple[tuple[float, float], ...] = ()
    snap_m: float | None = None
    unroutable: str | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    """One line of the recommendation: eligible responders first by score, then the others with their reason."""

    id: str
    kind: ResponderKind
    status: ResponderStatus
    eta_s: float | None
    score_s: float | None
    route: tuple[tuple[float, float], ...]
    snap_m: float | None
    stale: bool
    preempts: str | None
    eligible: bool
    reasons: tuple[str, ...] = field(default=())


_PREEMPTIBLE = frozenset({ResponderStatus.DISPATCHED, ResponderStatus.EN_ROUTE})


def _refusals(c: Candidate, need: frozenset[str], priority: int) -> list[str]:
    reasons = []
    if not c.on_duty:
        reasons.append("off_duty")
    # Dispatched or en route to a less urgent incident: it may be taken from there. On scene or out of service: no.
    preemptible = c.status in _PREEMPTIBLE and c.busy_priority is not None and c.busy_priority > priority
    if c.status is not ResponderStatus.AVAILABLE and not preemptible:
        reasons.append(f"status_{c.status.value}")
    missing = need - c.capabilities
    if missing:
        reasons.append("lacks_" + "+".join(sorted(missing)))
    return reasons


def rank(
    candidates: Iterable[Candidate],
    travel: Mapping[str, Travel],
    *,
    priority: int,
    needs: frozenset[str],
    now: datetime,
    settings: RankSettings,
) -> list[Ranked]:
    """Rank responders for an incident of `priority` (1 = most urgent) needing `needs`.

    Eligible: on duty, available (or busy on an incident of lower priority: it may be taken from there, with a
    penalty), holding every needed capability, and routable. Score = travel seconds + stale and pre-emption penalties.
    """
    eligible: list[Ranked] = []
    others: list[Ranked] = []
    for c in candidates:
        t = travel.get(c.id, Travel(eta_s=None, unroutable="no_position"))
        stale = c.fix_at is None or (now - c.fix_at).total_seconds() > settings.stale_after_s
        reasons = _refusals(c, needs, priority)
        if t.eta_s is None:
            reasons.append(f"unroutable_{t.unroutable or 'unknown'}")
        preempts = c.busy_incident if c.status is not ResponderStatus.AVAILABLE and not reasons else None
        score = None
        if not reasons and t.eta_s is not None:
            score = t.eta_s + (settings.stale_penalty_s if stale else 0.0)
            score += settings.preempt_penalty_s if preempts is not None else 0.0
        line = Ranked(
            id=c.id,
            kind=c.kind,
            status=c.status,
            eta_s=t.eta_s,
            score_s=score,
            route=t.route,
            snap_m=t.snap_m,
            stale=stale,
            preempts=preempts,
            eligible=not reasons,
            reasons=tuple(reasons),
        )
        (eligible if not reasons else others).append(line)
    eligible.sort(key=lambda r: (r.score_s, r.id))
    # Ineligible ones: routable first by travel time, then unroutable, so a dispatcher overriding sees the nearest.
    others.sort(key=lambda r: (r.eta_s is None, r.eta_s or 0.0, r.id))
    return eligible[: settings.limit] + others
