"""Load a RoadGraph into PostgreSQL for pgRouting, the peer we check answers and speed against."""

from __future__ import annotations

from typing import Any

from safecity.geo.road.graph import RoadGraph


async def load_edges(conn: Any, graph: RoadGraph, table: str = "road_edges", id_offset: int = 0) -> None:
    """Create `table` (id, source, target, cost, reverse_cost = -1) with one row per directed edge (asyncpg conn).

    Edge and node ids are ours plus `id_offset`: pgr_trsp needs 1 (it mistakes id 0 for "none").
    """
    await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pgrouting")
    await conn.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, source bigint NOT NULL, target bigint NOT NULL,"
        " cost double precision NOT NULL, reverse_cost double precision NOT NULL)"
    )
    cost = graph.time_ms / 1000.0
    rows = [
        (e + id_offset, int(t) + id_offset, int(h) + id_offset, float(c), -1.0)
        for e, (t, h, c) in enumerate(zip(graph.tail.tolist(), graph.head.tolist(), cost.tolist(), strict=True))
    ]
    await conn.copy_records_to_table(table, records=rows, columns=["id", "source", "target", "cost", "reverse_cost"])
    await conn.execute(f"ANALYZE {table}")


def edges_sql(table: str = "road_edges") -> str:
    """The edges query pgRouting functions take."""
    return f"SELECT id, source, target, cost, reverse_cost FROM {table}"


# pgr_trsp treats a restriction as a penalty added to any path that takes it; one this large makes it a ban.
BAN_COST_S = 10_000_000.0


async def load_turn_bans(conn: Any, graph: RoadGraph, table: str = "road_restrictions", id_offset: int = 1) -> None:
    """Create `table` (id, cost, path) with one row per banned turn, as pgr_trsp's restrictions (asyncpg conn)."""
    await conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, cost double precision NOT NULL, path bigint[])")
    rows = [
        (i + 1, BAN_COST_S, [int(a) + id_offset, int(b) + id_offset])
        for i, (a, b) in enumerate(graph.turn_bans.tolist())
    ]
    await conn.copy_records_to_table(table, records=rows, columns=["id", "cost", "path"])


def restrictions_sql(table: str = "road_restrictions") -> str:
    """The restrictions query pgr_trsp takes."""
    return f"SELECT id, cost, path FROM {table}"
