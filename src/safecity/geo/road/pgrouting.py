"""Load a RoadGraph into PostgreSQL for pgRouting, the peer we check answers and speed against."""

from __future__ import annotations

from typing import Any

from safecity.geo.road.graph import RoadGraph


async def load_edges(conn: Any, graph: RoadGraph, table: str = "road_edges") -> None:
    """Create `table` (id, source, target, cost, reverse_cost = -1) with one row per directed edge (asyncpg conn)."""
    await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pgrouting")
    await conn.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, source bigint NOT NULL, target bigint NOT NULL,"
        " cost double precision NOT NULL, reverse_cost double precision NOT NULL)"
    )
    cost = graph.time_ms / 1000.0
    rows = [
        (e, int(t), int(h), float(c), -1.0)
        for e, (t, h, c) in enumerate(zip(graph.tail.tolist(), graph.head.tolist(), cost.tolist(), strict=True))
    ]
    await conn.copy_records_to_table(table, records=rows, columns=["id", "source", "target", "cost", "reverse_cost"])
    await conn.execute(f"ANALYZE {table}")


def edges_sql(table: str = "road_edges") -> str:
    """The edges query pgRouting functions take."""
    return f"SELECT id, source, target, cost, reverse_cost FROM {table}"
