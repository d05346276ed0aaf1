"""One ranked responder list for an incident (pure): police units, department crews and community responders by road
travel time, availability, capability and the incident's priority.

The caller computes travel times with the road engine (honouring closures and speed factors) and passes them in; this
module decides order and eligibility. Nothing here blocks on one responder: a responder the road engine could not
route is listed as unroutable with its reason, after every routable one.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


class Travels(Mapping[str, Travel]):
    """The road engine's answer for many responders, each `Travel` built only when read (a list shows a few lines of
    hundreds of responders): `etas` holds every responder's seconds, None where it could not be routed."""

    __slots__ = ("_routes", "_snap_m", "_unroutable", "etas")

    def __init__(
        self,
        etas: dict[str, float | None],
        *,
        snap_m: Mapping[str, float | None] | None = None,
        routes: Mapping[str, tuple[tuple[float, float], ...]] | None = None,
        unroutable: Mapping[str, str] | None = None,
    ) -> None:
        self.etas = etas
        self._snap_m = snap_m or {}
        self._routes = routes or {}
        self._unroutable = unroutable or {}

    @classmethod
    def of(cls, travel: Mapping[str, Travel]) -> Travels:
        """The same answers from ready-made `Travel`s."""
        if isinstance(travel, Travels):
            return travel
        return cls(
            {u: t.eta_s for u, t in travel.items()},
            snap_m={u: t.snap_m for u, t in travel.items()},
            routes={u: t.route for u, t in travel.items() if t.route},
            unroutable={u: t.unroutable for u, t in travel.items() if t.unroutable is not None},
        )

    def __getitem__(self, unit_id: str) -> Travel:
        eta = self.etas[unit_id]
        route = self._routes.get(unit_id, ())
        return Travel(eta, route, self._snap_m.get(unit_id), self._unroutable.get(unit_id))

    def __iter__(self) -> Iterator[str]:
        return iter(self.etas)

    def __len__(self) -> int:
        return len(self.etas)

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self.etas


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


def plainly_eligible(
    status: ResponderStatus, capabilities: frozenset[str], on_duty: bool, needs: frozenset[str]
) -> bool:
    """On duty, available and holding every need: no refusal applies (only the road can still rule it out)."""
    return on_duty and status is ResponderStatus.AVAILABLE and needs <= capabilities


def shortlist(
    ids: Sequence[str],
    plain: Sequence[bool],
    fix_at: Sequence[datetime | None],
    etas: Mapping[str, float | None],
    *,
    now: datetime,
    settings: RankSettings,
) -> set[str]:
    """The responders `rank` can list, so it need not see the hundreds it cannot: `rank` over them returns exactly
    what it returns over all.

    Kept: every responder that is not `plain` (plainly eligible: it may be refused, pre-empted or listed among the
    others), every unroutable one, and of the plain routable ones the `settings.limit` best by score with their ties.
    A plain one's score is its road time plus the stale penalty, never less than its road time, so the walk in road
    time order stops at the first one slower than the `limit`-th best score.
    """
    keep = {u for u, p in zip(ids, plain, strict=True) if not p or etas.get(u) is None}
    fixes = dict(zip(ids, fix_at, strict=True))
    by_eta = sorted((eta, u) for u, p in zip(ids, plain, strict=True) if p and (eta := etas.get(u)) is not None)
    limit, stale_after, penalty = settings.limit, settings.stale_after_s, settings.stale_penalty_s
    worst: list[float] = []  # the `limit` best scores so far, negated (a max-heap)
    scored: list[tuple[float, str]] = []
    for eta, u in by_eta:
        if len(worst) == limit and eta > -worst[0]:
            break
        f = fixes[u]
        stale = f is None or (now - f).total_seconds() > stale_after
        score = eta + (penalty if stale else 0.0)  # as `rank` computes it
        scored.append((score, u))
        if len(worst) < limit:
            heapq.heappush(worst, -score)
        elif score < -worst[0]:
            heapq.heapreplace(worst, -score)
    bar = -worst[0] if len(worst) == limit else float("inf")
    keep.update(u for score, u in scored if score <= bar)
    return keep


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
    The list holds at most `settings.limit` eligible responders by score, then at most `settings.limit` others (the
    nearest by road first, unroutable last), each with its reasons, so a dispatcher overriding sees the nearest.
    """
    no_position = Travel(eta_s=None, unroutable="no_position")
    eligible: list[tuple[float, str, Candidate, Travel, bool, str | None]] = []
    others: list[tuple[bool, float, str, Candidate, Travel, bool, list[str]]] = []
    stale_after = settings.stale_after_s
    for c in candidates:
        t = travel.get(c.id, no_position)
        stale = c.fix_at is None or (now - c.fix_at).total_seconds() > stale_after
        reasons = _refusals(c, needs, priority)
        if t.eta_s is None:
            reasons.append(f"unroutable_{t.unroutable or 'unknown'}")
        if reasons:
            others.append((t.eta_s is None, t.eta_s or 0.0, c.id, c, t, stale, reasons))
            continue
        preempts = c.busy_incident if c.status is not ResponderStatus.AVAILABLE else None
        score = t.eta_s + (settings.stale_penalty_s if stale else 0.0)  # type: ignore[operator]
        score += settings.preempt_penalty_s if preempts is not None else 0.0
        eligible.append((score, c.id, c, t, stale, preempts))
    eligible.sort(key=lambda e: (e[0], e[1]))
    others.sort(key=lambda o: (o[0], o[1], o[2]))
    lines = [
        Ranked(c.id, c.kind, c.status, t.eta_s, score, t.route, t.snap_m, stale, preempts, True)
        for score, _, c, t, stale, preempts in eligible[: settings.limit]
    ]
    lines += [
        Ranked(c.id, c.kind, c.status, t.eta_s, None, t.route, t.snap_m, stale, None, False, tuple(reasons))
        for _, _, _, c, t, stale, reasons in others[: settings.limit]
    ]
    return lines
