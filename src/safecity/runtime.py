"""The running node: builds every component from settings, starts them under one supervisor, stops them in order.

`Runtime` is what the API, the CLI and the demo hold on to. It wires slices together; the slices themselves only
talk over the bus. Every service registers its start and stop with `Runtime.supervisor`, which owns every background
task and stops everything in the reverse order it was started (see `start`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import timedelta
from functools import partial
from typing import Any

import orjson
import structlog

from safecity.api.ports import ApiServices
from safecity.dispatch.open311_service import Open311Service
from safecity.dispatch.positions import PositionFeed
from safecity.dispatch.service import DispatchService
from safecity.dispatch.travel import RoadTravel
from safecity.geo.places import PlaceTree, TagIndex, load_places
from safecity.geo.road.service import RoadService
from safecity.kernel import clock
from safecity.kernel.bus import Bus, MemoryBus, OverflowHook, Subscription
from safecity.kernel.envelope import Envelope, encode
from safecity.kernel.heap import settle_heap
from safecity.kernel.keys import WrongPayload, payload_of
from safecity.kernel.livefeed import LiveFeed
from safecity.kernel.metrics import Metrics
from safecity.kernel.readiness import Check, Readiness, readiness, tasks_check, tcp_check
from safecity.kernel.settings import DEV_PSEUDONYM_KEY, Settings
from safecity.kernel.supervisor import Supervisor
from safecity.sensing.deadletters import DeadLetterService
from safecity.sensing.device_health import DeviceHealthService
from safecity.sensing.device_service import DeviceService
from safecity.sensing.intake import BatchIntake
from safecity.sensing.model import EVENTS, DeadLetterReason, SensorEvent
from safecity.sensing.mqtt import MqttIngest, TopicIngest
from safecity.sensing.pipeline import IngestPipeline, PlaceTagger
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.sharing.keys import KeyService, Role
from safecity.store.checkpoint import WalCheckpointer
from safecity.store.deadletters import DeadLetterRepo
from safecity.store.engine import check as check_database
from safecity.store.engine import create_engine, upgrade
from safecity.store.events import EventRepo
from safecity.store.writer import REJECTED, EventWriter, Row, row_from_envelope
from safecity.warning.alerts import AlertService
from safecity.warning.backtest import stored_events
from safecity.warning.notify.service import NotifyService
from safecity.warning.rules import RulePack, load_builtin, load_pack, parse_pack, state_horizon_s
from safecity.warning.service import WarningService

log = structlog.get_logger(__name__)


# What a restarted node reloads into the ingest duplicate check: the sender ids of the events received this long ago
# at most (a broker resends what was not acknowledged within seconds; a device retrying by hand, within minutes).
DEDUPE_RELOAD_S = 3600.0
# HTTP ingest is refused (503) while the store's queues are fuller than this share: intake slows instead of buffering.
PRESSURE_HIGH = 0.5
STORE_SUBSCRIPTION_QUEUE = 10_000
MQTT_STOP_S = 10.0
BUS_DRAIN_S = 30.0  # how long stopping waits for the bus's held messages to be handled
KEYS_FLUSH_S = 10.0  # how often API keys' last-used times are written
# Task names (the supervisor's `task` metric label).
POSITION_FEED = "responder-positions"
MQTT_INGEST = "mqtt-ingest"
KEYS_FLUSH = "api-key-last-used"


def make_bus(settings: Settings, on_overflow: OverflowHook | None = None) -> Bus:
    """Build the bus the settings ask for (`on_overflow` keeps what the in-process bus cannot deliver)."""
    if settings.bus.kind == "nats":
        from safecity.kernel.bus_nats import NatsBus

        return NatsBus(
            settings.bus.nats_url,
            stream=settings.bus.stream,
            subject_prefix=settings.bus.subject_prefix,
            client_name=settings.node_id,
        )
    return MemoryBus(on_overflow=on_overflow)


class Runtime:
    """All components of one node."""

    def __init__(self, settings: Settings, *, tagger: PlaceTagger | None = None, migrate: bool = True) -> None:
        self.settings = settings
        self.migrate = migrate
        self.metrics = Metrics()
        pseudonymize = Pseudonymizer.of(settings)
        # Owns every background task and the stop order; services take it as `tasks`.
        self.supervisor = tasks = Supervisor(self.metrics.task_failures, self.metrics.task_up)
        self.bus: Bus = make_bus(settings, on_overflow=self._bus_overflow)
        self.engine = create_engine(settings.database.url, background_checkpoints=True)
        # SQLite: the WAL's checkpoints in a thread of their own, not in the writers' commits (None on PostgreSQL).
        self.checkpointer = WalCheckpointer.of(self.engine)
        self.events = EventRepo(self.engine)
        self.devices = DeviceService(self.engine)
        self.keys = KeyService(self.engine)
        self.dead_letter_repo = DeadLetterRepo(self.engine)
        self.dead_letters = DeadLetterService(
            self.dead_letter_repo,
            self.bus,
            pseudonymize=pseudonymize,
            raw_cap=settings.ingest.dead_letter_raw_bytes,
            source=settings.node_id,
            tier=settings.role,
            tasks=tasks,
        )
        self.writer = EventWriter(
            self.engine,
            interval_ms=settings.database.commit_interval_ms,
            interval_max_ms=max(settings.database.commit_interval_max_ms, settings.database.commit_interval_ms),
            max_rows=settings.database.commit_max_rows,
            metrics=self.metrics,
            on_rejected=self._event_rejected,
            tasks=tasks,
        )
        self.device_health = DeviceHealthService(
            self.devices,
            self.bus,
            heartbeat_timeout_s=settings.ingest.heartbeat_timeout_s,
            source=settings.node_id,
            tier=settings.role,
            metrics=self.metrics,
            tasks=tasks,
        )
        self.health = self.device_health.monitor
        # Places: from the given tagger (the demo), else from the boundaries file the settings name.
        self.place_index: TagIndex | None = tagger if isinstance(tagger, TagIndex) else None
        if tagger is None and settings.places.boundaries is not None:
            tree = load_places(settings.places.boundaries, flat_level=settings.places.level)
            tagger = self.place_index = TagIndex(tree)
            log.info("places_loaded", places=len(tree), path=str(settings.places.boundaries))
        self.places: PlaceTree | None = self.place_index.tree if self.place_index is not None else None
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
            # The in-process bus holds events in memory: they are durable once the writer commits them. JetStream
            # acknowledges a publish once the stream holds it, so there the publish itself is the durable step.
            expect_stored=self.writer.expect_many if self.bus.holds_in_memory else None,
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
                lateness_s=settings.warning.allowed_lateness_s,
                place_names=self.places.names if self.places is not None else None,
                tasks=tasks,
            )
        # One group-commit writer for the alert path (the notify service's): alert rows, their outbox rows, the rows
        # delivered and the alerts' delivered stamps go into one transaction a batch (ARCHITECTURE §2).
        self.notify = NotifyService(self.engine, self.bus, settings.notify, stamp_alerts=True, tasks=tasks)
        self.alerts = AlertService(
            self.engine,
            self.bus,
            node_id=settings.node_id,
            tier=settings.role,
            tasks=tasks,
            writer=self.notify.writer,
        )
        # Road network for travel times and tiles; loaded (in a thread) at start when the settings name one.
        self.roads = RoadService(settings.roads)
        self.dispatch = DispatchService(
            self.engine,
            self.bus,
            settings.dispatch,
            pseudonymize=pseudonymize,
            link_key=settings.security.pseudonym_key.get_secret_value().encode(),
            tagger=self.place_index.tag if self.place_index is not None else None,
            travel=RoadTravel(self.roads),
            source=settings.node_id,
            tier=settings.role,
            resolve_alert=self.alerts.resolve_handled,
            send_task=self.notify.send_task,
            tasks=tasks,
        )
        self.open311 = Open311Service(self.dispatch)
        self.positions: PositionFeed | None = (
            PositionFeed(settings.mqtt, self.dispatch.report_position, self.dead_letters)
            if settings.mqtt.enabled
            else None
        )
        # The command centre's live channel (incidents, responders, alerts, devices), resumable by sequence number.
        self.live = LiveFeed(self.bus)
        self._subs: list[Subscription] = []
        self.started = False

    def spawn(
        self, factory: Callable[[], Coroutine[Any, Any, Any]], name: str, *, restart: bool = True
    ) -> asyncio.Task[Any]:
        """Run a background loop owned by the runtime: supervised (restarted with backoff), cancelled on stop."""
        return self.supervisor.spawn(name, factory, restart=restart)

    async def _drain_bus(self) -> None:
        """Handle what the bus still holds, for at most `BUS_DRAIN_S` (with the database down the handlers would wait
        for it forever; what is left then is logged by subscription, and a durable bus redelivers it)."""
        try:
            async with asyncio.timeout(BUS_DRAIN_S):
                await self.bus.drain()
        except TimeoutError:
            log.error("bus_drain_timed_out", after_s=BUS_DRAIN_S, pending=self.bus.lag())

    async def start(self) -> None:
        """Migrate the database, then start every service under the supervisor, in dependency order.

        Each service is registered as it starts; `stop()` undoes them backwards: intake (MQTT) first, then the bus
        is drained, device bookkeeping written, the rule engine snapshotted, notify and alerts flushed, the store
        subscription and writer closed, dead letters written, roads, bus and database last.
        """
        if self.started:
            return
        if self.settings.security.pseudonym_key.get_secret_value() == DEV_PSEUDONYM_KEY:
            log.warning("dev_pseudonym_key_in_use", hint="set SAFECITY_SECURITY__PSEUDONYM_KEY for production")
        tasks = self.supervisor
        tasks.on_stop("database", self.engine.dispose)
        if self.migrate:
            await upgrade(self.settings.database.url)
        if self.checkpointer is not None:
            await tasks.enter("wal-checkpoint", self.checkpointer.start, self.checkpointer.stop)
        await tasks.enter("bus", self.bus.start, self.bus.close)
        await self.devices.load_index()
        await tasks.enter("roads", self.roads.start, self.roads.close)
        bootstrap = self.settings.security.bootstrap_admin_key
        if bootstrap is not None:
            await self.keys.ensure(bootstrap.get_secret_value(), role=Role.ADMIN, name="bootstrap admin")
        # Dead letters before the writer: rows the store refuses while the writer closes become dead letters.
        await tasks.enter("dead-letters", self.dead_letters.start, self.dead_letters.stop)
        await tasks.enter("event-writer", self.writer.start, self.writer.close)
        seeded = self.pipeline.remember(
            await self.events.recent_message_keys(clock.now() - timedelta(seconds=DEDUPE_RELOAD_S), limit=500_000)
        )
        log.info("ingest_dedupe_seeded", keys=seeded)
        await tasks.enter("store-subscription", self._subscribe_store, self._unsubscribe_store)
        await tasks.enter("live-feed", self.live.start, self.live.stop)
        # Notify first: its writer stores the alerts too, so it stops (committing what is queued) after them.
        await tasks.enter("notify", self.notify.start, self.notify.stop)
        await tasks.enter("alerts", self.alerts.start, self.alerts.stop)
        if self.warning is not None:
            # No snapshot: refill open windows from the events stored over the longest window any rule keeps.
            now = clock.now()
            since = now - timedelta(seconds=state_horizon_s(self.warning.engine.pack))
            await self.warning.rebuild(stored_events(self.events, since, now))
            await tasks.enter("warning", self.warning.start, self.warning.stop)
        await tasks.enter("dispatch", self.dispatch.start, self.dispatch.stop)
        if self.positions is not None:
            tasks.spawn(POSITION_FEED, self.positions.run)
        tasks.every(KEYS_FLUSH, KEYS_FLUSH_S, self.keys.flush_last_used)
        tasks.on_stop(KEYS_FLUSH, self._stop_keys_flush)
        await tasks.enter("device-health", self.device_health.start, self.device_health.stop)
        # Stopping: once intake has stopped, what the in-process bus still holds is handled before anything else.
        tasks.on_stop("bus-drain", self._drain_bus)
        if self.mqtt is not None:
            tasks.spawn(MQTT_INGEST, self.mqtt.run)
            tasks.on_stop(MQTT_INGEST, self._stop_mqtt)
        self.started = True
        settle_heap()
        log.info("runtime_started", role=self.settings.role, node=self.settings.node_id, bus=self.settings.bus.kind)

    async def _subscribe_store(self) -> None:
        self._subs.append(
            await self.bus.subscribe(
                EVENTS.name, self._store_event, durable="store-writer", queue_size=STORE_SUBSCRIPTION_QUEUE
            )
        )

    async def _unsubscribe_store(self) -> None:
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()

    async def _stop_mqtt(self) -> None:
        """Stop intake first: what was received is handled and acknowledged once durable, then we disconnect."""
        assert self.mqtt is not None
        self.supervisor.retire(MQTT_INGEST)
        await self.mqtt.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MQTT_STOP_S):
                await self.mqtt.stopped.wait()

    async def _stop_keys_flush(self) -> None:
        await self.supervisor.cancel(KEYS_FLUSH)
        await self.keys.flush_last_used()

    async def mqtt_route(self, topic: str, payload: bytes) -> None:
        """Ingest one message as if it had arrived on `topic` over MQTT."""
        await self.topics.handle(topic, payload)

    async def _store_event(self, envelope: Envelope) -> None:
        try:
            payload_of(EVENTS, envelope)  # an `event.*` carries a SensorEvent, or it is kept as a dead letter
            row = row_from_envelope(envelope)
        except (TypeError, ValueError, WrongPayload) as err:  # the door checks make this a bug; the event is still kept
            log.exception("event_not_storable", event_id=envelope.id)
            self._dead_letter_envelope(envelope, DeadLetterReason.INVALID_PAYLOAD, f"cannot be stored: {err}")
            self.writer.settle(envelope.id, REJECTED)
            return
        await self.writer.add_row(row)

    def _dead_letter_envelope(self, envelope: Envelope, reason: str, detail: str) -> None:
        """Keep an event the node could not pass on, as a dead letter holding its whole envelope (replayable)."""
        payload = envelope.payload
        event = payload if isinstance(payload, SensorEvent) else None
        self.dead_letters.put(
            reason=reason,
            detail=detail,
            source=envelope.source,
            raw=encode(envelope),
            topic=envelope.key,
            device_id=event.device_id if event is not None else None,
            kind=str(event.kind) if event is not None else None,
        )
        self.metrics.dead_letters.labels(reason, str(event.kind) if event is not None else envelope.key).inc()

    def _bus_overflow(self, subscription: str, envelope: Envelope) -> None:
        """The in-process bus could not hand `envelope` to `subscription` in time: keep it as a dead letter."""
        stored = subscription != "store-writer"
        detail = f"bus subscription {subscription!r} could not take it in time" + (
            "; the event itself is stored" if stored else "; not stored"
        )
        self._dead_letter_envelope(envelope, DeadLetterReason.BUS_OVERFLOW, detail)
        if not stored:
            self.writer.settle(envelope.id, DeadLetterReason.BUS_OVERFLOW)

    async def _event_rejected(self, row: Row, err: Exception) -> None:
        """The store refused a row (the door checks should make this impossible): keep it as a dead letter."""
        self.dead_letters.put(
            reason=DeadLetterReason.INVALID_PAYLOAD,
            detail=f"refused by the store: {str(err)[:300]}",
            source=str(row.get("source", self.settings.node_id)),
            raw=orjson.dumps({k: v for k, v in row.items() if k != "stored_at"}, default=str),
            topic=str(row.get("key")),
            device_id=row.get("device_id"),
            kind=row.get("kind"),
        )

    def pressure(self) -> str | None:
        """Why intake should slow down now (the store is stalled or its queues are filling), or None."""
        if self.writer.stalled:
            return "store_stalled"
        if self.writer.queued > self.writer.capacity * PRESSURE_HIGH:
            return "store_queue"
        if self.bus.lag().get("store-writer", 0) > STORE_SUBSCRIPTION_QUEUE * PRESSURE_HIGH:
            return "bus_queue"
        if self.dead_letters.buffered > self.dead_letters.max_buffer * PRESSURE_HIGH:
            return "dead_letter_queue"
        return None

    async def readiness(self) -> Readiness:
        """The node's readiness (what `/readyz` answers): the database and the bus answer, the MQTT broker (when
        enabled) accepts connections, and every supervised loop runs."""
        checks: dict[str, Check] = {
            "database": partial(check_database, self.engine),
            "bus": self._check_bus,
            "tasks": tasks_check(self.supervisor.down),
        }
        if self.settings.mqtt.enabled:
            checks["broker"] = tcp_check(self.settings.mqtt.host, self.settings.mqtt.port)
        return await readiness(checks)

    async def _check_bus(self) -> None:
        if not await self.bus.healthy():
            raise RuntimeError("bus is not healthy")

    async def ready(self) -> dict[str, bool]:
        """Readiness of each dependency, as booleans (see `readiness`)."""
        report = await self.readiness()
        return {name: bool(result["ok"]) for name, result in report.checks.items()}

    async def stop(self) -> None:
        """Stop everything the supervisor holds, in reverse start order (see `start`): loops, buffers, connections."""
        if not self.supervisor.registered():
            await self.engine.dispose()  # never started: only the engine's pool to let go
            return
        try:
            await self.supervisor.stop()
        finally:
            self.started = False
        log.info("runtime_stopped")

    def api_services(self) -> ApiServices:
        """The ports the HTTP API uses, from this node's services (`create_app(runtime.api_services())`)."""
        return ApiServices(
            settings=self.settings,
            lifecycle=self,
            readiness=self.readiness,
            metrics=self.metrics_text,
            keys=self.keys,
            events=self.events,
            dead_letters=self.dead_letter_repo,
            intake=BatchIntake(self.pipeline, self.pressure, self.metrics.intake_refused),
            devices=self.devices,
            alerts=self.alerts,
            notify=self.notify,
            rules=self.warning,
            parse_rules=self.parse_rules,
            places=self.place_index,
            roads=self.roads,
            dispatch=self.dispatch,
            open311=self.open311,
            live=self.live,
        )

    def parse_rules(self, text: str, source: str) -> RulePack:
        """Parse a rule pack the way this node loads one (watch lists pseudonymized with its key)."""
        return parse_pack(text, source, pseudonymize=self.pipeline.pseudonymize)

    def metrics_text(self) -> bytes:
        """The Prometheus exposition of this node's metrics, with the bus backlog read now."""
        self.update_lag_metrics()
        return self.metrics.render()

    def update_lag_metrics(self) -> None:
        """Copy the bus's per-subscription backlog into the metrics gauge."""
        for name, pending in self.bus.lag().items():
            self.metrics.bus_lag.labels(name).set(pending)

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
