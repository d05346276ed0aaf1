"""`safecity demo`: the embedded hub on a synthetic district, with simulated sensors feeding it live."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiomqtt
import structlog
from rich.console import Console
from rich.live import Live
from rich.table import Table

from safecity.kernel.settings import Settings
from safecity.sim.district import CENTER as DISTRICT_CENTER
from safecity.sim.district import build_district
from safecity.sim.traffic import TrafficSimulator, pace

log = structlog.get_logger(__name__)

# The default rule pack's demo watch list (src/safecity/warning/rulepacks/default.yaml): synthetic plates.
DEMO_WATCHED_PLATES = ("沪A12345", "沪B88888", "苏E66666")
# Devices that go silent in the demo, so a `device.offline` shows up within a minute.
SILENT_DEVICES = 3
SILENT_HEARTBEAT_S = 30.0


def demo_devices(count: int) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """The synthetic district, every device to register, and the devices that will talk."""
    district = build_district(devices=count)
    registered = [dict(d) for d in district.devices]
    for device in registered[:SILENT_DEVICES]:
        device["offline_after_s"] = SILENT_HEARTBEAT_S
    talking = registered[SILENT_DEVICES:]
    return district, registered, talking


def _stats_table(runtime: Any, sent: int, started: float) -> Table:
    elapsed = max(time.monotonic() - started, 1e-6)
    metrics = runtime.metrics
    table = Table(title="SafeCity demo — live (合成数据 / synthetic)", expand=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("messages sent by simulator", f"{sent:,} ({sent / elapsed:,.0f}/s)")
    table.add_row("events published", f"{int(metrics.total(metrics.events_out)):,}")
    table.add_row("events stored", f"{runtime.writer.stats.rows_written:,}")
    table.add_row("dead letters", f"{int(metrics.total(metrics.dead_letters)):,}")
    table.add_row("devices offline raised", f"{runtime.health.raised:,}")
    warning = runtime.warning
    if warning is not None:
        status = warning.status()
        table.add_row("alerts raised / updated", f"{status.get('raised', 0):,} / {status.get('updated', 0):,}")
    return table


async def run_demo(
    *,
    rate: float,
    port: int,
    duration: float,
    devices: int,
    mqtt: str | None,
    data_dir: Path,
    console: Console,
    osm: Path | None = None,
    places: Path | None = None,
) -> dict[str, Any]:
    """Run the demo until Ctrl-C or `duration` seconds; returns the final figures. `data_dir` must exist.

    `osm`: route on this OSM extract instead of the synthetic road network; `places`: tag with these real
    boundaries (a GeoJSON FeatureCollection) instead of the synthetic district.
    """
    import uvicorn

    from safecity.api.app import create_app
    from safecity.cli import banner, new_demo_key, summary_table
    from safecity.kernel import logging as sc_logging
    from safecity.runtime import Runtime

    sc_logging.configure("warning", json=False)
    with console.status("Building the synthetic district…"):
        district, registered, talking = demo_devices(devices)
    road_graph = await load_demo_roads(osm, console)
    key = new_demo_key()
    mqtt_host, _, mqtt_port = (mqtt or "").partition(":")
    settings = Settings(
        node_id="demo-hub",
        database={"url": f"sqlite+aiosqlite:///{data_dir / 'safecity.db'}"},
        bus={"kind": "memory"},
        warning={"snapshot": data_dir / "warning.snapshot"},
        mqtt={
            "enabled": bool(mqtt),
            "host": mqtt_host or "127.0.0.1",
            "port": int(mqtt_port or 1883),
            "client_id": f"safecity-demo-{port}",
        },
        security={"bootstrap_admin_key": key},
        http={"port": port},
        roads={"synthetic": osm is None, "synthetic_center": DISTRICT_CENTER},
    )
    runtime = Runtime(settings, tagger=demo_tagger(district, places, console))
    if road_graph is not None:
        runtime.roads.preload(road_graph)
    app = create_app(runtime)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serve_task = asyncio.create_task(server.serve(), name="http")
    while not server.started:
        if serve_task.done():
            await serve_task
            raise RuntimeError(f"the HTTP server did not start on port {port}; is the port in use? try --port")
        await asyncio.sleep(0.05)
    with console.status(f"Registering {len(registered):,} synthetic devices…"):
        await runtime.devices.upsert_many(registered)
        runtime.track_devices()
    runtime.spawn(runtime.roads.ensure_tiles(demo_tiles_path(data_dir, osm)), "road-tiles")
    url = f"http://127.0.0.1:{port}"
    console.print(banner(url, key))
    sim = TrafficSimulator(talking, watched_plates=DEMO_WATCHED_PLATES)
    sent = 0
    started = time.monotonic()
    publisher: aiomqtt.Client | None = None
    if mqtt:
        await runtime.mqtt.connected.wait()  # type: ignore[union-attr]
        publisher = aiomqtt.Client(mqtt_host or "127.0.0.1", int(mqtt_port or 1883))
        await publisher.__aenter__()
    try:
        with Live(_stats_table(runtime, sent, started), console=console, refresh_per_second=2) as live:
            while duration <= 0 or time.monotonic() - started < duration:
                msg = sim.message()
                if publisher is not None:
                    await publisher.publish(msg.topic, msg.payload, qos=0)
                else:
                    await runtime.mqtt_route(msg.topic, msg.payload)
                sent += 1
                await pace(rate, started, sent)
                if sent % max(int(rate // 2), 1) == 0:
                    live.update(_stats_table(runtime, sent, started))
            live.update(_stats_table(runtime, sent, started))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.__aexit__(None, None, None)
        await runtime.writer.flush()
        counts = await runtime.events.count_by_kind()
        dead = await runtime.dead_letter_repo.count_by_reason()
        alerts = (await runtime.alerts.list(limit=10)).items
        server.should_exit = True
        await serve_task
    console.print(summary_table(counts, "Stored events by kind"))
    console.print(alerts_table(alerts))
    console.print(summary_table(dead, "Dead letters by reason (deliberately bad synthetic inputs)"))
    return {"sent": sent, "stored": counts, "dead_letters": dead, "alerts": len(alerts)}


def alerts_table(alerts: list[Any]) -> Table:
    """The latest alerts: rule, severity, place, repeats and the perceive -> warn latency."""
    table = Table(title="Latest alerts (最新预警)")
    for column in ("rule", "headline", "severity", "community", "count", "occurred→fired ms"):
        table.add_column(column)
    for alert in alerts:
        latency = alert.latency_ms.get("occurred_to_fired")
        table.add_row(
            alert.rule_id,
            alert.headline.get("zh", ""),
            str(alert.severity),
            alert.community or "-",
            str(alert.count),
            f"{latency:.1f}" if latency is not None else "-",
        )
    return table


async def publish_mqtt(host: str, port: int, *, rate: float, count: int, devices: int, console: Console) -> int:
    """Publish `count` synthetic messages to a broker at `rate` per second, with a progress bar."""
    from rich.progress import Progress

    _, _, talking = demo_devices(devices)
    sim = TrafficSimulator(talking)
    started = time.monotonic()
    async with aiomqtt.Client(host, port) as client:
        with Progress(console=console) as progress:
            task = progress.add_task("publishing", total=count)
            for sent in range(1, count + 1):
                msg = sim.message()
                await client.publish(msg.topic, msg.payload, qos=1)
                await pace(rate, started, sent)
                if sent % 100 == 0:
                    progress.update(task, completed=sent)
            progress.update(task, completed=count)
    return count


async def load_demo_roads(osm: Path | None, console: Console) -> Any:
    """Import an OSM extract for the demo (in a thread, with a progress message); None: use the synthetic network."""
    if osm is None:
        return None
    from safecity.geo.road import import_osm

    started = time.monotonic()
    with console.status(f"Importing road network from {osm.name}…"):
        graph = await asyncio.to_thread(import_osm, osm)
    console.print(
        f"Road network: {graph.n_nodes:,} nodes, {graph.n_edges:,} edges from {osm.name}"
        f" ({time.monotonic() - started:.1f} s)"
    )
    return graph


def demo_tagger(district: Any, places: Path | None, console: Console) -> Any:
    """The place tagger: real boundaries from `places` when given, else the synthetic district."""
    from safecity.geo.places import LEVELS, TagIndex, load_places

    if places is None:
        return TagIndex(district.places)
    tree = load_places(places)
    counts = ", ".join(f"{len(tree.level(lvl)):,} {lvl}" for lvl in LEVELS if tree.level(lvl))
    console.print(f"Places: {counts} boundaries from {places.name} (events are tagged at these levels)")
    return TagIndex(tree)


def demo_tiles_path(data_dir: Path, osm: Path | None) -> Path:
    """Where the demo caches its road tiles (one file per road source; rebaked when the graph changes)."""
    name = "synthetic" if osm is None else osm.name.split(".")[0]
    return data_dir / f"roads-{name}.mbtiles"
