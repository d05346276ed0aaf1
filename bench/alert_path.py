"""In-process CPU per delivered alert: a `Runtime` on SQLite, no MQTT broker or HTTP server in the way.

Events go through `Runtime.mqtt_route` (topic routing, pipeline, bus, store writer, rule engine) at a fixed rate; a live
WebSocket client's queue is drained and JSON-encoded as the API's socket would; one webhook subscription posts to a
receiver in another process (so its CPU is not ours). Two phases of the same events on distinct devices: below the
high-temp threshold (no alert), then above it (one alert each). CPU is this process's utime + stime (every thread:
the event loop, aiosqlite's) over each phase until everything is delivered, stored and stamped; the difference over
the alerts is the CPU an alert costs.

    uv run python bench/alert_path.py [--alerts 1000] [--rate 100] [--database-url URL]

The last line is one JSON object (`alert_cpu_ms`, `event_cpu_us`, the writer's counters, checks, load average).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "src" / "safecity" / "warning" / "rulepacks" / "nodered_peer.yaml"
BUILDINGS = 50

RECEIVER = """
import asyncio, signal, sys
count = 0
async def handle(reader, writer):
    global count
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            count += 1
            writer.write(b"HTTP/1.1 204 No Content\\r\\ncontent-length: 0\\r\\n\\r\\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    print(count, flush=True)
asyncio.run(main())
"""


def cpu_s() -> float:
    """utime + stime of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def feed(rt: Any, prefix: str, temp: float, n: int, rate: float) -> None:
    """`n` smoke events at `rate`, each from its own device, with `temp` (above 70: one high-temp alert each)."""
    start = time.monotonic()
    for i in range(n):
        b = f"{prefix}-b{i % BUILDINGS}"
        device = f"{b}-d{i}"
        body = {
            "id": f"{prefix}-e{i}",
            "device": device,
            "building": b,
            "alarm": False,
            "ts": time.time(),
            "temp": temp,
        }
        await rt.mqtt_route(f"safecity/{b}/smoke/{device}", orjson.dumps(body))
        if (wait := start + (i + 1) / rate - time.monotonic()) > 0:
            await asyncio.sleep(wait)


async def settle(rt: Any) -> None:
    """Until everything is handled, stored, delivered and its marks and stamps committed."""
    await rt.bus.drain()
    await rt.writer.flush()
    for _ in range(200):
        await asyncio.sleep(0.05)
        if not rt.notify.dispatcher.busy_lanes() and not rt.notify.dispatcher.handed() and not rt.notify.writer.queued:
            break
    await rt.notify.writer.flush()
    await asyncio.sleep(0.5)


async def run(opts: argparse.Namespace, port: int) -> dict[str, Any]:
    from safecity.kernel import logging as sc_logging
    from safecity.kernel.settings import Settings
    from safecity.runtime import Runtime
    from safecity.warning.notify.subscriptions import Channel, SubscriptionCreate, SubscriptionFilter

    sc_logging.configure("warning", json=True)
    url = opts.database_url or f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='bench-alert-path-')}/a.db"
    settings = Settings(
        database={"url": url},
        log_level="warning",
        warning={"rules": str(RULES)},
        notify={
            "allow_loopback": True,
            "webhook_allow_hosts": ["127.0.0.1"],
            **({"commit_interval_ms": opts.commit_interval_ms} if opts.commit_interval_ms is not None else {}),
        },
    )
    rt = Runtime(settings)
    await rt.start()
    n = opts.alerts
    devices = [
        {"id": f"{p}-b{b}-d{d}", "kind": "smoke", "community": f"{p}-b{b}", "building": f"{p}-b{b}"}
        for p in ("warm", "base", "hot")
        for b in range(BUILDINGS)
        for d in range(b, max(n, 200), BUILDINGS)
    ]
    await rt.devices.upsert_many(devices)
    await rt.notify.create(
        SubscriptionCreate(name="hook", channel=Channel.WEBHOOK, target=f"http://127.0.0.1:{port}/h")
    )
    client = rt.notify.hub.connect(SubscriptionFilter())
    pushed = 0

    async def websocket() -> None:
        nonlocal pushed
        while True:
            orjson.dumps(await client.queue.get())
            pushed += 1

    drain = asyncio.create_task(websocket())
    out: dict[str, Any] = {"alerts": n, "rate_per_s": opts.rate, "database": url.split(":", 1)[0]}
    try:
        await feed(rt, "warm", 80.0, 200, opts.rate)
        await settle(rt)
        phases: dict[str, dict[str, float]] = {}
        for name, temp in (("base", 50.0), ("hot", 80.0)):
            c0, p0, d0 = cpu_s(), pushed, rt.notify.dispatcher.stats.delivered
            await feed(rt, name, temp, n, opts.rate)
            await settle(rt)
            phases[name] = {
                "cpu_s": cpu_s() - c0,
                "websocket": pushed - p0,
                "webhook": rt.notify.dispatcher.stats.delivered - d0,
            }
        out["phases"] = phases
        out["alert_cpu_ms"] = round((phases["hot"]["cpu_s"] - phases["base"]["cpu_s"]) / n * 1000, 3)
        out["event_cpu_us"] = round(phases["base"]["cpu_s"] / n * 1e6, 1)
        page = await rt.alerts.list(limit=1000)
        out["stored_alerts"] = page.total
        out["stamped_delivered_of_last_page"] = [sum(1 for a in page.items if "delivered" in a.hops), len(page.items)]
        writer = vars(rt.notify.writer.stats)
        out["writer"] = {k: v for k, v in writer.items() if k != "last_commit_sizes"}
        out["claims"] = rt.notify.dispatcher.stats.claims
    finally:
        drain.cancel()
        await rt.stop()
    out["checks"] = {
        "every_alert_pushed": phases["hot"]["websocket"] == n,
        "every_alert_stored": out["stored_alerts"] == n + 200,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--alerts", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="events (and alerts) per second")
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--commit-interval-ms", type=int, default=None, help="the alert path's group commit window")
    opts = ap.parse_args(argv)
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    receiver.stdout.readline()
    try:
        out = asyncio.run(run(opts, port))
    finally:
        receiver.terminate()
        received = (receiver.communicate(timeout=10)[0] or "0").strip().splitlines()
    out["webhooks_received"] = int(received[-1]) if received else None
    out["checks"]["every_alert_posted_once"] = out["webhooks_received"] == opts.alerts + 200
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
