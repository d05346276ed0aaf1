"""Ranking units never stops at an unroutable one: it is listed with a coded reason; snapped points report snap_m."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safecity.geo.road.graph import RoadGraph, haversine_m
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.synthetic import synthetic_network


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    """A small synthetic district of its own (these tests close roads)."""
    return synthetic_network(2_500, seed=9)


def node_point(g: RoadGraph, v: int, dlat: float = 0.0) -> tuple[float, float]:
    """A node's position, optionally moved north by `dlat` degrees."""
    return (float(g.lon[v]), float(g.lat[v]) + dlat)


def off_road(g: RoadGraph, lo_m: float, hi_m: float) -> tuple[float, float]:
    """A point inside the network's area that lies between lo_m and hi_m from the nearest road."""
    probe = RoadNetwork(g, max_snap_m=10_000).snapper
    rng = np.random.default_rng(7)
    for _ in range(2_000):
        p = (float(rng.uniform(g.lon.min(), g.lon.max())), float(rng.uniform(g.lat.min(), g.lat.max())))
        if lo_m < probe.snap(p).distance_m < hi_m:
            return p
    raise AssertionError("no such point")


def test_rank_lists_unroutable_units_with_their_reason(graph: RoadGraph) -> None:
    net = RoadNetwork(graph, max_snap_m=500)
    g = graph
    rng = np.random.default_rng(1)
    good = {f"car-{i}": node_point(g, int(v), 1e-4) for i, v in enumerate(rng.choice(g.n_nodes, 8, replace=False))}
    # A unit stuck on a road whose both ends lead nowhere else: it can move, but not to the target.
    stuck_edge = int(g.indptr[int(rng.integers(g.n_nodes))])
    u, v = int(g.tail[stuck_edge]), int(g.head[stuck_edge])
    road = set(net.road_edges(stuck_edge))
    closing = [e for n in (u, v) for e in range(int(g.indptr[n]), int(g.indptr[n + 1])) if e not in road]
    net.close_edges(closing)
    stuck = (0.5 * (g.lon[u] + g.lon[v]), 0.5 * (g.lat[u] + g.lat[v]))
    units = {
        **good,
        "nan": (math.nan, 31.0),
        "mars": (200.0, 0.0),
        "far": (0.0, 0.0),
        "stuck": (float(stuck[0]), float(stuck[1])),
    }
    target = node_point(g, int(rng.integers(g.n_nodes)), 2e-4)
    ranking = net.rank_units(units, target)
    reasons = {x.unit_id: x.code for x in ranking.unroutable}
    assert reasons == {
        "nan": "road.invalid_point",
        "mars": "road.invalid_point",
        "far": "road.off_map",
        "stuck": "road.unreachable",
    }
    assert [e.unit_id for e in ranking.ranked] == [e.unit_id for e in net.nearest_units(target, good, k=8)]
    assert sorted(e.unit_id for e in ranking.ranked) == sorted(good)
    seconds = [e.seconds for e in ranking.ranked]
    assert seconds == sorted(seconds)
    # Every ranked unit reports how far its position lay from the road (the points were moved ~11 m off a node).
    for e in ranking.ranked:
        assert 0.0 <= e.snap_m <= 12.0
    assert 0.0 < ranking.target_snap_m <= 23.0
    # nearest_units skips the unroutable ones instead of failing.
    assert [e.unit_id for e in net.nearest_units(target, units, k=3)] == [e.unit_id for e in ranking.ranked[:3]]
    # Closing both directions of the road a unit stands on leaves it no routable edge.
    net.close_edges(sorted(road))
    again = {x.unit_id: x.code for x in net.rank_units({"stuck": units["stuck"]}, target).unroutable}
    assert again == {"stuck": "road.no_routable_edge"}


def test_far_from_any_road_inside_the_map(graph: RoadGraph) -> None:
    net = RoadNetwork(graph, max_snap_m=5)
    g = graph
    v = int(g.n_nodes // 2)
    off = off_road(g, 20.0, 200.0)
    ranking = net.rank_units({"walker": off, "car": node_point(g, v)}, node_point(g, v + 1))
    (bad,) = ranking.unroutable
    assert bad.unit_id == "walker" and bad.code == "road.no_routable_edge"
    assert bad.snap_m is not None and bad.snap_m > 5
    assert [e.unit_id for e in ranking.ranked] == ["car"]


def test_route_reports_snap_distances(graph: RoadGraph) -> None:
    net = RoadNetwork(graph)
    a, b = off_road(graph, 5.0, 50.0), node_point(graph, 900, -1e-4)
    route = net.travel_time(a, b)
    sa, sb = net.snap(a), net.snap(b)
    assert route.from_snap_m == sa.distance_m and route.to_snap_m == sb.distance_m
    assert 5.0 < route.from_snap_m < 50.0
    assert route.from_snap_m == pytest.approx(float(haversine_m(a[0], a[1], sa.lon, sa.lat)), rel=0.01)
    assert route.geojson()["properties"]["to_snap_m"] == round(sb.distance_m, 1)  # type: ignore[index]


def test_unit_seconds_equal_the_matrix_and_follow_closures(graph: RoadGraph) -> None:
    """The many-to-one ranking (cached seeds, a unit on a node pinned once) gives the one-to-many matrix's seconds,
    routes the first units as travel_time does, and sees a closure at once (the cached seeds are dropped)."""
    net = RoadNetwork(graph, max_snap_m=500)
    g = graph
    rng = np.random.default_rng(4)
    nodes = rng.choice(g.n_nodes, 40, replace=False)
    # Half the units stand on nodes (where one seed dominates the other), half between nodes.
    units = {f"n{i}": node_point(g, int(v)) for i, v in enumerate(nodes[:20])}
    units |= {f"m{i}": node_point(g, int(v), 3e-5) for i, v in enumerate(nodes[20:])}
    target = node_point(g, int(rng.integers(g.n_nodes)), 1e-4)

    def check() -> None:
        times = net.unit_seconds(units, target, routes=3)
        column = net.matrix(list(units.values()), [target])[:, 0]
        assert times.seconds.tolist() == column.tolist()
        assert [times.ids[i] for i in times.order] == [e.unit_id for e in net.rank_units(units, target).ranked]
        for i in times.order[:3]:
            assert times.routes[i] == net.travel_time(units[times.ids[i]], target)
        assert set(times.routes) == set(times.order[:3])

    check()
    check()  # again, from the cached seeds
    # A unit reports a new position (snapped once, its seeds kept for the next ranking).
    units["n0"] = node_point(g, int(rng.integers(g.n_nodes)))
    assert net.snap_unit(units["n0"]) == net.snap(units["n0"])
    check()
    first = net.unit_seconds(units, target).order[0]
    edge = net.snap(units[net.unit_seconds(units, target).ids[first]]).edge
    net.close_edges(net.road_edges(edge))
    check()
    net.set_speed_factor(range(0, g.n_edges, 3), 0.5)
    check()
