"""The ingest pipeline: raw bytes -> normalize -> validate -> pseudonymize -> tag -> publish `event.<kind>`.

Every refusal becomes a dead letter with its reason and the raw bytes; nothing else is lost and the caller goes on.
`settle()` waits until what `ingest()` made of a batch is durable: the events stored (or held by a durable bus) and
the dead letters written. MQTT acknowledges a message, and HTTP answers a batch, only after it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from safecity.geo.places import PlaceTags
from safecity.kernel import clock
from safecity.kernel.bus import Bus
from safecity.kernel.envelope import Context, Envelope, make_envelope
from safecity.kernel.metrics import Metrics
from safecity.kernel.settings import IngestSettings
from safecity.sensing import normalize as normalizers
from safecity.sensing.health import HealthMonitor
from safecity.sensing.model import (
    DeadLetterReason,
    DeviceKind,
    Discarded,
    EventKind,
    NormalizeError,
    Reading,
    SensorEvent,
    Tags,
    event_key,
)
from safecity.sensing.normalize._common import check_storable
from safecity.sensing.pseudonym import Pseudonymizer

log = structlog.get_logger(__name__)

# Topics whose payloads may hold biometric results (Frigate face recognition): never kept, not even as dead letters.
BIOMETRIC_TOPICS = ("frigate/tracked_object_update",)


class DeviceInfoLike(Protocol):
    """What the pipeline needs to know about a registered device."""

    kind: str
    town: str | None
    community: str | None
    building: str | None
    lon: float | None
    lat: float | None


class DeviceLookup(Protocol):
    """The hot-path device cache (`DeviceIndex`)."""

    def get(self, device_id: str) -> DeviceInfoLike | None:
        """Return a device's info, or None when it is not registered."""
        ...


class PlaceTagger(Protocol):
    """Puts a point in its town / community / building."""

    def tag(self, lon: float, lat: float) -> PlaceTags:
        """Return the point's district, town, community and building (None where it is outside)."""
        ...


class DeadLetterSink(Protocol):
    """Where refused inputs go."""

    def put(
        self,
        *,
        reason: str,
        detail: str,
        source: str,
        raw: bytes,
        topic: str | None = None,
        device_id: str | None = None,
        kind: str | None = None,
        raw_size: int | None = None,
    ) -> None:
        """Record one dead letter (buffered; never blocks the caller)."""
        ...

    async def durable(self) -> None:
        """Wait until every dead letter recorded so far is written."""
        ...


# Settles once the store has decided on every one of a batch of events, with the verdict on each it did not add:
# "duplicate" (the store already had it), or why it was dead-lettered on its way to the store.
ExpectStored = Callable[[list[str]], "asyncio.Future[dict[str, str]]"]


@dataclass
class IngestResult:
    """What became of one raw message."""

    published: list[Envelope] = field(default_factory=list)
    dead_lettered: list[tuple[str, str]] = field(default_factory=list)
    discarded: str | None = None
    # The store's verdict on the published events (shared by the results published together): see `ExpectStored`.
    verdict: asyncio.Future[dict[str, str]] | None = None
    # (event id, outcome) of published events the store did not add (known after `settle`, and dead-lettered by
    # then): "duplicate" when it already had the event, "rejected" or "bus_overflow" when refused on the way.
    not_stored: list[tuple[str, str]] = field(default_factory=list)
    origin: tuple[bytes, str, str | None, DeviceKind | None] | None = None  # raw, source, topic, kind: for `settle`


class IngestPipeline:
    """Turns raw device messages into tagged events on the bus."""

    def __init__(
        self,
        *,
        bus: Bus,
        devices: DeviceLookup,
        dead_letters: DeadLetterSink,
        pseudonymize: Pseudonymizer,
        settings: IngestSettings,
        metrics: Metrics,
        tagger: PlaceTagger | None = None,
        health: HealthMonitor | None = None,
        node_id: str = "safecity",
        tier: str = "district",
        now: Callable[[], datetime] = clock.now,
        dedupe_window: int = 500_000,
        expect_stored: ExpectStored | None = None,
    ) -> None:
        self.bus = bus
        self.devices = devices
        self.dead_letters = dead_letters
        self.pseudonymize = pseudonymize
        self.settings = settings
        self.metrics = metrics
        self.tagger = tagger
        self._registered_places: dict[str, tuple[float, float, PlaceTags]] = {}  # device -> (lon, lat, tags)
        self.health = health
        self.node_id = node_id
        self.tier = tier
        self.now = now
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._dedupe_window = dedupe_window
        # None when publishing is durable by itself (JetStream acks a publish once the stream has it).
        self.expect_stored = expect_stored
        self._max_future = timedelta(seconds=settings.max_future_s)
        self._max_past = timedelta(seconds=settings.max_past_s)
        self._events_in = metrics.events_in
        # Bound counter children, cached: `labels()` costs more than the rest of the bookkeeping.
        self._events_out: dict[EventKind, Any] = {}
        self._in_counters: dict[tuple[str, str], Any] = {}
        self._dl_counter = metrics.dead_letters

    async def ingest(
        self,
        raw: bytes,
        *,
        fmt: str,
        source: str,
        topic: str | None = None,
        device_id: str | None = None,
        kind: DeviceKind | None = None,
        context: Context | None = None,
    ) -> IngestResult:
        """Process one raw message; refusals are dead-lettered, never raised."""
        counts: dict[tuple[str, str], int] = {}
        result = self.prepare(raw, fmt, source, topic, device_id, kind, context, counts)
        self.count_in(counts)
        await self.publish((result,))
        return result

    def count_in(self, counts: dict[tuple[str, str], int]) -> None:
        """Add messages counted by `prepare` to `events_in` (one counter update per (source, kind))."""
        for key, n in counts.items():
            counter = self._in_counters.get(key)
            if counter is None:
                counter = self._in_counters[key] = self._events_in.labels(*key)
            counter.inc(n)

    def prepare(
        self,
        raw: bytes,
        fmt: str,
        source: str,
        topic: str | None,
        device_id: str | None,
        kind: DeviceKind | None,
        context: Context | None,
        counts: dict[tuple[str, str], int],
    ) -> IngestResult:
        """Normalize, check and tag one raw message (dead-lettering refusals): its envelopes, not yet published,
        are in `published`. `counts` gathers (source, kind) -> messages for `count_in`."""
        result = IngestResult()
        received_at = self.now()
        if self.expect_stored is not None:
            result.origin = (raw, source, topic, kind)
        in_key = (source, kind.value if kind else fmt)
        counts[in_key] = counts.get(in_key, 0) + 1
        if len(raw) > self.settings.max_payload_bytes:
            detail = f"{len(raw)} bytes, limit {self.settings.max_payload_bytes}"
            self._dead(result, DeadLetterReason.TOO_LARGE, detail, source, raw, topic, device_id, kind)
            return result
        try:
            readings = normalizers.normalize(
                fmt, raw, topic=topic, device_id=device_id, kind=kind, received_at=received_at
            )
            for reading in readings:
                check_storable(reading)
        except NormalizeError as err:
            self._dead(result, err.reason, err.detail, source, raw, topic, err.device_id or device_id, kind)
            return result
        except Discarded as err:
            self.metrics.discarded.labels(err.reason).inc()
            result.discarded = err.reason
            return result
        except Exception as err:
            # A normalizer bug must not stop ingest or lose the message: keep it with the error, then go on.
            log.exception("normalizer_failed", fmt=fmt, topic=topic, device_id=device_id)
            detail = f"{fmt} normalizer failed: {type(err).__name__}"
            self._dead(result, DeadLetterReason.NORMALIZER_FAILED, detail, source, raw, topic, device_id, kind)
            return result
        for reading in readings:
            envelope = self._accept(reading, raw, source, topic, received_at, result, context)
            if envelope is not None:
                result.published.append(envelope)
        return result

    async def publish(self, results: Iterable[IngestResult]) -> None:
        """Publish the envelopes `prepare` made, in order (the store's verdict on each is asked for first)."""
        results = list(results)
        event_ids = [e.id for result in results for e in result.published]
        if self.expect_stored is not None and event_ids:
            verdict = self.expect_stored(event_ids)
            for result in results:
                if result.published:
                    result.verdict = verdict
        publish = self.bus.publish
        out: dict[EventKind, int] = {}
        for result in results:
            for envelope in result.published:
                await publish(envelope)
                kind = envelope.payload.kind
                out[kind] = out.get(kind, 0) + 1
        # One time for the batch: publishing it takes microseconds on the in-process bus (none of its subscribers
        # runs before we yield), and on JetStream the envelope left with its earlier hops anyway.
        published = self.now()
        for result in results:
            for envelope in result.published:
                envelope.hops["published"] = published
        for kind, n in out.items():
            counter = self._events_out.get(kind)
            if counter is None:
                counter = self._events_out[kind] = self.metrics.events_out.labels(kind.value)
            counter.inc(n)

    def _accept(
        self,
        reading: Reading,
        raw: bytes,
        source: str,
        topic: str | None,
        received_at: datetime,
        result: IngestResult,
        context: Context | None,
    ) -> Envelope | None:
        """Validate one reading against the registry and the clock, then tag it; None when dead-lettered."""
        device = self.devices.get(reading.device_id)
        kind_name = reading.kind.value
        if device is None:
            self._dead(
                result,
                DeadLetterReason.UNKNOWN_DEVICE,
                f"device {reading.device_id!r} is not registered",
                source,
                raw,
                topic,
                reading.device_id,
                kind_name,
            )
            return None
        occurred = reading.occurred_at
        if occurred - received_at > self._max_future or received_at - occurred > self._max_past:
            self._dead(
                result,
                DeadLetterReason.TIME_OUT_OF_RANGE,
                f"occurred_at {occurred.isoformat()} is outside [-{self.settings.max_past_s}s, "
                f"+{self.settings.max_future_s}s] of {received_at.isoformat()}",
                source,
                raw,
                topic,
                reading.device_id,
                kind_name,
            )
            return None
        if reading.message_id is not None:
            dedupe_key = (reading.device_id, reading.message_id)
            if dedupe_key in self._seen:
                self._dead(
                    result,
                    DeadLetterReason.DUPLICATE,
                    f"message id {reading.message_id!r} was already received",
                    source,
                    raw,
                    topic,
                    reading.device_id,
                    kind_name,
                )
                return None
            self._seen[dedupe_key] = None
            if len(self._seen) > self._dedupe_window:
                self._seen.popitem(last=False)
        lon = reading.lon if reading.lon is not None else device.lon
        lat = reading.lat if reading.lat is not None else device.lat
        tags = self._tags(device, reading, lon, lat)
        pseudonyms = {name: self.pseudonymize(name, value) for name, value in reading.personal.items()}
        payload = SensorEvent(
            device_id=reading.device_id,
            kind=reading.kind,
            tags=tags,
            message_id=reading.message_id,
            lon=lon,
            lat=lat,
            value=reading.value,
            state=reading.state,
            data=reading.data,
            pseudonyms=pseudonyms,
        )
        envelope = make_envelope(
            event_key(reading.kind),
            payload,
            source=source,
            tier=self.tier,
            occurred_at=occurred,
            received_at=received_at,
            context=context,
        )
        envelope.stamp("tagged")
        if self.health is not None:
            interval = getattr(device, "offline_after_s", None) or self.settings.heartbeat_timeout_s
            self.health.seen(reading.device_id, occurred, interval)
        return envelope

    def remember(self, keys: Iterable[tuple[str, str]]) -> int:
        """Seed the duplicate check with (device_id, message_id) pairs already stored (at start, after a restart)."""
        count = 0
        for key in keys:
            self._seen[key] = None
            count += 1
        while len(self._seen) > self._dedupe_window:
            self._seen.popitem(last=False)
        return count

    async def settle(self, results: Iterable[IngestResult]) -> None:
        """Wait until every event and dead letter of `results` is durable; note the events the store did not add.

        Raises what the store raised if it can no longer write (the caller must then not acknowledge anything).
        """
        for result in results:
            if result.verdict is None:
                continue
            not_stored = await result.verdict
            result.verdict = None
            if not not_stored:
                continue
            for envelope in result.published:
                outcome = not_stored.get(envelope.id)
                if outcome is None:
                    continue
                result.not_stored.append((envelope.id, outcome))
                if outcome == "duplicate" and result.origin is not None:
                    # The store already had (device, id): sent before, and stored then (after a restart, say).
                    raw, source, topic, kind = result.origin
                    event = envelope.payload
                    detail = f"message id {event.message_id!r} is already stored"
                    self._dead(result, DeadLetterReason.DUPLICATE, detail, source, raw, topic, event.device_id, kind)
        await self.dead_letters.durable()

    def _tags(self, device: DeviceInfoLike, reading: Reading, lon: float | None, lat: float | None) -> Tags:
        # A fixed device carries its registered place; a reading with its own position (a moving camera, a
        # checkpoint read with GPS) that is not in the registry's place is tagged by where it actually is.
        if (device.community is None or reading.lon is not None) and self.tagger is not None and lon is not None:
            assert lat is not None
            found = self.tagger.tag(lon, lat)
            return Tags(
                district=found.district,
                town=found.town,
                community=found.community,
                building=found.building,
                device_kind=device.kind,
            )
        if self.tagger is not None and lon is not None:
            # The registry's places win; its position fills the levels above them that it leaves out (the
            # district). Here the position is the registered one, so the lookup is cached per device.
            assert lat is not None
            cached = self._registered_places.get(reading.device_id)
            if cached is not None and cached[0] == lon and cached[1] == lat:
                found = cached[2]
            else:
                found = self.tagger.tag(lon, lat)
                self._registered_places[reading.device_id] = (lon, lat, found)
            return Tags(
                district=found.district,
                town=device.town or found.town,
                community=device.community,
                building=device.building,
                device_kind=device.kind,
            )
        return Tags(town=device.town, community=device.community, building=device.building, device_kind=device.kind)

    def _dead(
        self,
        result: IngestResult,
        reason: str,
        detail: str,
        source: str,
        raw: bytes,
        topic: str | None,
        device_id: str | None,
        kind: object,
    ) -> None:
        kind_name = kind.value if isinstance(kind, DeviceKind) else (str(kind) if kind else "unknown")
        self._dl_counter.labels(str(reason), kind_name).inc()
        result.dead_lettered.append((str(reason), detail))
        size = len(raw)
        if topic is not None and topic.startswith(BIOMETRIC_TOPICS):
            # A malformed tracked-object update can still carry a recognised name: keep the size, not the bytes.
            raw = b""
        self.dead_letters.put(
            reason=str(reason),
            detail=detail,
            source=source,
            raw=raw,
            topic=topic,
            device_id=device_id,
            kind=kind_name,
            raw_size=size,
        )
        log.info("input_dead_lettered", reason=str(reason), source=source, topic=topic, device_id=device_id)

    def dead_letter_topic(self, raw: bytes, *, topic: str, source: str) -> IngestResult:
        """Record a message that arrived on a topic we do not handle."""
        result = IngestResult()
        self._dead(
            result,
            DeadLetterReason.UNKNOWN_TOPIC,
            f"no handler for topic {topic!r}",
            source,
            raw,
            topic,
            None,
            None,
        )
        return result
