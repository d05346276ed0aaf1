"""What a staged event store would save on SQLite, and how long its moves would hold the write lock.

The eighth session's proposal for the alert hot path (docs/benchmarks.md) is an event store whose commits go into an
index-less inbox, with the rows moved into the indexed `events` table in large pieces sorted by device and time. This
bench measures that design's two unknowns against our table as it is, the same rows through Python's sqlite3 (WAL,
synchronous=NORMAL, the node's page cache, SQLite's own checkpoints, as bench/event_store.py):

* **direct**: each transaction inserts its rows into `events` (all six B-trees) with the writer's multi-row
  `INSERT ... ON CONFLICT DO NOTHING`, as the node does now;
* **staged, piece N**: each transaction first asks the `events` table's unique (device, message id) index which of its
  rows are already stored (one `SELECT ... WHERE (device_id, message_id) IN (VALUES ...)`), skips those and the ones
  already in the inbox (a set of the inbox's keys kept in memory), and inserts the rest into the inbox (no index but
  its rowid); once the inbox holds N rows, one transaction moves them into `events` sorted by device and time and
  empties the inbox. The exactly-once verdict thus stays synchronous, as the node's MQTT acknowledgements need.

Printed: the CPU a row (this process's user + system time over the inserts, lookups, moves and commits) at each table
size, and the moves' wall time (the write lock is held that long: the alert path's writes would wait behind it).
Device ids name their building (`b{building}-d{n}`), as the peer load's do: sorting by device sorts by building too,
which is the favourable case for the building index.

    uv run python bench/event_staging.py [--quick] [--rows 400000] [--transaction 1000] [--pieces 5000,20000,100000]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from event_store import connect, cpu_s, our_ddl, our_rows, stream

from safecity.store.writer import _COLUMN_LIST, _COLUMNS, _SQLITE_ROW_MARKS, _SQLITE_ROWS_PER_STATEMENT

DEVICE = _COLUMNS.index("device_id")
MESSAGE = _COLUMNS.index("message_id")
WIDTH = len(_COLUMNS)


def insert_sql(table: str, rows: int) -> str:
    return f"INSERT INTO {table} ({_COLUMN_LIST}) VALUES {', '.join([_SQLITE_ROW_MARKS] * rows)} ON CONFLICT DO NOTHING"


def lookup_sql(keys: int) -> str:
    # A join from the keys (not `(device_id, message_id) IN (VALUES ...)`, which SQLite 3.40 answers with a scan of
    # the whole index): one search of the unique index a key.
    return (
        "SELECT e.device_id, e.message_id FROM (VALUES "
        + ", ".join(["(?, ?)"] * keys)
        + ") AS k CROSS JOIN events AS e ON e.device_id = k.column1 AND e.message_id = k.column2"
        " WHERE e.message_id IS NOT NULL"
    )


class Staged:
    """The staged store: an inbox without indexes, moved into `events` sorted once it holds `piece` rows."""

    def __init__(self, conn: sqlite3.Connection, piece: int) -> None:
        self.conn = conn
        self.piece = piece
        self.inbox_keys: set[tuple[str, str]] = set()
        self.moves: list[float] = []
        conn.execute("CREATE TABLE events_inbox AS SELECT * FROM events WHERE 0")

    def write(self, params: list[Any]) -> None:
        conn = self.conn
        rows = [params[i : i + WIDTH] for i in range(0, len(params), WIDTH)]
        keys = [(r[DEVICE], r[MESSAGE]) for r in rows]
        conn.execute("BEGIN")
        stored = {
            (d, m)
            for k in range(0, len(keys), _SQLITE_ROWS_PER_STATEMENT)
            for d, m in conn.execute(
                lookup_sql(len(keys[k : k + _SQLITE_ROWS_PER_STATEMENT])),
                [v for key in keys[k : k + _SQLITE_ROWS_PER_STATEMENT] for v in key],
            )
        }
        new = []
        for key, row in zip(keys, rows, strict=True):
            if key not in stored and key not in self.inbox_keys:
                self.inbox_keys.add(key)
                new.append(row)
        for k in range(0, len(new), _SQLITE_ROWS_PER_STATEMENT):
            part = new[k : k + _SQLITE_ROWS_PER_STATEMENT]
            conn.execute(insert_sql("events_inbox", len(part)), [v for r in part for v in r])
        conn.execute("COMMIT")
        if len(self.inbox_keys) >= self.piece:
            self.move()

    def move(self) -> None:
        t = time.perf_counter()
        conn = self.conn
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO events SELECT * FROM events_inbox WHERE true ORDER BY device_id, occurred_at"
            " ON CONFLICT DO NOTHING"
        )
        conn.execute("DELETE FROM events_inbox")
        conn.execute("COMMIT")
        self.moves.append(time.perf_counter() - t)
        self.inbox_keys.clear()


def run(work: Path, data: list[Any], tx: int, piece: int | None, slices: int) -> dict[str, Any]:
    name = "direct" if piece is None else f"staged {piece:,}"
    conn = connect(work / f"{name.replace(' ', '-').replace(',', '')}.db")
    for ddl in our_ddl():
        conn.execute(ddl)
    staged = Staged(conn, piece) if piece is not None else None
    slice_rows = max(tx, len(data) // slices)
    by_size = []
    for start in range(0, len(data), slice_rows):
        part = data[start : start + slice_rows]
        spent = 0.0
        for at in range(0, len(part), tx):
            params = our_rows(part[at : at + tx])  # made before the clock starts
            c0 = cpu_s()
            if staged is None:
                conn.execute("BEGIN")
                for k in range(0, len(params), _SQLITE_ROWS_PER_STATEMENT * WIDTH):
                    chunk = params[k : k + _SQLITE_ROWS_PER_STATEMENT * WIDTH]
                    conn.execute(insert_sql("events", len(chunk) // WIDTH), chunk)
                conn.execute("COMMIT")
            else:
                staged.write(params)
            spent += cpu_s() - c0
        by_size.append({"rows": start + len(part), "us_per_row": round(spent / len(part) * 1e6, 1)})
    if staged is not None:
        c0 = cpu_s()
        staged.move()  # the rest, so that every row is in `events` for the count
        by_size[-1]["us_per_row"] = round(by_size[-1]["us_per_row"] + (cpu_s() - c0) / slice_rows * 1e6, 1)
    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    moves = staged.moves if staged is not None else []
    return {
        "variant": name,
        "by_size": by_size,
        "us_per_row_mean": round(statistics.fmean(s["us_per_row"] for s in by_size), 1),
        "moves": len(moves),
        "move_ms_p50": round(statistics.median(moves) * 1000, 1) if moves else None,
        "move_ms_max": round(max(moves) * 1000, 1) if moves else None,
        "stored": stored,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="150,000 rows, two piece sizes (under a minute)")
    ap.add_argument("--rows", type=int, default=None, help="rows in all (default 400,000; quick 150,000)")
    ap.add_argument("--transaction", type=int, default=1_000, help="rows a transaction (default 1,000)")
    ap.add_argument("--pieces", default=None, help="inbox rows a move (default 5000,20000,100000; quick 5000,50000)")
    opts = ap.parse_args(argv)
    rows = opts.rows or (150_000 if opts.quick else 400_000)
    pieces = [int(p) for p in (opts.pieces or ("5000,50000" if opts.quick else "5000,20000,100000")).split(",")]
    data = stream(rows, seed=7)
    print(
        f"bench/event_staging.py: {rows:,} rows in {opts.transaction:,}-row transactions; pieces {pieces}; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-event-staging-") as tmp:
        for piece in [None, *pieces]:
            result = run(Path(tmp), data, opts.transaction, piece, slices=4)
            results.append(result)
            sizes = ", ".join(f"{s['rows']:,}: {s['us_per_row']}" for s in result["by_size"])
            moves = f"; {result['moves']} moves, p50 {result['move_ms_p50']} ms, max {result['move_ms_max']} ms"
            print(f"  {result['variant']:>14}: µs a row at {sizes}{moves if result['moves'] else ''}", flush=True)
    direct = results[0]["us_per_row_mean"]
    for result in results:
        result["ratio_to_direct"] = round(result["us_per_row_mean"] / direct, 2)
    ok = all(r["stored"] == rows for r in results)
    print(json.dumps({"rows": rows, "transaction_rows": opts.transaction, "variants": results, "all_stored": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
