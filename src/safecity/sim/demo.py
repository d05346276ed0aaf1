"""`safecity demo`: the embedded hub on a synthetic district, with simulated sensors feeding it live."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import structlog
import uvicorn
from rich.console import Console
from rich.live import Live

from safecity.kernel.settings import Settings
from safecity.sim.console import alerts_table, banner, stats_table, summary_table
from safecity.sim.dispatch import DispatchSimulator
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


class DemoDataError(Exception):
    """The demo's data directory cannot be started clean safely (it holds another node's database)."""


# A demo-made data dir holds this file: its admin key (mode 0600), reused by `--keep` so admin keys do not pile up.
DEMO_KEY_FILE = "demo.key"
_DEMO_FILES = ("safecity.db", "safecity.db-wal", "safecity.db-shm", "warning.snapshot", DEMO_KEY_FILE)


def new_demo_key() -> str:
    """A fresh admin key for one demo run."""
    return "sc_demo_" + secrets.token_urlsafe(24)


def prepare_demo_data(settings: Settings, *, keep: bool) -> str:
    """Make the data dir ready for a demo run and return its admin key.

    Without `keep` the earlier run's database, snapshot and key are removed (road tiles, a cache, stay), so a run
    starts clean; only a data dir the demo made itself is cleaned. With `keep` the data and the admin key stay.
    """
    from safecity.store.locate import sqlite_path

    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / DEMO_KEY_FILE
    if keep:
        if key_file.is_file():
            return key_file.read_text(encoding="utf-8").strip()
    else:
        database = sqlite_path(settings.database.url)
        if database is None:
            raise DemoDataError(
                f"the demo starts clean only on its own SQLite database, not {settings.database.url.split('@')[-1]}: "
                "pass --keep to run on it, or unset database.url"
            )
        if database.exists() and not (database.parent / DEMO_KEY_FILE).is_file():
            raise DemoDataError(
                f"{database} was not made by the demo, so it is not wiped: pass --keep to run the demo on it, "
                "or --data-dir DIR to use another directory"
            )
        for name in _DEMO_FILES:
            (database.parent / name).unlink(missing_ok=True)
            (data_dir / name).unlink(missing_ok=True)
    key = new_demo_key()
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n", encoding="utf-8")
    return key


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the demo stops in its own order (intake first, server last)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (once; a second Ctrl-C interrupts at once). Outside the main thread: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def first(sig: signal.Signals) -> None:
        stop.set()
        loop.remove_signal_handler(sig)

    for sig in signals:
        loop.add_signal_handler(sig, first, sig)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def run_demo(
    *,
    rate: float,
    port: int,
    duration: float,
    devices: int,
    mqtt: str | None,
    data_dir: Path | None = None,
    console: Console,
    osm: Path | None = None,
    places: Path | None = None,
    settings: Settings | None = None,
    keep: bool = False,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Run the demo until Ctrl-C, `stop` is set or `duration` seconds pass; returns the final figures.

    The data lives where `settings` say (`data_dir`, `database.url`: the same resolution as every other command);
    `data_dir` overrides the settings' directory. `keep`: keep the earlier run's data (else it starts clean).
    `osm`: route on this OSM extract instead of the synthetic road network; `places`: tag with these real
    boundaries (a GeoJSON FeatureCollection) instead of the synthetic district.

    Stopping is orderly: the simulator (and MQTT publisher) stop first, then the node drains its bus, flushes the
    store and closes (the HTTP server's lifespan), and only then is the summary read and printed.
    """
    from safecity.kernel import logging as sc_logging
    from safecity.runtime import Runtime

    base = Settings(data_dir=data_dir) if data_dir is not None else settings or Settings()
    sc_logging.configure("warning", json=False)
    key = prepare_demo_data(base, keep=keep)
    with console.status("Building the synthetic district…"):
        district, registered, talking = demo_devices(devices)
    road_graph = await load_demo_roads(osm, console)
    mqtt_host, _, mqtt_port = (mqtt or "").partition(":")
    demo_dir = base.data_dir.expanduser().resolve()
    settings = Settings(
        node_id="demo-hub",
        data_dir=demo_dir,
        database={"url": base.database.url},
        bus={"kind": "memory"},
        warning={"snapshot": demo_dir / "warning.snapshot"},
        mqtt={
            "enabled": bool(mqtt),
            "host": mqtt_host or "127.0.0.1",
            "port": int(mqtt_port or 1883),
            "client_id": f"safecity-demo-{port}",
        },
        security={"bootstrap_admin_key": key, "pseudonym_key": base.security.pseudonym_key.get_secret_value()},
        http={"port": port},
        roads={"synthetic": osm is None, "synthetic_center": DISTRICT_CENTER},
    )
    runtime = Runtime(settings, tagger=demo_tagger(district, places, console))
    if road_graph is not None:
        runtime.roads.preload(road_graph)
    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        sent, cancelled = await _serve_and_simulate(
            runtime,
            registered,
            talking,
            rate=rate,
            port=port,
            duration=duration,
            mqtt=mqtt,
            console=console,
            osm=osm,
            key=key,
            stop=stop,
        )
    # The node is closed (bus drained, store flushed): the summary is read from what was stored.
    try:
        counts = await runtime.events.count_by_kind()
        dead = await runtime.dead_letter_repo.count_by_reason()
        alerts = (await runtime.alerts.list(limit=10)).items
    finally:
        await runtime.engine.dispose()
    console.print(summary_table(counts, "Stored events by kind"))
    console.print(alerts_table(alerts))
    console.print(summary_table(dead, "Dead letters by reason (deliberately bad synthetic inputs)"))
    if cancelled:
        raise asyncio.CancelledError
    return {"sent": sent, "stored": counts, "dead_letters": dead, "alerts": len(alerts)}


async def _serve_and_simulate(
    runtime: Any,
    registered: list[dict[str, Any]],
    talking: list[dict[str, Any]],
    *,
    rate: float,
    port: int,
    duration: float,
    mqtt: str | None,
    console: Console,
    osm: Path | None,
    key: str,
    stop: asyncio.Event,
) -> tuple[int, bool]:
    """Start the node and its HTTP server, feed it until `stop` or `duration`, then stop both in order.

    Returns the messages sent and whether this task was cancelled (the caller re-raises after its summary).
    """
    from safecity.api.app import create_app
    from safecity.web.static import install_ui, ui_built

    app = create_app(runtime.api_services())
    if ui_built():
        install_ui(app)  # `safecity demo` builds it first; a demo started from code runs without a page if unbuilt
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serve_task = asyncio.create_task(server.serve(), name="http")
    while not server.started:
        if serve_task.done():
            await serve_task
            raise RuntimeError(f"the HTTP server did not start on port {port}; is the port in use? try --port")
        await asyncio.sleep(0.05)
    sent = 0
    cancelled = False
    publisher: aiomqtt.Client | None = None
    try:
        with console.status(f"Registering {len(registered):,} synthetic devices…"):
            await runtime.devices.upsert_many(registered)
            runtime.device_health.track_devices()
        tiles = demo_tiles_path(runtime.settings.data_dir, osm)
        runtime.spawn(lambda: runtime.roads.ensure_tiles(tiles), "road-tiles", restart=False)
        runtime.spawn(DispatchSimulator(runtime).run, "sim-dispatch", restart=False)
        url = f"http://127.0.0.1:{port}"
        console.print(banner(url, key))
        # Unwrapped, so the whole address can be copied (or clicked) from any terminal width.
        console.print(f"Command centre (opens signed in): {url}/#key={key}", soft_wrap=True, highlight=False)
        sim = TrafficSimulator(talking, watched_plates=DEMO_WATCHED_PLATES)
        if rate < sim.min_rate():
            console.print(
                f"[yellow]At {rate:g} messages/s the {len(talking):,} devices cannot all report within their "
                f"heartbeat deadlines (that needs {sim.min_rate():,.0f}/s): some will go offline. Raise --rate or "
                "lower --devices.[/yellow]"
            )
        started = time.monotonic()
        if mqtt:
            mqtt_host, _, mqtt_port = mqtt.partition(":")
            await runtime.mqtt.connected.wait()
            publisher = aiomqtt.Client(mqtt_host or "127.0.0.1", int(mqtt_port or 1883))
            await publisher.__aenter__()
        with Live(stats_table(runtime, sent, started), console=console, refresh_per_second=2) as live:
            while not stop.is_set() and (duration <= 0 or time.monotonic() - started < duration):
                msg = sim.message()
                if publisher is not None:
                    await publisher.publish(msg.topic, msg.payload, qos=0)
                else:
                    await runtime.mqtt_route(msg.topic, msg.payload)
                sent += 1
                await pace(rate, started, sent)
                if sent % max(int(rate // 2), 1) == 0:
                    live.update(stats_table(runtime, sent, started))
            live.update(stats_table(runtime, sent, started))
    except asyncio.CancelledError:
        cancelled = True
    finally:
        # Stop intake first (the simulator has stopped above; now its MQTT link), then the server, whose lifespan
        # stops the node: loops cancelled, bus drained, store flushed and closed.
        if publisher is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await publisher.__aexit__(None, None, None)
        server.should_exit = True
        await serve_task
    return sent, cancelled


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
