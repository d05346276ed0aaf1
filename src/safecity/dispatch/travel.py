"""Road travel times from responders to an incident, for the recommender: the road engine's answer per responder,
where a responder the engine cannot route (no position, off the network, unreachable) is listed with its reason and
never blocks the others."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from safecity.dispatch.recommend import Travel
from safecity.geo.road.errors import SnapTooFar
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.service import RoadService
from safecity.kernel.errors import InvalidInput

Point = tuple[float, float]


class TravelSource(Protocol):
    """Travel seconds (and routes for the first `routes`) from each unit to `point`."""

    async def travel(self, point: Point, units: Mapping[str, Point], *, routes: int = 3) -> dict[str, Travel]:
        """One `Travel` per unit in `units`."""
        ...

    async def snap(self, point: Point) -> tuple[bool, float | None]:
        """Whether `point` is on the road network, and how far it lies from its road (None when unknown)."""
        ...


def _travel(net: RoadNetwork, point: Point, units: Mapping[str, Point], routes: int) -> dict[str, Travel]:
    try:
        ranking = net.rank_units(units, point)
    except (SnapTooFar, InvalidInput):
        return {u: Travel(eta_s=None, unroutable="incident_off_network") for u in units}
    out = {
        u.unit_id: Travel(eta_s=None, snap_m=u.snap_m, unroutable=u.code.removeprefix("road."))
        for u in ranking.unroutable
    }
    for rank, eta in enumerate(ranking.ranked):
        route: tuple[Point, ...] = ()
        if rank < routes:
            route = tuple(net.travel_time(units[eta.unit_id], point).coordinates)
        out[eta.unit_id] = Travel(eta_s=eta.seconds, route=route, snap_m=eta.snap_m)
    return out


class RoadTravel:
    """Travel times from the road engine (honouring its current closures and speed factors)."""

    def __init__(self, roads: RoadService) -> None:
        self.roads = roads

    async def travel(self, point: Point, units: Mapping[str, Point], *, routes: int = 3) -> dict[str, Travel]:
        """One `Travel` per unit; every unit unroutable ("roads_not_loaded") when no road network is loaded."""
        if not units:
            return {}
        if not self.roads.loaded:
            return {u: Travel(eta_s=None, unroutable="roads_not_loaded") for u in units}
        return await self.roads.call(_travel, point, dict(units), routes)

    async def snap(self, point: Point) -> tuple[bool, float | None]:
        """One snap (no route search): off the network when too far from every road; with no road network loaded
        the point is taken as it is, its distance unknown."""
        if not self.roads.loaded:
            return True, None
        try:
            return True, float((await self.roads.snap(point)).distance_m)
        except (SnapTooFar, InvalidInput):
            return False, None
