"""The synthetic network generator: deterministic, connected, hierarchical."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from safecity.geo.road.graph import HIGHWAY_CODE
from safecity.geo.road.synthetic import synthetic_network


def test_deterministic_and_strongly_connected() -> None:
    a = synthetic_network(10_000, seed=11)
    b = synthetic_network(10_000, seed=11)
    c = synthetic_network(10_000, seed=12)
    np.testing.assert_array_equal(a.head, b.head)
    np.testing.assert_array_equal(a.lon, b.lon)
    assert not np.array_equal(a.lon, c.lon)
    assert 9_000 < a.n_nodes <= 10_000
    n, _ = connected_components(a.csr(), directed=True, connection="strong")
    assert n == 1


def test_hierarchy_and_one_ways() -> None:
    g = synthetic_network(10_000)
    classes = set(g.highway.tolist())
    assert {HIGHWAY_CODE["residential"], HIGHWAY_CODE["secondary"], HIGHWAY_CODE["primary"]} <= classes
    assert (g.twin() < 0).any()


def test_size_limits() -> None:
    with pytest.raises(ValueError):
        synthetic_network(10)


def test_vectorised_edge_lookup_agrees_with_the_single_lookup() -> None:
    graph = synthetic_network(900, seed=3)
    rng = np.random.default_rng(5)
    edges = rng.integers(0, graph.n_edges, 300)
    us = np.concatenate([graph.tail[edges], rng.integers(0, graph.n_nodes, 100)])
    vs = np.concatenate([graph.head[edges], rng.integers(0, graph.n_nodes, 100)])
    found = graph.edge_ids(us, vs)
    assert found.tolist() == [graph.edge_id(int(u), int(v)) for u, v in zip(us, vs, strict=True)]
    assert (found[:300] >= 0).all() and (found[300:] == -1).any()
