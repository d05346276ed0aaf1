"""The running node: builds every component from settings, starts the background loops, stops them in order.

`Runtime` is what the API, the CLI and the demo hold on to. It wires slices together; the slices themselves only
talk over the bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

import structlog

from safecity.geo.places import PlaceTree, TagIndex, load_places
from safecity.geo.road.service import RoadService
from safecity.kernel import clock
from safecity.kernel.bus import Bus, MemoryBus, Subscription
from safecity.kernel.envelope import Envelope, make_envelope
from safecity.kernel.heap import settle_heap
from safecity.kernel.metrics import Metrics
from safecity.kernel.settings import DEV_PSEUDONYM_KEY, Settings
from safecity.sensing.deadletters import DeadLetterService
from safecity.sensing.device_service import DeviceService
from safecity.sensing.health import HealthMonitor
from safecity.sensing.model import DEVICE_OFFLINE, DeviceKind, DeviceOffline, Tags
from safecity.sensing.mqtt import MqttIngest, TopicIngest
from safecity.sensing.pipeline import IngestPipeline, PlaceTagger
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.sharing.keys import KeyService, Role
from safecity.store.deadletters import DeadLetterRepo
from safecity.store.engine import create_engine, ping, upgrade
from safecity.store.events import EventRepo
from safecity.store.writer import EventWriter
from safecity.warning.alerts import AlertService
from safecity.warning.backtest import stored_events
from safecity.warning.notify.service import NotifyService
from safecity.warning.rules import load_builtin, load_pack, state_horizon_s
from safecity.warning.service import WarningService

log = structlog.get_logger(__name__)


def make_bus(settings: Settings) -> Bus:
    """Build the bus the settings ask for."""
    if settings.bus.kind == "nats":
        from safecity.kernel.bus_nats import NatsBus

        return NatsBus(
            settings.bus.nats_url,
            stream=settings.bus.stream,
            subject_prefix=settings.bus.subject_prefix,
            client_name=settings.node_id,
        )
    return MemoryBus()


class Runtime:
    """All components of one node."""

    def __init__(self, settings: Settings, *, tagger: PlaceTagger | None = None, migrate: bool = True) -> None:
        self.settings = settings
        self.migrate = migrate
        self.metrics = Metrics()
        self.bus: Bus = make_bus(settings)
        self.engine = create_engine(settings.database.url)
        self.events = EventRepo(self.engine)
        self.devices = DeviceService(self.engine)
        self.keys = KeyService(self.engine)
        self.dead_letter_repo = DeadLetterRepo(self.engine)
        self.dead_letters = DeadLetterService(
            self.dead_letter_repo,
            self.bus,
            raw_cap=settings.ingest.dead_letter_raw_bytes,
            source=settings.node_id,
            tier=settings.role,
        )
        self.writer = EventWriter(
            self.engine,
            interval_ms=settings.database.commit_interval_ms,
            max_rows=settings.database.commit_max_rows,
            metrics=self.metrics,
        )
        self.health = HealthMonitor(self._device_offline)
        # Places: from the given tagger (the demo), else from the boundaries file the settings name.
        self.place_index: TagIndex | None = tagger if isinstance(tagger, TagIndex) else None
        if tagger is None and settings.places.boundaries is not None:
            tree = load_places(settings.places.boundaries, flat_level=settings.places.level)
            tagger = self.place_index = TagIndex(tree)
            log.info("places_loaded", places=len(tree), path=str(settings.places.boundaries))
        self.places: PlaceTree | None = self.place_index.tree if self.place_index is not None else None
        key = settings.security.pseudonym_key.get_secret_value().encode()
        pseudonymize = Pseudonymizer(key)
        self.pipeline = IngestPipeline(
            bus=self.bus,
            devices=self.devices.index,
            dead_letters=self.dead_letters,
            pseudonymize=pseudonymize,
            settings=settings.ingest,
            metrics=self.metrics,
            tagger=tagger,
            health=self.health,
            node_id=settings.node_id,
            tier=settings.role,
        )
        self.mqtt: MqttIngest | None = (
            MqttIngest(settings.mqtt, self.pipeline, source=f"mqtt:{settings.mqtt.host}:{settings.mqtt.port}")
            if settings.mqtt.enabled
            else None
        )
        # The same topic routing as the MQTT adapter, for in-process senders (the demo's simulator).
        self.topics = TopicIngest(self.pipeline, prefix=settings.mqtt.topic_prefix, source="sim")
        self.warning: WarningService | None = None
        if settings.warning.enabled:
            rules_file = settings.warning.rules
            pack = (
                load_pack(rules_file, pseudonymize=pseudonymize)
                if rules_file is not None
                else load_builtin("default", pseudonymize=pseudonymize)
            )
            self.warning = WarningService(
                self.bus,
                pack,
                pseudonymizer=pseudonymize,
                source=settings.node_id,
                tier=settings.role,
                snapshot_path=settings.warning.snapshot,
                metrics=self.metrics,
                place_names=self.places.names if self.places is not None else None,
            )
        self.alerts = AlertService(self.engine, self.bus, node_id=settings.node_id, tier=settings.role)
        self.notify = NotifyService(self.engine, self.bus, settings.notify, on_alert_delivered=self._alert_delivered)
        # Road network for travel times and tiles; loaded (in a thread) at start when the settings name one.
        self.roads = RoadService(settings.roads)
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_persisted: dict[str, datetime] = {}
        self._subs: list[Subscription] = []
        self.started = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a background loop owned by the runtime (cancelled on stop, failures logged)."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    @staticmethod
    def _task_done(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", task=task.get_name(), error=repr(task.exception()))

    async def start(self) -> None:
        """Migrate the database, connect the bus, load caches and start every loop."""
        if self.started:
            return
        if self.settings.security.pseudonym_key.get_secret_value() == DEV_PSEUDONYM_KEY:
            log.warning("dev_pseudonym_key_in_use", hint="set SAFECITY_SECURITY__PSEUDONYM_KEY for production")
        if self.migrate:
            await upgrade(self.settings.database.url)
        await self.bus.start()
        await self.devices.load_index()
        await self.roads.start()
        bootstrap = self.settings.security.bootstrap_admin_key
        if bootstrap is not None:
            await self.keys.ensure(bootstrap.get_secret_value(), role=Role.ADMIN, name="bootstrap admin")
        await self.writer.start()
        await self.dead_letters.start()
        self._subs.append(await self.bus.subscribe("event.>", self._store_event, durable="store-writer"))
        await self.alerts.start()
        await self.notify.start()
        if self.warning is not None:
            # No snapshot: refill open windows from the events stored over the longest window any rule keeps.
            now = clock.now()
            since = now - timedelta(seconds=state_horizon_s(self.warning.engine.pack))
            await self.warning.rebuild(stored_events(self.events, since, now))
            await self.warning.start()
        self.track_devices()
        self.spawn(self.health.run(), "device-health")
        self.spawn(self._last_seen_loop(), "device-last-seen")
        if self.mqtt is not None:
            self.spawn(self.mqtt.run(), "mqtt-ingest")
        self.started = True
        settle_heap()
        log.info("runtime_started", role=self.settings.role, node=self.settings.node_id, bus=self.settings.bus.kind)

    async def mqtt_route(self, topic: str, payload: bytes) -> None:
        """Ingest one message as if it had arrived on `topic` over MQTT."""
        await self.topics.handle(topic, payload)

    async def persist_last_seen(self) -> None:
        """Write devices' last report times to the registry (batched; the hot path only touches memory)."""
        seen = self.health.last_seen()
        changed = {d: t for d, t in seen.items() if self._last_persisted.get(d) != t}
        if not changed:
            return
        try:
            await self.devices.mark_seen(changed)
        except Exception:  # a failed bookkeeping write must not stop the loop; it is retried next round
            log.exception("last_seen_persist_failed", devices=len(changed))
            return
        self._last_persisted.update(changed)

    async def _last_seen_loop(self, every_s: float = 10.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.persist_last_seen()

    def track_devices(self) -> None:
        """Watch the heartbeat of every active device in the registry."""
        default = self.settings.ingest.heartbeat_timeout_s
        for device_id, info in self.devices.index.items():
            if info.status in ("active", "offline"):
                self.health.track(device_id, info.offline_after_s or default, info.last_seen)

    async def _alert_delivered(self, alert_id: str, at: datetime) -> None:
        self.alerts.note_delivered(alert_id, at)

    async def _store_event(self, envelope: Envelope) -> None:
        await self.writer.add(envelope)

    async def _device_offline(self, device_id: str, last_seen: datetime | None, deadline: datetime) -> None:
        info = self.devices.index.get(device_id)
        if info is None:
            return
        payload = DeviceOffline(
            device_id=device_id,
            kind=DeviceKind(info.kind),
            tags=Tags(town=info.town, community=info.community, building=info.building, device_kind=info.kind),
            last_seen=last_seen,
            deadline=deadline,
        )
        envelope = make_envelope(DEVICE_OFFLINE, payload, source=self.settings.node_id, tier=self.settings.role)
        await self.bus.publish(envelope)
        self.metrics.devices_offline.inc()
        log.info("device_offline", device_id=device_id, late_ms=(clock.now() - deadline).total_seconds() * 1000)

    async def ready(self) -> dict[str, bool]:
        """Readiness of each dependency."""
        checks = {"database": await ping(self.engine), "bus": await self.bus.healthy()}
        if self.mqtt is not None:
            checks["broker"] = self.mqtt.connected.is_set()
        return checks

    async def stop(self) -> None:
        """Stop loops, flush buffers, disconnect."""
        if not self.started:
            await self.engine.dispose()
            return
        for task in self._tasks:
            task.cancel()
        # gather with return_exceptions collects the loops' CancelledErrors without swallowing a cancellation of
        # stop() itself.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if isinstance(self.bus, MemoryBus):
            await self.bus.drain()
        await self.persist_last_seen()
        if self.warning is not None:
            await self.warning.stop()
        await self.notify.stop()
        await self.alerts.stop()
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        await self.writer.close()
        await self.dead_letters.stop()
        await self.roads.close()
        await self.bus.close()
        await self.engine.dispose()
        self.started = False
        log.info("runtime_stopped")

    def update_lag_metrics(self) -> None:
        """Copy the bus's per-subscription backlog into the metrics gauge."""
        lag = getattr(self.bus, "lag", None)
        if callable(lag):
            for name, pending in lag().items():
                self.metrics.bus_lag.labels(name).set(pending)

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
