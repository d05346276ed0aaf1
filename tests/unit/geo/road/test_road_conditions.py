"""Road conditions (speed factors, closures) and the incremental coverage map."""

from __future__ import annotations

import numpy as np
import pytest

from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.synthetic import synthetic_network
from safecity.kernel.errors import InvalidInput


@pytest.fixture
def net() -> RoadNetwork:
    """A fresh network per test: conditions change it."""
    return RoadNetwork(synthetic_network(2_500, seed=4))


def test_speed_factor_and_closure_take_effect_without_rebuild(net: RoadNetwork) -> None:
    g = net.graph
    a = (float(g.lon[5]), float(g.lat[5]))
    b = (float(g.lon[2000]), float(g.lat[2000]))
    base = net.travel_time(a, b)
    cch = net.cch
    # Slow every edge to half speed: every time doubles.
    net.set_speed_factor(range(g.n_edges), 0.5)
    assert net.cch is cch  # same engine, re-customized
    assert net.travel_time(a, b).seconds == pytest.approx(2 * base.seconds, rel=1e-3)
    net.clear_conditions()
    assert net.travel_time(a, b).seconds == pytest.approx(base.seconds, abs=1e-9)
    # Close the roads of the fastest route: the new route is not faster and avoids them.
    closed = []
    for u, v in zip(base.nodes[1:-2], base.nodes[2:-1], strict=True):
        closed += net.road_edges(g.edge_id(u, v))
    net.close_edges(closed)
    detour = net.travel_time(a, b)
    assert detour.seconds > base.seconds
    used = {g.edge_id(u, v) for u, v in zip(detour.nodes[:-1], detour.nodes[1:], strict=True)}
    assert not used & set(closed)
    # The scipy searches see the same closure.
    assert net.seconds_from(a)[base.nodes[-1]] >= detour.seconds - 1e-6 - 1000
    net.reopen_edges(closed)
    assert net.travel_time(a, b).seconds == pytest.approx(base.seconds, abs=1e-9)
    with pytest.raises(InvalidInput):
        net.set_speed_factor([0], 0.0)
    with pytest.raises(InvalidInput):
        net.close_edges([g.n_edges + 5])


def _check_coverage(net: RoadNetwork, units: dict[str, tuple[float, float]]) -> None:
    cov = net._coverage
    assert cov is not None
    inc_secs = cov.seconds.copy()
    inc_owner = [cov.owner_of(i) for i in range(len(cov.seconds))]
    fresh = net.coverage(units)
    np.testing.assert_allclose(inc_secs, fresh.seconds, atol=1e-6)
    # Owners may differ only on ties: the incremental owner reaches the node in the same time.
    for node in np.nonzero(
        np.array(inc_owner, dtype=object) != np.array([fresh.owner_of(i) for i in range(len(inc_secs))], dtype=object)
    )[0][:50]:
        owner = inc_owner[node]
        assert owner is not None
        assert net.seconds_from(units[owner])[node] == pytest.approx(fresh.seconds[node], abs=1e-6)


def test_coverage_incremental_equals_rebuild(net: RoadNetwork) -> None:
    g = net.graph
    rng = np.random.default_rng(2)
    pick = rng.integers(0, g.n_nodes, 8)
    units = {f"u{i}": (float(g.lon[n]), float(g.lat[n])) for i, n in enumerate(pick)}
    cov = net.coverage(units)
    assert sum(cov.counts().values()) == int((cov.owner >= 0).sum())
    assert cov.owner_of(int(net.snap(units["u0"]).edge and g.head[net.snap(units["u0"]).edge])) is not None
    # u3 goes off duty, u5 moves, a new unit comes on duty.
    net.update_unit("u3", None)
    del units["u3"]
    moved = (float(g.lon[7]), float(g.lat[7]))
    net.update_unit("u5", moved)
    units["u5"] = moved
    new = (float(g.lon[1500]), float(g.lat[1500]))
    net.update_unit("n1", new)
    units["n1"] = new
    net._coverage = cov
    _check_coverage(net, units)


def test_coverage_needs_a_build_first(net: RoadNetwork) -> None:
    with pytest.raises(InvalidInput):
        net.update_unit("x", None)
