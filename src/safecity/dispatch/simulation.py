"""A replayed call stream on our own district: the real calls' arrival times, types and priorities, placed on our road
network, served by simulated units that the recommender dispatches and that drive the road network.

What is ours and what is the record's: the unit chosen (nearest available by road time, the recommender's rule) and
its travel time (our road network) are ours; the call-processing time (received -> dispatch), the turnout time
(dispatch -> en route) and the time a unit stays busy after arriving (on scene -> available) are the real call's, so
the two sets of KPIs differ only by what the platform decides. One unit is sent per call (the record's first unit).
A call that finds no unit free waits for the first one to become free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from safecity.dispatch.kpi import StageTimes, Summary, stage_kpis
from safecity.dispatch.replay import Call
from safecity.geo.road.network import RoadNetwork

DEFAULT_ON_SCENE_S = 1200.0  # a call with no "available" time keeps its unit 20 minutes


@dataclass(frozen=True, slots=True)
class SimulatedReplay:
    """Stage KPIs of the real calls and of the same calls served on our network, and what the run did."""

    real: dict[str, Summary]
    simulated: dict[str, Summary]
    calls: int
    units: int
    waited: int  # calls that found no unit free at dispatch time


def _seconds(a: datetime | None, b: datetime | None, default: float = 0.0) -> float:
    if a is None or b is None:
        return default
    return max(0.0, (b - a).total_seconds())


def simulate(
    calls: Sequence[Call],
    net: RoadNetwork,
    *,
    units: int,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> SimulatedReplay:
    """Serve `calls` (sorted by received time here) with `units` simulated units on `net`."""
    if units < 1:
        raise ValueError("units must be at least 1")
    rng = np.random.default_rng(seed)
    graph = net.graph
    nodes = rng.choice(graph.n_nodes, size=len(calls) + units, replace=True)
    where = [(float(graph.lon[n]), float(graph.lat[n])) for n in nodes]
    position = {f"U{i:03d}": where[len(calls) + i] for i in range(units)}
    free_at: dict[str, datetime] = {}
    ordered = sorted((c for c in calls if c.times.opened_at is not None), key=lambda c: c.times.opened_at)  # type: ignore[arg-type, return-value]
    records: list[tuple[str, StageTimes]] = []
    waited = 0
    for i, call in enumerate(ordered):
        real = call.times
        received = real.opened_at
        assert received is not None
        ready = received + timedelta(seconds=_seconds(received, real.dispatched_at))
        free = {u: p for u, p in position.items() if free_at.get(u, ready) <= ready}
        if not free:
            waited += 1
            ready = min(free_at.values())
            free = {u: p for u, p in position.items() if free_at[u] <= ready}
        point = where[i]
        best = net.nearest_units(point, free, k=1)
        if not best:  # every free unit is cut off from this point: the call is not served in the simulation
            continue
        unit, travel_s = best[0].unit_id, best[0].seconds
        turnout_s = _seconds(real.dispatched_at, real.en_route_at)
        en_route = ready + timedelta(seconds=turnout_s)
        on_scene = en_route + timedelta(seconds=travel_s)
        closed = on_scene + timedelta(seconds=_seconds(real.on_scene_at, real.closed_at, DEFAULT_ON_SCENE_S))
        free_at[unit] = closed
        position[unit] = point
        records.append(
            (
                "simulated",
                StageTimes(
                    opened_at=received,
                    dispatched_at=ready,
                    en_route_at=en_route,
                    on_scene_at=on_scene,
                    closed_at=closed,
                ),
            )
        )
        if progress is not None:
            progress(1)
    real_kpis = stage_kpis(("real", c.times) for c in ordered).get("real", {})
    simulated = stage_kpis(records).get("simulated", {})
    return SimulatedReplay(real=real_kpis, simulated=simulated, calls=len(records), units=units, waited=waited)
