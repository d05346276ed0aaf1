"""Road travel times from responders to an incident, for the recommender: the road engine's answer per responder,
where a responder the engine cannot route (no position, off the network, unreachable) is listed with its reason and
never blocks the others."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

from safecity.dispatch.recommend import Travel, Travels
from safecity.geo.road.errors import SnapTooFar
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.service import RoadService
from safecity.kernel.errors import InvalidInput

Point = tuple[float, float]


class TravelSource(Protocol):
    """Travel seconds (and routes for the first `routes`) from each unit to `point`."""

    async def travel(self, point: Point, units: Mapping[str, Point], *, routes: int = 3) -> Mapping[str, Travel]:
        """One `Travel` per unit in `units` (a `Travels` builds them only when read)."""
        ...

    async def snap(self, point: Point) -> tuple[bool, float | None]:
        """Whether a responder's reported `point` is on the road network, and how far it lies from its road (None
        when unknown)."""
        ...


def _travel(net: RoadNetwork, point: Point, units: Mapping[str, Point], routes: int) -> Travels:
    try:
        times = net.unit_seconds(units, point, routes=routes)
    except (SnapTooFar, InvalidInput):
        return Travels(dict.fromkeys(units), unroutable=dict.fromkeys(units, "incident_off_network"))
    secs = times.seconds.tolist()
    etas: dict[str, float | None] = {u: (t if t != math.inf else None) for u, t in zip(times.ids, secs, strict=True)}
    snap_m = dict(zip(times.ids, times.snap_m, strict=True))
    unroutable = {}
    for u in times.unroutable:
        etas[u.unit_id] = None
        snap_m[u.unit_id] = u.snap_m
        unroutable[u.unit_id] = u.code.removeprefix("road.")
    paths = {times.ids[i]: tuple(r.coordinates) for i, r in times.routes.items()}
    return Travels(etas, snap_m=snap_m, routes=paths, unroutable=unroutable)


class RoadTravel:
    """Travel times from the road engine (honouring its current closures and speed factors)."""

    def __init__(self, roads: RoadService) -> None:
        self.roads = roads

    async def travel(self, point: Point, units: Mapping[str, Point], *, routes: int = 3) -> Travels:
        """One `Travel` per unit; every unit unroutable ("roads_not_loaded") when no road network is loaded."""
        if not units:
            return Travels({})
        if not self.roads.loaded:
            return Travels(dict.fromkeys(units), unroutable=dict.fromkeys(units, "roads_not_loaded"))
        return await self.roads.call(_travel, point, dict(units), routes)

    async def snap(self, point: Point) -> tuple[bool, float | None]:
        """One snap (no route search): off the network when too far from every road; with no road network loaded
        the point is taken as it is, its distance unknown."""
        if not self.roads.loaded:
            return True, None
        try:
            # Snapped as a unit's position: the ranking that follows reuses the snap and its seeds.
            return True, float((await self.roads.call(RoadNetwork.snap_unit, point)).distance_m)
        except (SnapTooFar, InvalidInput):
            return False, None
