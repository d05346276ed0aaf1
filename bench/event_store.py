"""Event store cost on SQLite: our `events` table against the Node-RED storing flow's, as the table grows.

Both stores get the same stream of event rows (5,000 buildings x 4 detectors, like the peer benchmark's load), through
Python's sqlite3 with the same settings (WAL, synchronous=NORMAL, the node's 64 MiB page cache) and the same
transactions (2,000 rows by default, the event writer's `commit_max_rows` and the flow's batch; `--transaction N` shows
how the cost a row falls as commits grow):

* **ours**: the `events` table and its indexes as migrated (`safecity.store.tables`: the primary key, time, kind +
  time, building + time, device + time, and the unique (device, message id)), 23 columns, the writer's multi-row
  `INSERT ... ON CONFLICT DO NOTHING` (its `rowcount` read), times as text;
* **peer**: `flow-store.json`'s table (id, device, building, ts, received, payload) with its two indexes
  (building + ts, received) and its `INSERT ... ON CONFLICT DO NOTHING`.

It prints the CPU a row costs in the database (this process's user + system time over the inserts and commits of each
slice of rows, the rows made beforehand) at each table size, and the ratio. The database files are in a temporary
directory, removed at the end.

    uv run python bench/event_store.py [--quick] [--rows 1000000] [--transaction 2000]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from safecity.store.tables import events
from safecity.store.writer import _COLUMNS, _SQLITE_ROWS_PER_STATEMENT, _sqlite_insert

TRANSACTION = 2_000
BUILDINGS = 5_000
PEER_DDL = (
    "CREATE TABLE events (id TEXT PRIMARY KEY, device TEXT NOT NULL, building TEXT NOT NULL, ts REAL,"
    " received REAL NOT NULL, payload TEXT NOT NULL)",
    "CREATE INDEX events_building_ts ON events (building, ts)",
    "CREATE INDEX events_received ON events (received)",
)
PEER_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def our_ddl(skip_led_by: tuple[str, ...] = ()) -> list[str]:
    """Our `events` table and its indexes as migrated, less the indexes whose first column is in `skip_led_by`."""
    dialect = sqlite.dialect()
    ddl = [str(CreateTable(events).compile(dialect=dialect))]
    ddl += [
        str(CreateIndex(index).compile(dialect=dialect))
        for index in sorted(events.indexes, key=lambda i: str(i.name))
        if next(iter(index.columns)).name not in skip_led_by
    ]
    return ddl


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def stream(n: int, seed: int) -> list[tuple[int, int, float, bool, float | None]]:
    """(index, building, event time, alarm, temp) for n events: noise with temps on 60%, like load.py's stream."""
    rnd = random.Random(seed)
    start = time.time()
    out = []
    for i in range(n):
        temp = round(rnd.uniform(15, 45), 1) if rnd.random() < 0.6 else None
        out.append((i, rnd.randrange(BUILDINGS), start + i / 10_000, False, temp))
    return out


def our_rows(chunk: list[tuple[int, int, float, bool, float | None]]) -> list[Any]:
    params: list[Any] = []
    for i, b, ts, alarm, temp in chunk:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1e6) % 1_000_000:06d}"
        data = {"alarm": alarm, **({"temp": temp} if temp is not None else {})}
        hops = f'{{"tagged":"{at}","published":"{at}"}}'
        row = {
            "id": f"01JF{i:022d}",
            "key": "event.smoke",
            "kind": "smoke",
            "device_id": f"b{b}-d{i % 4}",
            "message_id": f"e{i}",
            "occurred_at": at,
            "received_at": at,
            "stored_at": at,
            "town": None,
            "community": f"b{b}",
            "building": f"b{b}",
            "district": None,
            "device_kind": "smoke",
            "lon": None,
            "lat": None,
            "value": temp,
            "state": None,
            "data": json.dumps(data),
            "pseudonyms": "{}",
            "source": "mqtt",
            "tier": "district",
            "correlation_id": f"01JF{i:022d}",
            "hops": hops,
        }
        params.extend(row[c] for c in _COLUMNS)
    return params


def peer_rows(chunk: list[tuple[int, int, float, bool, float | None]]) -> list[tuple[Any, ...]]:
    out = []
    for i, b, ts, alarm, temp in chunk:
        body = {"id": f"e{i}", "device": f"b{b}-d{i % 4}", "building": f"b{b}", "alarm": alarm, "ts": ts}
        if temp is not None:
            body["temp"] = temp
        out.append((f"e{i}", body["device"], body["building"], ts, ts, json.dumps(body)))
    return out


def insert_ours(conn: sqlite3.Connection, statements: list[tuple[str, list[Any]]]) -> None:
    conn.execute("BEGIN")
    for sql, params in statements:
        conn.execute(sql, params)  # no RETURNING: the writer reads the cursor's rowcount
    conn.execute("COMMIT")


def insert_peer(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(PEER_INSERT, rows)
    conn.execute("COMMIT")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200,000 rows (under a minute)")
    ap.add_argument("--rows", type=int, default=None, help="rows in all (default 1,000,000; quick 200,000)")
    ap.add_argument(
        "--transaction", type=int, default=TRANSACTION, help=f"rows a transaction (default {TRANSACTION:,})"
    )
    opts = ap.parse_args(argv)
    rows = opts.rows or (200_000 if opts.quick else 1_000_000)
    tx = opts.transaction
    slice_rows = max(tx, rows // 5)
    work = Path(tempfile.mkdtemp(prefix="bench-event-store-"))
    ours, peer = connect(work / "ours.db"), connect(work / "peer.db")
    for ddl in our_ddl():
        ours.execute(ddl)
    for ddl in PEER_DDL:
        peer.execute(ddl)
    data = stream(rows, seed=7)
    print(
        f"bench/event_store.py: {rows:,} rows in {tx:,}-row transactions, {BUILDINGS:,} buildings; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    print("| rows in the table | ours µs a row | peer µs a row | ratio |\n|---|---|---|---|", flush=True)
    table: list[dict[str, Any]] = []
    for start in range(0, rows, slice_rows):
        part = data[start : start + slice_rows]
        # Alternate the two stores transaction by transaction, so a busy moment of the machine falls on both.
        spent = {"ours": 0.0, "peer": 0.0}
        for at in range(0, len(part), tx):
            chunk = part[at : at + tx]
            # The rows are made before the clock starts: what is timed is the database's work only.
            step = _SQLITE_ROWS_PER_STATEMENT
            statements = [
                (_sqlite_insert(len(chunk[k : k + step])), our_rows(chunk[k : k + step]))
                for k in range(0, len(chunk), step)
            ]
            peer_params = peer_rows(chunk)
            c0 = cpu_s()
            insert_ours(ours, statements)
            c1 = cpu_s()
            insert_peer(peer, peer_params)
            spent["ours"] += c1 - c0
            spent["peer"] += cpu_s() - c1
        figures = {k: v / len(part) * 1e6 for k, v in spent.items()}
        size = start + len(part)
        row = {
            "rows": size,
            "ours_us": round(figures["ours"], 1),
            "peer_us": round(figures["peer"], 1),
            "ratio": round(figures["ours"] / figures["peer"], 2),
        }
        table.append(row)
        print(f"| {size:,} | {row['ours_us']} | {row['peer_us']} | {row['ratio']} |", flush=True)
    counts = [conn.execute("SELECT count(*) FROM events").fetchone()[0] for conn in (ours, peer)]
    ours.close()
    peer.close()
    for file in work.iterdir():
        file.unlink()
    work.rmdir()
    last = table[-1]
    print(
        json.dumps(
            {
                "rows": rows,
                "transaction_rows": tx,
                "stored": {"ours": counts[0], "peer": counts[1]},
                "ours_us_per_row_last": last["ours_us"],
                "peer_us_per_row_last": last["peer_us"],
                "ratio_last": last["ratio"],
                "by_size": table,
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        ),
        flush=True,
    )
    return 0 if counts[0] == counts[1] == rows else 1


if __name__ == "__main__":
    sys.exit(main())
