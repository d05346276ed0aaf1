"""Road travel times from responders to an incident, for the recommender: the road engine's answer per responder,
where a responder the engine cannot route (no position, off the network, unreachable) is listed with its reason and
never blocks the others."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from safecity.dispatch.recommend import Travel
from safecity.geo.road.errors import SnapTooFar
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.service import RoadService
from safecity.kernel.errors import InvalidInput

Point = tuple[float, float]
SNAP_CACHE = 100_000  # positions whose snap distance is remembered


class TravelSource(Protocol):
    """Travel seconds (and routes for the first `routes`) from each unit to `point`."""

    async def travel(self, point: Point, units: Mapping[str, Point], *, routes: int = 3) -> dict[str, Travel]:
        """One `Travel` per unit in `units`."""
        ...


def _travel(
    net: RoadNetwork, point: Point, units: Mapping[str, Point], routes: int, snap_m: dict[Point, float]
) -> dict[str, Travel]:
    try:
        net.snap(point)
    except (SnapTooFar, InvalidInput):
        return {u: Travel(eta_s=None, unroutable="incident_off_network") for u in units}
    # One vectorised snap with no limit gives each new position's distance to the road (positions seen before are
    # remembered); the far ones are set aside here so that they never make the search refuse the others.
    new = list({p for p in units.values() if p not in snap_m})
    if new:
        if len(snap_m) > SNAP_CACHE:
            snap_m.clear()
        for p, snap in zip(new, net.snapper.snap_many(new, max_snap_m=math.inf), strict=True):
            snap_m[p] = float(snap.distance_m)
    out: dict[str, Travel] = {}
    near: dict[str, Point] = {}
    for unit, p in units.items():
        if snap_m[p] > net.snapper.max_snap_m:
            out[unit] = Travel(eta_s=None, snap_m=snap_m[p], unroutable="off_network")
        else:
            near[unit] = p
    if near:
        for rank, eta in enumerate(net.nearest_units(point, near, k=len(near))):
            route: tuple[Point, ...] = ()
            if rank < routes:
                route = tuple(net.travel_time(near[eta.unit_id], point).coordinates)
            out[eta.unit_id] = Travel(eta_s=eta.seconds, route=route, snap_m=snap_m[near[eta.unit_id]])
    for unit, p in near.items():
        out.setdefault(unit, Travel(eta_s=None, snap_m=snap_m[p], unroutable="unreachable"))
    return out


class RoadTravel:
    """Travel times from the road engine (honouring its current closures and speed factors)."""

    def __init__(self, roads: RoadService) -> None:
        self.roads = roads
        self._snap_m: dict[Point, float] = {}  # used on the road service's one worker thread only

    async def travel(self, point: Point, units: Mapping[str, Point], *, routes: int = 3) -> dict[str, Travel]:
        """One `Travel` per unit; every unit unroutable ("roads_not_loaded") when no road network is loaded."""
        if not units:
            return {}
        if not self.roads.loaded:
            return {u: Travel(eta_s=None, unroutable="roads_not_loaded") for u in units}
        return await self.roads.call(_travel, point, dict(units), routes, self._snap_m)
