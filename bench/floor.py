"""The Python floor: the Node-RED storing flow's work in the leanest Python this stack allows, beside Node-RED.

How fast could any redesign of our hot path in Python be on this machine? This benchmark answers it by measuring a
node that does only what the equal-work contract asks and nothing SafeCity does besides: no envelope, no tagging, no
bus, no rule engine, no live feed, no health, no metrics. One process, one asyncio loop (like our node):

* gmqtt (our MQTT client) subscribed to `safecity/+/smoke/+` at QoS 0, every message handled in its callback;
* `orjson.loads` of the payload, the two contract rules as plain dicts (the flow's function node, line for line:
  smoke pair with its 60 s window and 300 s cooldown, high temp), each alert published at once to `safecity/alerts`;
* every event and every alert stored in SQLite by a thread of its own (sqlite3, WAL, synchronous=NORMAL), one
  transaction per 100 ms or 2,000 rows, as the flow does.

Each table a node of its own on a broker of its own: `flow` is the flow's table (six columns, its two indexes,
`executemany`); `ours` is our `events` table as migrated (23 columns, six B-trees), with our row shape (ids from
`kernel.ids.new_id`, times as the text our writer stores, data and hops as JSON) and our writer's multi-row `INSERT
... ON CONFLICT DO NOTHING`; `ours-append` is that table without the three indexes a commit's rows scatter over
(device + time, building + time, the unique device + message id), the other three taking rows at their end;
`ours-staged` is our table whose commits go to a staging table with no index, moved into `events` every 5 s in one
transaction, sorted by device and time (how an LSM tree keeps scattered indexes cheap). Node-RED storing (`run-peer.sh
--store`) runs in the same run, and the kit's own `load.py` (unmodified, a subprocess) measures each at the same fixed
rates and with `--find-max`.

A floor node that cannot reach 1.5x Node-RED storing shows that the issue's ratio is out of reach of any design of
ours in CPython on this machine, however lean; the gap between `flow` and `ours` is what our table costs.

    uv run python bench/floor.py [--quick] [--rates 5000,10000] [--no-find-max] [--tables flow,ours]

`--quick` (under a minute) runs 4 s steps at 10,000/s and at 1.5x Node-RED storing's recorded highest clean rate, no
ladders, and uses Node-RED storing's recorded figure instead of measuring it. The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from alerts import NodeRed, peer_dir, recorded_node_red, run_kit_load, start_mosquitto, wait_port
from event_store import PEER_DDL, PEER_INSERT, our_ddl

from safecity.store.writer import _COLUMNS, _SQLITE_ROWS_PER_STATEMENT, _sqlite_insert

WINDOW_S = 60.0
COOLDOWN_S = 300.0
TEMP_LIMIT = 70.0
SWEEP_S = 5.0
MAX_BUILDINGS = 100_000
FLUSH_S = 0.1
BATCH = 2_000
RATIO_BUDGET = 1.5
LOAD_TIMEOUT_S = 1500  # one load.py run: a fixed step, or a whole ladder (load.py stops its own after 900 s)
# `ours-append` leaves out the indexes led by these columns: a commit's rows scatter over them (device + time,
# building + time, the unique device + message id); the others (id, time, kind + time) take rows at their end.
SCATTERED = ("device_id", "building")
TABLES = ("flow", "ours", "ours-append", "ours-staged")
STORE_BACKLOG = 5  # batches handed to the store thread and not yet written, at most (0.5 s at 100 ms a batch)
MERGE_S = 5.0  # `ours-staged`: seconds between two merges of the staging table into `events`

ALERTS_DDL = (
    "CREATE TABLE IF NOT EXISTS floor_alerts (trigger_id TEXT PRIMARY KEY, building TEXT NOT NULL,"
    " ts_sent REAL NOT NULL, payload TEXT NOT NULL)"
)


# ---------------------------------------------------------------------------------------------------------------
# The floor node (a child process: `floor.py --serve`)


class Rules:
    """The flow's function node: smoke pair and high temp, with its bounded window state."""

    def __init__(self) -> None:
        self.win: dict[str, dict[str, float]] = {}
        self.cool: dict[str, float] = {}
        self.hw = 0.0
        self.swept = 0.0

    def fire(self, p: dict[str, Any]) -> list[tuple[str, str]]:
        """The (building, trigger id) of each alert this event raises."""
        building = p.get("building")
        if not isinstance(building, str):
            return []
        alerts: list[tuple[str, str]] = []
        temp = p.get("temp")
        if isinstance(temp, int | float) and not isinstance(temp, bool) and temp > TEMP_LIMIT:
            alerts.append((building, p["id"]))
        ts = p.get("ts")
        device = p.get("device")
        if p.get("alarm") is True and isinstance(device, str) and isinstance(ts, int | float):
            self.hw = max(self.hw, ts)
            if self.hw - ts <= WINDOW_S:
                devices = self.win.setdefault(building, {})
                paired = False
                for other, t in list(devices.items()):
                    if self.hw - t > WINDOW_S:
                        del devices[other]
                    elif other != device and abs(ts - t) <= WINDOW_S:
                        paired = True
                seen = devices.get(device)
                if seen is None or ts > seen:
                    devices[device] = ts
                if paired:
                    last = self.cool.get(building)
                    if last is None or abs(ts - last) >= COOLDOWN_S:
                        self.cool[building] = ts
                        alerts.append((building, p["id"]))
            if self.hw - self.swept >= SWEEP_S or len(self.win) > MAX_BUILDINGS:
                self.sweep()
        return alerts

    def sweep(self) -> None:
        self.swept = self.hw
        for building, devices in list(self.win.items()):
            for device, t in list(devices.items()):
                if self.hw - t > WINDOW_S:
                    del devices[device]
            if not devices:
                del self.win[building]
        for building, t in list(self.cool.items()):
            if self.hw - t >= COOLDOWN_S:
                del self.cool[building]
        while len(self.win) > MAX_BUILDINGS:
            del self.win[next(iter(self.win))]
        while len(self.cool) > MAX_BUILDINGS:
            del self.cool[next(iter(self.cool))]


class Store:
    """Every event and alert, written by a thread of its own in one transaction per 100 ms or 2,000 rows."""

    def __init__(self, path: Path, table: str) -> None:
        self.table = table
        self.events: list[Any] = []
        self.alerts: list[tuple[str, str, float, str]] = []
        # Bounded, as our writer's queue is: a store that falls behind stops the loop (Node-RED stores on its one
        # thread), so a rate the store cannot keep shows in the alerts' latency, not in a backlog left in memory.
        self.queue: queue.Queue[tuple[list[Any], list[Any]] | None] = queue.Queue(maxsize=STORE_BACKLOG)
        self.path = path
        self.thread = threading.Thread(target=self._write, name="floor-store", daemon=True)
        self.written = 0
        self.thread_cpu_s = 0.0
        self.merges: list[float] = []  # ms each merge held the database (`ours-staged`)
        self.failed: BaseException | None = None
        self.thread.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
            db.execute(f"PRAGMA {pragma}")
        if self.table == "flow":
            ddl = PEER_DDL
        else:
            ddl = our_ddl(SCATTERED if self.table == "ours-append" else ())
            if self.table == "ours-staged":
                # No key, no index: each commit appends; the merge sorts what it moves.
                ddl.append("CREATE TABLE events_stage AS SELECT * FROM events WHERE 0")
        for statement in ddl:
            db.execute(statement)
        db.execute(ALERTS_DDL)
        return db

    def _write(self) -> None:
        try:
            db = self._connect()
            staged = self.table == "ours-staged"
            merged_at = time.monotonic()
            while (item := self.queue.get()) is not None:
                events, alerts = item
                db.execute("BEGIN")
                if self.table == "flow":
                    db.executemany(PEER_INSERT, events)
                else:
                    for start in range(0, len(events), _SQLITE_ROWS_PER_STATEMENT):
                        chunk = events[start : start + _SQLITE_ROWS_PER_STATEMENT]
                        sql = _sqlite_insert(len(chunk))
                        if staged:
                            sql = sql.replace("INSERT INTO events ", "INSERT INTO events_stage ", 1)
                        db.execute(sql, [v for row in chunk for v in row])
                db.executemany("INSERT INTO floor_alerts VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", alerts)
                db.execute("COMMIT")
                self.written += len(events)
                if staged and time.monotonic() - merged_at >= MERGE_S:
                    self._merge(db)
                    merged_at = time.monotonic()
            if staged:
                self._merge(db)
            db.close()
            self.thread_cpu_s = time.thread_time()
        except BaseException as err:
            self.failed = err
            raise

    def _merge(self, db: sqlite3.Connection) -> None:
        """Move the staged rows into `events` in one transaction, in index order: the scattered indexes then take
        them page by page instead of a page a row."""
        started = time.perf_counter()
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO events SELECT * FROM events_stage WHERE true ORDER BY device_id, occurred_at"
            " ON CONFLICT DO NOTHING"
        )
        db.execute("DELETE FROM events_stage")
        db.execute("COMMIT")
        self.merges.append(round((time.perf_counter() - started) * 1000, 1))

    def flush(self) -> None:
        if self.events or self.alerts:
            self.queue.put((self.events, self.alerts))
            self.events = []
            self.alerts = []

    def close(self) -> None:
        self.flush()
        self.queue.put(None)
        self.thread.join()


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


async def serve(port: int, db_path: Path, table: str, stats_path: Path) -> None:
    import gmqtt

    from safecity.kernel.ids import new_id
    from safecity.store.driver_thread import sqlite_time

    def sqlite_text(ts: float) -> str:
        return sqlite_time(datetime.fromtimestamp(ts, UTC))  # the text our writer stores

    rules = Rules()
    store = Store(db_path, table)
    received = 0
    connected = asyncio.Event()
    client = gmqtt.Client(f"floor-{table}-{os.getpid()}", clean_session=True)
    flow = table == "flow"
    loads = orjson.loads
    dumps = orjson.dumps
    publish = client.publish

    def on_message(_client: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        nonlocal received
        received += 1
        now = time.time()
        try:
            p = loads(payload)
        except orjson.JSONDecodeError:
            return 0
        if not isinstance(p, dict):
            return 0
        for building, trigger in rules.fire(p):
            sent = time.time()
            body = dumps({"building": building, "trigger_id": trigger, "ts_sent": sent})
            publish("safecity/alerts", body, qos=0)
            store.alerts.append((str(trigger), building, sent, body.decode()))
        ts = p.get("ts")
        if flow:
            flow_row = (str(p.get("id")), str(p.get("device")), str(p.get("building")), ts, now, payload.decode())
            store.events.append(flow_row)
        else:
            # Our row: 23 columns in the table's order, as `row_from_envelope` and the writer make them.
            at = sqlite_text(ts) if isinstance(ts, int | float) else sqlite_text(now)
            got = sqlite_text(now)
            event_id = new_id()
            temp = p.get("temp")
            data = dumps({"alarm": p.get("alarm"), "temp": temp}).decode()
            hops = dumps({"received": got, "tagged": got, "published": got}).decode()
            row = {
                "id": event_id,
                "key": "event.smoke",
                "kind": "smoke",
                "device_id": p.get("device"),
                "message_id": p.get("id"),
                "occurred_at": at,
                "received_at": got,
                "stored_at": got,
                "town": None,
                "community": None,
                "building": p.get("building"),
                "district": None,
                "device_kind": "smoke",
                "lon": None,
                "lat": None,
                "value": temp,
                "state": "alarm" if p.get("alarm") else "normal",
                "data": data,
                "pseudonyms": "{}",
                "source": "mqtt",
                "tier": "district",
                "correlation_id": event_id,
                "hops": hops,
            }
            store.events.append(tuple(row[c] for c in _COLUMNS))
        if len(store.events) >= BATCH:
            store.flush()
        return 0

    client.on_connect = lambda *_: (client.subscribe("safecity/+/smoke/+", qos=0), connected.set())
    client.on_message = on_message
    await client.connect("127.0.0.1", port)
    await connected.wait()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    write_json(stats_path, {"ready": True})
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_S):
                await stop.wait()
        store.flush()
        if store.failed is not None:
            raise store.failed
    await client.disconnect()
    store.close()
    loop_cpu_s = time.thread_time()
    write_json(
        stats_path,
        {
            "received": received,
            "written": store.written,
            # CPU of the two threads over the whole run, µs an event received (the ladder's overload steps included)
            "loop_us_per_event": round(loop_cpu_s / max(received, 1) * 1e6, 1),
            "store_us_per_event": round(store.thread_cpu_s / max(received, 1) * 1e6, 1),
            "merge_ms": {"count": len(store.merges), "max": max(store.merges, default=None)},
        },
    )


# ---------------------------------------------------------------------------------------------------------------
# The run


class FloorNode:
    """A floor node in a process of its own, on a broker of its own."""

    def __init__(self, kit: Path, workdir: Path, table: str) -> None:
        self.table = table
        self.kit = kit
        self.broker, self.port = start_mosquitto(kit, workdir, f"floor-{table}")
        self.db = workdir / f"floor-{table}.db"
        self.stats = workdir / f"floor-{table}.json"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.port), str(self.db), table, str(self.stats)],
            stdout=(workdir / f"floor-{table}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self.stats.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the floor node ({table}) did not start: see {workdir}/floor-{table}.log")
            time.sleep(0.05)

    def stop(self) -> dict[str, Any]:
        """Stop the node (it writes what it has); return received, written and the rows in its table."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        stats = json.loads(self.stats.read_text())
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            stats["rows"] = db.execute("SELECT count(*) FROM events").fetchone()[0]
        self.broker.terminate()
        self.broker.wait(5)
        return stats


def measure(
    name: str, port: int, watch: dict[str, int], kit: Path, opts: argparse.Namespace, rates: list[float]
) -> dict[str, Any]:
    """Fixed-rate steps, then the ladder unless --no-find-max: rows and the highest clean rate."""
    rows = []
    for rate in rates:
        row = run_kit_load(kit, port, name, watch, opts, [f"--rate={rate}"], LOAD_TIMEOUT_S)
        row = row or {"rate_per_s": None, "error": "no result"}
        res = row.get("resources") or {}
        print(
            f"{name:>18} {rate:>8,.0f}/s: achieved {row.get('rate_per_s')}, p50 {row.get('p50_ms')} ms, p99 "
            f"{row.get('p99_ms')} ms, missed {row.get('missed')}, clean {row.get('clean')}, CPU "
            f"{(res.get(name) or {}).get('cpu_pct')}%",
            flush=True,
        )
        rows.append(row)
    out: dict[str, Any] = {"rows": rows}
    clean = [r["rate_per_s"] for r in rows if r.get("clean")]
    out["max_clean_rate_per_s"] = max(clean, default=None)
    if not opts.no_find_max:
        ladder_args = ["--find-max", f"--start-rate={opts.start_rate}"]
        ladder = run_kit_load(kit, port, name, watch, opts, ladder_args, LOAD_TIMEOUT_S)
        out["find_max"] = ladder
        if ladder is not None and ladder.get("max_clean_rate_per_s") is not None:
            out["max_clean_rate_per_s"] = max(out["max_clean_rate_per_s"] or 0, ladder["max_clean_rate_per_s"])
        print(f"{name:>18} highest clean rate: {out['max_clean_rate_per_s']}", flush=True)
    return out


def measure_all(
    opts: argparse.Namespace, kit: Path, workdir: Path, rates: list[float], tables: list[str]
) -> dict[str, Any]:
    """Node-RED storing, then each floor node, one after the other, each on its own broker."""
    result: dict[str, Any] = {}
    if not opts.no_node_red:
        node_red = NodeRed(kit, workdir, ready_timeout_s=90)
        try:
            if not node_red.wait_ready(120) or node_red.pid is None:
                raise SystemExit(f"Node-RED did not start: see {node_red.log}")
            watch = {"node-red": node_red.pid, "mosquitto": node_red.broker.pid}
            result["node_red_store"] = measure("node-red", node_red.port, watch, kit, opts, rates)
            result["node_red_stored"] = node_red.stored()
        finally:
            node_red.stop()
    for table in tables:
        key = "floor_" + table.replace("-", "_")
        node = FloorNode(kit, workdir, table)
        try:
            wait_port(node.port, 5)
            watch = {f"floor-{table}": node.proc.pid, "mosquitto": node.broker.pid}
            result[key] = measure(f"floor-{table}", node.port, watch, kit, opts, rates)
        finally:
            stats = node.stop()
        result[key]["stored"] = stats
        print(f"{'floor-' + table:>18} stored {stats['rows']:,} of {stats['received']:,} received", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 s steps at 10,000/s and the budget rate, no ladders")
    ap.add_argument("--rates", default=None, help="fixed rates, events/s (default 5000,10000)")
    ap.add_argument("--no-find-max", action="store_true")
    ap.add_argument("--no-node-red", action="store_true", help="skip Node-RED (its recorded figure is used)")
    ap.add_argument("--tables", default=",".join(TABLES), help=f"floor nodes to run, of {', '.join(TABLES)}")
    ap.add_argument("--start-rate", type=float, default=5000.0, help="first rate of each ladder")
    ap.add_argument("--serve", nargs=4, metavar=("PORT", "DB", "TABLE", "STATS"), help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.serve:
        port, db, table, stats = opts.serve
        asyncio.run(serve(int(port), Path(db), table, Path(stats)))
        return 0
    opts.duration, opts.warmup = (4.0, 0.5) if opts.quick else (20.0, 2.0)
    opts.pairs, opts.temps, opts.buildings = (100, 40, 2000) if opts.quick else (300, 100, 5000)
    opts.no_find_max = opts.no_find_max or opts.quick
    opts.no_node_red = opts.no_node_red or opts.quick  # Node-RED's start alone takes 20 s: its recorded figure
    kit = peer_dir()
    if not (kit / "load.py").is_file():
        print(json.dumps({"error": f"Node-RED kit not found at {kit}"}))
        return 2
    recorded = recorded_node_red(kit)["max_clean"]
    budget_rate = round(RATIO_BUDGET * recorded)
    rates = [float(r) for r in (opts.rates or (f"10000,{budget_rate}" if opts.quick else "5000,10000")).split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    began = time.monotonic()
    print(
        f"bench/floor.py: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; steps {opts.duration:g}s; "
        f"rates {rates}; workdir {workdir}",
        flush=True,
    )
    tables = opts.tables.split(",")
    if not set(tables) <= set(TABLES):
        raise SystemExit(f"--tables: choose from {', '.join(TABLES)}")
    try:
        result = measure_all(opts, kit, workdir, rates, tables)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the databases take gigabytes after the ladders
    nr = (result.get("node_red_store") or {}).get("max_clean_rate_per_s")
    source = "measured" if nr else "recorded"
    nr = nr or recorded
    summary: dict[str, Any] = {
        "node_red_store_max_clean_rate_per_s": nr,
        "node_red_source": source,
        "ratio_budget": RATIO_BUDGET,
    }
    for table in tables:
        key = "floor_" + table.replace("-", "_")
        best = result[key]["max_clean_rate_per_s"]
        summary[f"{key}_max_clean_rate_per_s"] = best
        summary[f"{key}_ratio_to_node_red_store"] = round(best / nr, 2) if best and nr else None
        stored = result[key]["stored"]
        summary[f"{key}_every_event_stored"] = stored["rows"] == stored["received"]
        summary[f"{key}_us_per_event"] = {
            "loop": stored["loop_us_per_event"],
            "store": stored["store_us_per_event"],
        }
        if stored["merge_ms"]["count"]:
            summary[f"{key}_merge_ms"] = stored["merge_ms"]
        cpu = {
            r.get("target_rate_per_s"): ((r.get("resources") or {}).get(f"floor-{table}") or {}).get("cpu_pct")
            for r in result[key]["rows"]
        }
        summary[f"{key}_cpu_pct"] = cpu
    if "node_red_store" in result:
        summary["node_red_cpu_pct"] = {
            r.get("target_rate_per_s"): ((r.get("resources") or {}).get("node-red") or {}).get("cpu_pct")
            for r in result["node_red_store"]["rows"]
        }
    summary["steps"] = {
        name: [
            {k: r.get(k) for k in ("target_rate_per_s", "rate_per_s", "p50_ms", "p99_ms", "missed", "clean")}
            for r in part["rows"]
        ]
        for name, part in result.items()
        if isinstance(part, dict) and "rows" in part
    }
    summary["wall_s"] = round(time.monotonic() - began, 1)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
