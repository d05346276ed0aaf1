"""Our travel times equal pgRouting's on the real central-Shanghai network (same edges, same costs)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import numpy as np
import pytest

from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.osm_import import import_osm
from safecity.geo.road.pgrouting import edges_sql, load_edges

pytestmark = pytest.mark.postgres


def _dsn(pg_url: str) -> str:
    return pg_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def test_travel_times_agree_with_pgrouting(pg_url: str, shared_data: Path) -> None:
    graph = import_osm(shared_data / "osm_shanghai" / "shanghai_center.osm")
    net = RoadNetwork(graph)
    rng = np.random.default_rng(2024)
    sources = rng.integers(0, graph.n_nodes, 20)
    targets = rng.integers(0, graph.n_nodes, 12)
    ours = net.matrix_nodes(sources.tolist(), targets.tolist())  # 240 pairs
    conn = await asyncpg.connect(_dsn(pg_url))
    try:
        await load_edges(conn, graph)
        rows = await conn.fetch(
            "SELECT start_vid, end_vid, agg_cost"
            " FROM pgr_dijkstraCost($1, $2::bigint[], $3::bigint[], directed => true)",
            edges_sql(),
            [int(s) for s in sources],
            [int(t) for t in targets],
        )
        theirs = {(r["start_vid"], r["end_vid"]): r["agg_cost"] for r in rows}
        # pgr_drivingDistance agrees with our isochrone node set.
        node = int(sources[0])
        point = (float(graph.lon[node]), float(graph.lat[node]))
        dd = await conn.fetch(
            "SELECT node, agg_cost FROM pgr_drivingDistance($1, $2::bigint, 300.0, directed => true)",
            edges_sql(),
            node,
        )
    finally:
        await conn.close()
    pairs = 0
    max_diff = 0.0
    for i, s in enumerate(sources):
        for j, t in enumerate(targets):
            if s == t:
                continue
            pairs += 1
            key = (int(s), int(t))
            # The graph is one strongly connected component, so pgRouting finds every pair too.
            assert key in theirs
            max_diff = max(max_diff, abs(theirs[key] - ours[i, j]))
    assert pairs >= 200
    assert max_diff <= 0.1
    iso = net.isochrone(point, 5.0, polygon=False)
    from_point = net.seconds_from(point)
    pg_nodes = {int(r["node"]) for r in dd}
    # Our point sits on an edge at the node: both searches start at that node, so the sets match exactly
    # up to ties at the 300 s border.
    ours_nodes = set(iso.node_ids.tolist())
    border = {n for n in pg_nodes ^ ours_nodes if abs(from_point[n] - 300.0) > 1e-6}
    assert not border
