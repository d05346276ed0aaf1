"""Routing queries against an independent reference (scipy Dijkstra from every seed), snapping and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import dijkstra

from safecity.geo.road.errors import SnapTooFar, Unreachable
from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.snap import Snap
from safecity.kernel.errors import InvalidInput


def _points(g: RoadGraph, rng: np.random.Generator, k: int) -> list[tuple[float, float]]:
    nodes = rng.integers(0, g.n_nodes, k)
    return [(float(g.lon[i] + rng.normal(0, 2e-4)), float(g.lat[i] + rng.normal(0, 2e-4))) for i in nodes]


def reference_seconds(net: RoadNetwork, a: Snap, b: Snap) -> float:
    """Plain Dijkstra from each origin seed node over the full graph, plus the same-road stretch."""
    g, w = net.graph, net._weights
    csr = g.csr(np.where(w >= 2_147_483_647, np.inf, w / 1000.0))
    best = a.same_road_ms(b, w) / 1000.0
    for node, off in a.origin_seeds(g, w):
        d = dijkstra(csr, indices=node)
        for tnode, toff in b.target_seeds(g, w):
            best = min(best, off / 1000.0 + d[tnode] + toff / 1000.0)
    return best


def test_snap_to_edge_not_node(small_net: RoadNetwork) -> None:
    g = small_net.graph
    e = int(np.nonzero(g.length_m > 80)[0][0])
    u, v = int(g.tail[e]), int(g.head[e])
    mid = ((g.lon[u] + g.lon[v]) / 2, (g.lat[u] + g.lat[v]) / 2)
    s = small_net.snap(mid)
    assert s.edge in (e, int(g.twin()[e]))
    assert 0.4 < s.fraction < 0.6
    assert s.distance_m < 1.0


def test_snap_too_far_is_a_clear_error(small_net: RoadNetwork) -> None:
    lon0, lat0, _, _ = small_net.graph.bbox()
    with pytest.raises(SnapTooFar) as info:
        small_net.snap((lon0 - 0.05, lat0))
    assert info.value.code == "road.snap_too_far"
    assert "500" in str(info.value)
    with pytest.raises(InvalidInput):
        small_net.snap((float("nan"), 31.0))
    with pytest.raises(InvalidInput):
        small_net.snap((200.0, 31.0))


def test_travel_time_matches_plain_dijkstra(small_net: RoadNetwork) -> None:
    rng = np.random.default_rng(5)
    pts = _points(small_net.graph, rng, 40)
    for a, b in zip(pts[:20], pts[20:], strict=True):
        route = small_net.travel_time(a, b)
        ref = reference_seconds(small_net, small_net.snap(a), small_net.snap(b))
        assert route.seconds == pytest.approx(ref, abs=1e-6)
        assert route.coordinates[0] == pytest.approx((small_net.snap(a).lon, small_net.snap(a).lat))
        assert route.meters > 0 or route.seconds < 60


def test_matrix_matches_travel_time(small_net: RoadNetwork) -> None:
    rng = np.random.default_rng(6)
    origins, targets = _points(small_net.graph, rng, 6), _points(small_net.graph, rng, 7)
    m = small_net.matrix(origins, targets)
    assert m.shape == (6, 7)
    for i, a in enumerate(origins):
        for j, b in enumerate(targets):
            assert m[i, j] == pytest.approx(small_net.travel_time(a, b, with_path=False).seconds, abs=1e-6)
    # Same point: zero.
    assert small_net.matrix([origins[0]], [origins[0]])[0, 0] == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_units=st.integers(1, 12), k=st.integers(1, 4))
def test_nearest_unit_is_never_slower_than_any_other(small_net: RoadNetwork, seed: int, n_units: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    pts = _points(small_net.graph, rng, n_units + 1)
    incident = pts[0]
    units = {f"u{i}": p for i, p in enumerate(pts[1:])}
    ranked = small_net.nearest_units(incident, units, k)
    assert len(ranked) == min(k, n_units)
    # Exact: each unit's time equals an independent reverse Dijkstra from the incident.
    to_incident = small_net.seconds_to(incident)
    target = small_net.snap(incident)
    w = small_net._weights
    truth = {}
    for uid, p in units.items():
        s = small_net.snap(p)
        via = [off / 1000.0 + to_incident[n] for n, off in s.origin_seeds(small_net.graph, w)]
        truth[uid] = min([*via, s.same_road_ms(target, w) / 1000.0])
    for r in ranked:
        assert r.seconds == pytest.approx(truth[r.unit_id], abs=1e-6)
    assert ranked[0].seconds <= min(truth.values()) + 1e-9
    others = [t for u, t in truth.items() if u not in {r.unit_id for r in ranked}]
    assert all(ranked[-1].seconds <= t + 1e-9 for t in others)


def test_nearest_units_with_paths(small_net: RoadNetwork) -> None:
    rng = np.random.default_rng(8)
    pts = _points(small_net.graph, rng, 5)
    ranked = small_net.nearest_units(pts[0], {f"u{i}": p for i, p in enumerate(pts[1:])}, 2, with_path=True)
    assert ranked[0].route is not None
    assert ranked[0].route.seconds == pytest.approx(ranked[0].seconds)
    assert small_net.nearest_units(pts[0], {}, 3) == []
    with pytest.raises(InvalidInput):
        small_net.nearest_units(pts[0], {"a": pts[1]}, 0)


def test_isochrones_are_nested_and_exact(small_net: RoadNetwork) -> None:
    g = small_net.graph
    point = (float(g.lon[10]), float(g.lat[10]))
    isos = small_net.isochrones(point, [5, 10, 15])
    sizes = [len(i.node_ids) for i in isos]
    assert sizes == sorted(sizes) and sizes[0] > 0
    full = small_net.seconds_from(point)
    np.testing.assert_array_equal(isos[0].node_ids, np.nonzero(full <= 300.0)[0])
    assert isos[1].polygon.geom_type == "Polygon" and isos[1].polygon.area > 0
    assert isos[1].geojson()["properties"]["minutes"] == 10
    with pytest.raises(InvalidInput):
        small_net.isochrone(point, 0)


def test_unreachable_target(tmp_path: object) -> None:
    # Two one-way streets that meet: B is reachable from A, but not A from B.
    lon = np.array([121.0, 121.001, 121.002])
    lat = np.array([31.0, 31.0, 31.0])
    g = RoadGraph.from_edges(lon, lat, np.arange(3), [0, 1], [1, 2], [30, 30], [6, 6], largest_scc=False)
    net = RoadNetwork(g)
    a, b = (121.0, 31.0), (121.002, 31.0)
    assert net.travel_time(a, b).seconds > 0
    with pytest.raises(Unreachable) as info:
        net.travel_time(b, a)
    assert info.value.code == "road.unreachable"
    assert math.isinf(net.matrix([b], [a])[0, 0])
    assert net.nearest_units(a, {"x": b}, 1) == []
