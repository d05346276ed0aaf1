"""Turn restrictions: every query honours banned turns, exactly (checked against an edge-based Dijkstra)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from turn_reference import edge_search, from_node, point_to_point

from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.synthetic import synthetic_network


def random_bans(graph: RoadGraph, rng: np.random.Generator, nodes: int, per_node: int = 2) -> list[tuple[int, int]]:
    """Random banned turns at random nodes (any arrival edge to any departure edge, U-turns included)."""
    bans = []
    for v in rng.choice(graph.n_nodes, nodes, replace=False).tolist():
        ins = np.nonzero(graph.head == v)[0]
        outs = np.arange(graph.indptr[v], graph.indptr[v + 1])
        for _ in range(per_node):
            bans.append((int(rng.choice(ins)), int(rng.choice(outs))))
    return bans


def with_bans(graph: RoadGraph, bans: list[tuple[int, int]]) -> RoadGraph:
    """A copy of the graph with these banned turns (the shared fixture graph stays unrestricted)."""
    g = dataclasses.replace(graph)
    g.set_turn_bans(bans)
    return g


def banned_turns_on(graph: RoadGraph, edge: int, nodes: list[int], banned: set[tuple[int, int]]) -> list[tuple]:
    """The banned turns a route takes: from its start edge through every pair of consecutive path edges."""
    edges = [edge] + [graph.edge_id(u, v) for u, v in itertools.pairwise(nodes)]
    return [t for t in itertools.pairwise(edges) if t in banned]


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    """A small synthetic district."""
    return synthetic_network(2_500, seed=5)


@pytest.fixture(scope="module")
def restricted(graph: RoadGraph) -> RoadNetwork:
    """The district with 600 random banned turns at 300 nodes."""
    return RoadNetwork(with_bans(graph, random_bans(graph, np.random.default_rng(11), 300)))


def test_expansion_splits_only_via_nodes(graph: RoadGraph, restricted: RoadNetwork) -> None:
    turns = restricted.turns
    assert turns.restricted and turns.split_nodes == 300
    # Only the split nodes grow: one copy per arrival edge.
    arrivals = sum(len(v) for v in turns.in_edges.values())
    assert restricted._xgraph.n_nodes == graph.n_nodes + arrivals - turns.split_nodes
    assert RoadNetwork(graph).turns.graph is graph


def test_node_matrix_equals_edge_based_dijkstra(restricted: RoadNetwork) -> None:
    g = restricted.graph
    banned = {(int(a), int(b)) for a, b in g.turn_bans}
    rng = np.random.default_rng(2)
    src = rng.choice(g.n_nodes, 15, replace=False).tolist()
    dst = rng.choice(g.n_nodes, 300, replace=False).tolist()
    got = restricted.matrix_nodes(src, dst)
    free = RoadNetwork(dataclasses.replace(g, turn_bans=np.zeros((0, 2), np.int64))).matrix_nodes(src, dst)
    for i, s in enumerate(src):
        np.testing.assert_allclose(got[i], from_node(g, s, banned)[dst], rtol=0, atol=1e-9)
    # The bans matter on this graph (otherwise the test could not fail) and never make a trip shorter.
    assert (got > free + 1e-9).any()
    assert (got >= free - 1e-9).all()


def test_route_nearest_matrix_isochrone_honour_bans(restricted: RoadNetwork) -> None:
    g = restricted.graph
    banned = {(int(a), int(b)) for a, b in g.turn_bans}
    rng = np.random.default_rng(4)
    idx = rng.choice(g.n_edges, 60, replace=False)
    pts = [
        (float(0.6 * g.lon[g.tail[e]] + 0.4 * g.lon[g.head[e]]), float(0.6 * g.lat[g.tail[e]] + 0.4 * g.lat[g.head[e]]))
        for e in idx
    ]
    snaps = restricted.snapper.snap_many(pts)
    incident, units = pts[0], {f"u{i}": p for i, p in enumerate(pts[1:])}
    m = restricted.matrix(pts[1:], [incident])
    etas = {e.unit_id: e.seconds for e in restricted.nearest_units(incident, units, k=len(units))}
    changed = 0
    for i, p in enumerate(pts[1:]):
        want = point_to_point(g, snaps[i + 1], snaps[0], banned)
        assert m[i, 0] == pytest.approx(want, abs=1e-9)
        assert etas.get(f"u{i}", np.inf) == pytest.approx(want, abs=1e-9)
        route = restricted.travel_time(p, incident)
        assert route.seconds == pytest.approx(want, abs=1e-9)
        if route.nodes:
            s = snaps[i + 1]
            first = s.edge if int(g.head[s.edge]) == route.nodes[0] else s.twin
            assert banned_turns_on(g, first, route.nodes, banned) == []
        changed += int(want > restricted_free(g).travel_time(p, incident).seconds + 1e-9)
    assert changed > 0
    # Isochrone: the node times equal the edge-based search from the point.
    s = snaps[0]
    secs = restricted.seconds_from(incident)
    iso = restricted.isochrone(incident, 3.0, polygon=False)
    np.testing.assert_array_equal(np.sort(iso.node_ids), np.nonzero(secs <= 180.0)[0])
    # Arrival time at every node = the earliest arrival over its in-edges in the edge-based reference search.
    ms = g.time_ms.astype(np.float64)
    starts = [(s.edge, float(round((1.0 - s.fraction) * ms[s.edge])))]
    if s.twin >= 0:
        starts.append((s.twin, float(round(s.fraction * ms[s.twin]))))
    best = edge_search(g, starts, banned)
    want = np.full(g.n_nodes, np.inf)
    np.minimum.at(want, g.head.astype(np.int64), best)
    np.testing.assert_allclose(secs, want / 1000.0, rtol=0, atol=1e-9)


_FREE: dict[int, RoadNetwork] = {}


def restricted_free(g: RoadGraph) -> RoadNetwork:
    """The same graph without bans (cached per graph)."""
    if id(g) not in _FREE:
        _FREE[id(g)] = RoadNetwork(dataclasses.replace(g, turn_bans=np.zeros((0, 2), np.int64)))
    return _FREE[id(g)]


def test_seconds_to_and_coverage_with_bans(restricted: RoadNetwork) -> None:
    g = restricted.graph
    banned = {(int(a), int(b)) for a, b in g.turn_bans}
    rng = np.random.default_rng(8)
    nodes = rng.choice(g.n_nodes, 6, replace=False).tolist()
    e0 = int(g.indptr[nodes[0]])
    target = (
        float(0.6 * g.lon[g.tail[e0]] + 0.4 * g.lon[g.head[e0]]),
        float(0.6 * g.lat[g.tail[e0]] + 0.4 * g.lat[g.head[e0]]),
    )
    snap = restricted.snap(target)
    to = restricted.seconds_to(target)
    ms = g.time_ms.astype(np.float64)
    # From v, leaving by any edge, to the target point: the edge-based reference, split nodes included.
    split = list(restricted.turns.in_edges)[:10]
    for v in nodes[1:] + split:
        lo, hi = int(g.indptr[v]), int(g.indptr[v + 1])
        best = edge_search(g, [(f, ms[f]) for f in range(lo, hi)], banned)
        want = np.inf
        for e, frac in [(snap.edge, snap.fraction)] + ([(snap.twin, 1.0 - snap.fraction)] if snap.twin >= 0 else []):
            leg = round(frac * ms[e])
            u = int(g.tail[e])
            if u == v:
                want = min(want, leg)
            for arriving in np.nonzero(g.head == u)[0].tolist():
                if (arriving, e) not in banned:
                    want = min(want, best[arriving] + leg)
        assert to[v] == pytest.approx(want / 1000.0, abs=1e-9), v
    units = {f"c{i}": (float(g.lon[v]), float(g.lat[v])) for i, v in enumerate(nodes)}
    cov = restricted.coverage(units)
    assert len(cov.owner) == g.n_nodes and len(cov.seconds) == g.n_nodes
    moved = restricted.update_unit("c1", (float(g.lon[nodes[0]]) + 1e-4, float(g.lat[nodes[0]])))
    fresh = restricted.coverage({**units, "c1": (float(g.lon[nodes[0]]) + 1e-4, float(g.lat[nodes[0]]))})
    np.testing.assert_allclose(moved.seconds, fresh.seconds)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31), count=st.integers(0, 120), pair=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6))
)
def test_property_no_banned_turn_and_no_bans_is_today(graph: RoadGraph, seed: int, count: int, pair: tuple) -> None:
    rng = np.random.default_rng(seed)
    bans = random_bans(graph, rng, count, per_node=3) if count else []
    net = RoadNetwork(with_bans(graph, bans))
    today = restricted_free(graph)
    a_e, b_e = pair[0] % graph.n_edges, pair[1] % graph.n_edges
    a = (
        float(0.7 * graph.lon[graph.tail[a_e]] + 0.3 * graph.lon[graph.head[a_e]]),
        float(0.7 * graph.lat[graph.tail[a_e]] + 0.3 * graph.lat[graph.head[a_e]]),
    )
    b = (float(graph.lon[graph.head[b_e]]), float(graph.lat[graph.head[b_e]]))
    free = today.travel_time(a, b).seconds
    try:
        route = net.travel_time(a, b)
    except Exception as err:
        assert getattr(err, "code", None) == "road.unreachable" and bans
        return
    assert route.seconds >= free - 1e-9
    if not bans:
        assert route.seconds == free
        assert route.nodes == today.travel_time(a, b).nodes
    if route.nodes:
        s = net.snap(a)
        first = s.edge if int(graph.head[s.edge]) == route.nodes[0] else s.twin
        banned = {(int(x), int(y)) for x, y in net.graph.turn_bans}
        assert banned_turns_on(graph, first, route.nodes, banned) == []
