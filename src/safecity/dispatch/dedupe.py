"""Duplicate incidents: a new incident near an open one, soon after it and of the same type, is proposed for merge
(pure).

Ten callers reporting one fire, or a smoke alert and a call about the same building, should be one incident. The
window (distance, time, type) is a setting; the operator confirms a proposal unless the type is set to merge
automatically.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from safecity.geo.road.graph import haversine_m
from safecity.kernel.dispatch_settings import DedupeSettings


@dataclass(frozen=True, slots=True)
class Facts:
    """What duplicate detection looks at in an incident."""

    id: str
    type: str
    opened_at: datetime
    point: tuple[float, float] | None
    building: str | None = None


@dataclass(frozen=True, slots=True)
class MergeProposal:
    """An open incident the new one may duplicate: how far apart, how much later, and whether to merge at once."""

    into: str
    distance_m: float | None
    after_s: float
    automatic: bool


def merge_proposals(new: Facts, open_incidents: Iterable[Facts], settings: DedupeSettings) -> list[MergeProposal]:
    """Open incidents `new` may duplicate, nearest first (then earliest); empty when it stands alone."""
    found: list[MergeProposal] = []
    for other in open_incidents:
        if other.id == new.id or other.type != new.type:
            continue
        after_s = (new.opened_at - other.opened_at).total_seconds()
        if not 0 <= after_s <= settings.window_s:
            continue
        distance: float | None = None
        if new.point is not None and other.point is not None:
            distance = float(haversine_m(new.point[0], new.point[1], other.point[0], other.point[1]))
        same_building = settings.same_building and new.building is not None and new.building == other.building
        if not same_building and (distance is None or distance > settings.distance_m):
            continue
        found.append(MergeProposal(other.id, distance, after_s, automatic=new.type in settings.auto_merge_types))
    found.sort(key=lambda p: (p.distance_m if p.distance_m is not None else 0.0, p.after_s))
    return found
