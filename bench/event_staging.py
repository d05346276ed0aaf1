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
size, the moves' wall time (the write lock is held that long: the alert path's writes would wait behind it), and the
wall time of a device page (its newest 100 events) read after the run, staged with an inbox half a piece full.
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


def read_probe(conn: sqlite3.Connection, data: list[Any], inbox: bool, queries: int = 300) -> list[float]:
    """Wall times of a device page (its newest 100 events, as `EventRepo.list(device_id=...)` asks), over `events`
    and, staged, the inbox too (a scan of it: it has no index)."""
    table = "SELECT id, occurred_at FROM events WHERE device_id = ? ORDER BY id DESC LIMIT 100"
    sql = table
    if inbox:
        sql = (
            f"SELECT * FROM ({table}) UNION ALL SELECT * FROM (SELECT id, occurred_at FROM events_inbox"
            " WHERE device_id = ? ORDER BY id DESC LIMIT 100) ORDER BY id DESC LIMIT 100"
        )
    times = []
    for k in range(queries):
        i, b = data[(k * 7919) % len(data)][:2]
        device = f"b{b}-d{i % 4}"
        t = time.perf_counter()
        conn.execute(sql, (device, device) if inbox else (device,)).fetchall()
        times.append(time.perf_counter() - t)
    return times


def run(work: Path, data: list[Any], extra: list[Any], tx: int, piece: int | None, slices: int) -> dict[str, Any]:
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
        staged.move()  # the rest, so that every row is in `events`
        by_size[-1]["us_per_row"] = round(by_size[-1]["us_per_row"] + (cpu_s() - c0) / slice_rows * 1e6, 1)
        for at in range(0, len(extra), tx):  # an inbox half full for the reads (no move: under a piece)
            staged.write(our_rows(extra[at : at + tx]))
    reads = read_probe(conn, data, staged is not None)
    if staged is not None:
        staged.move()
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
        "inbox_rows_at_reads": len(extra) if staged is not None else 0,
        "device_page_ms_p50": round(statistics.median(reads) * 1000, 2),
        "device_page_ms_p99": round(sorted(reads)[int(len(reads) * 0.99)] * 1000, 2),
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
    everything = stream(rows + max(pieces) // 2, seed=7)
    data = everything[:rows]
    print(
        f"bench/event_staging.py: {rows:,} rows in {opts.transaction:,}-row transactions; pieces {pieces}; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-event-staging-") as tmp:
        for piece in [None, *pieces]:
            extra = everything[rows : rows + piece // 2] if piece is not None else []
            result = run(Path(tmp), data, extra, opts.transaction, piece, slices=4)
            results.append(result)
            sizes = ", ".join(f"{s['rows']:,}: {s['us_per_row']}" for s in result["by_size"])
            moves = f"; {result['moves']} moves, p50 {result['move_ms_p50']} ms, max {result['move_ms_max']} ms"
            reads = (
                f"; a device's newest 100 (inbox {result['inbox_rows_at_reads']:,} rows): "
                f"p50 {result['device_page_ms_p50']} ms, p99 {result['device_page_ms_p99']} ms"
            )
            print(
                f"  {result['variant']:>14}: µs a row at {sizes}{moves if result['moves'] else ''}{reads}", flush=True
            )
    direct = results[0]["us_per_row_mean"]
    for result in results:
        result["ratio_to_direct"] = round(result["us_per_row_mean"] / direct, 2)
    ok = all(r["stored"] == rows + r["inbox_rows_at_reads"] for r in results)
    print(json.dumps({"rows": rows, "transaction_rows": opts.transaction, "variants": results, "all_stored": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
