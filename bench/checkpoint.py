"""WAL checkpoints in the committing writer (SQLite's default) against a thread of their own (`WalCheckpointer`).

The same stream of event rows (`bench/event_store.py`'s: 5,000 buildings x 4 detectors, our `events` table as
migrated, the writer's multi-row INSERT) is committed at a fixed rate in fixed-size transactions into two databases
in turn, with the node's settings (WAL, synchronous=NORMAL, 64 MiB page cache):

* **inline**: SQLite checkpoints in the committing connection whenever the WAL holds over 1,000 pages;
* **background**: the node's way since the ninth session: the connection checkpoints only past the backstop
  (`store.engine.BACKSTOP_PAGES`), a `WalCheckpointer` thread copies the WAL back beside it.

For each it prints how long a commit took (what the node's write gate, and so every alert write queued behind it,
waits), the writer's CPU a row, the checkpoint thread's CPU a row and the longest WAL, and the ratios of the two.

    uv run python bench/checkpoint.py [--quick] [--rows 300000] [--rate 8000] [--transaction 1000]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import event_store
from event_store import our_ddl, our_rows, stream

from safecity.store.checkpoint import CHECK_INTERVAL_S, WalCheckpointer
from safecity.store.engine import BACKSTOP_PAGES, JOURNAL_SIZE_LIMIT
from safecity.store.writer import _SQLITE_ROWS_PER_STATEMENT, _sqlite_insert

Statements = list[tuple[str, list[Any]]]


def connect(path: Path, *, background: bool) -> sqlite3.Connection:
    db = event_store.connect(path)
    if background:  # as `engine.create_engine(background_checkpoints=True)` sets its connections
        db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    for ddl in our_ddl():
        db.execute(ddl)
    return db


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run(
    path: Path, batches: list[Statements], rows: int, rate: float, *, background: bool, interval_s: float
) -> dict[str, Any]:
    """Commit the batches at `rate` rows a second; return the figures."""
    db = connect(path, background=background)
    checkpointer = WalCheckpointer(str(path), interval_s=interval_s) if background else None
    if checkpointer is not None:
        asyncio.run(checkpointer.start())
    per_batch = rows / len(batches)
    walls: list[float] = []
    wal_max = 0
    start = time.monotonic()
    cpu0 = time.thread_time()
    for i, statements in enumerate(batches):
        wait = start + i * per_batch / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        t0 = time.perf_counter()
        db.execute("BEGIN")
        for sql, params in statements:
            db.execute(sql, params)
        db.execute("COMMIT")
        walls.append(time.perf_counter() - t0)
        wal_max = max(wal_max, os.path.getsize(f"{path}-wal"))
    writer_cpu = time.thread_time() - cpu0
    behind = time.monotonic() - start - rows / rate
    if checkpointer is not None:
        asyncio.run(checkpointer.stop())
    stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
    db.close()
    walls.sort()
    return {
        "commit_ms_p50": round(quantile(walls, 0.5) * 1e3, 1),
        "commit_ms_p99": round(quantile(walls, 0.99) * 1e3, 1),
        "commit_ms_max": round(walls[-1] * 1e3, 1),
        "writer_us_a_row": round(writer_cpu / rows * 1e6, 1),
        "checkpoint_us_a_row": round(checkpointer.stats.cpu_s / rows * 1e6, 1) if checkpointer is not None else 0.0,
        "wal_mb_max": round(wal_max / 2**20, 1),
        "behind_s": round(max(behind, 0.0), 2),
        "stored": stored,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="150,000 rows (under a minute)")
    ap.add_argument("--rows", type=int, default=None, help="rows a variant (default 300,000; quick 150,000)")
    ap.add_argument("--rate", type=float, default=8000.0, help="rows a second (default 8,000)")
    ap.add_argument("--transaction", type=int, default=1000, help="rows a commit (default 1,000: 8,000/s in 125 ms)")
    ap.add_argument("--interval", type=float, default=None, help="checkpoint thread's pause, s (default: node's)")
    opts = ap.parse_args(argv)
    rows = opts.rows or (150_000 if opts.quick else 300_000)
    tx, step = opts.transaction, _SQLITE_ROWS_PER_STATEMENT
    data = stream(rows, seed=7)
    batches: list[Statements] = []
    for at in range(0, rows, tx):
        chunk = data[at : at + tx]
        parts = [chunk[k : k + step] for k in range(0, len(chunk), step)]
        batches.append([(_sqlite_insert(len(part)), our_rows(part)) for part in parts])
    print(
        f"bench/checkpoint.py: {rows:,} rows a variant at {opts.rate:,.0f}/s in {tx:,}-row commits; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as work:
        for name in ("inline", "background"):
            figures[name] = run(
                Path(work) / f"{name}.db",
                batches,
                rows,
                opts.rate,
                background=name == "background",
                interval_s=opts.interval or CHECK_INTERVAL_S,
            )
            print(f"{name}: {json.dumps(figures[name])}", flush=True)
    inline, background = figures["inline"], figures["background"]
    print("| | commit p50 ms | commit p99 ms | writer µs a row | checkpoint thread µs a row | WAL MiB max |")
    print("|---|---|---|---|---|---|")
    for name in ("inline", "background"):
        f = figures[name]
        print(
            f"| {name} | {f['commit_ms_p50']} | {f['commit_ms_p99']} | {f['writer_us_a_row']} | "
            f"{f['checkpoint_us_a_row']} | {f['wal_mb_max']} |"
        )
    figures["commit_p99_ratio"] = round(inline["commit_ms_p99"] / background["commit_ms_p99"], 2)
    figures["writer_cpu_ratio"] = round(inline["writer_us_a_row"] / background["writer_us_a_row"], 2)
    figures["rows"], figures["rate"], figures["transaction"] = rows, opts.rate, tx
    if inline["stored"] != rows or background["stored"] != rows:
        print(f"error: rows stored {inline['stored']} / {background['stored']}, not {rows}", file=sys.stderr)
        print(json.dumps(figures))
        return 1
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
