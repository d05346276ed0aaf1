"""MQTT ingest adapter (gmqtt): device topics and Frigate topics into the ingest pipeline.

MQTT 3.1.1 or 5, QoS 1 by default, persistent session (clean session off / clean_start off with session
expiry), TCP_NODELAY (asyncio sets it on every TCP transport), reconnect with backoff. With `shared_group` set it
subscribes `$share/<group>/...` so several workers split the load.

A QoS 1 message is acknowledged only once what became of it is durable (`ack = "durable"`, the default): its events
committed to the store (or held by JetStream) and its dead letters written. A crash then loses nothing acknowledged:
the broker sends the rest again when the node is back, and the duplicate check keeps them from being stored twice.
How many unacknowledged messages the broker lets us hold bounds our memory: MQTT 5's Receive Maximum, which we send,
or Mosquitto's `max_inflight_messages` for MQTT 3.1.1 clients (20 unless the broker's configuration raises it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import gmqtt
import structlog
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from safecity.kernel.settings import MqttSettings
from safecity.sensing.normalize import registry
from safecity.sensing.pipeline import IngestPipeline, IngestResult

log = structlog.get_logger(__name__)

SESSION_EXPIRY_S = 3600
BATCH = 50  # messages handled as one batch between two yields to the event loop


class TopicIngest:
    """Routes (topic, payload) pairs to the pipeline: the MQTT adapter and the in-process simulator share it."""

    def __init__(self, pipeline: IngestPipeline, *, prefix: str = "safecity", source: str = "mqtt") -> None:
        self.pipeline = pipeline
        self.prefix = prefix
        self.source = source
        self.received = 0

    async def handle(self, topic: str, payload: Any) -> IngestResult:
        """Route one message by its topic to the pipeline (unknown topics are dead-lettered)."""
        return (await self.handle_batch(((topic, payload),)))[0]

    async def handle_batch(self, messages: Iterable[tuple[str, Any]]) -> list[IngestResult]:
        """Route messages by their topics to the pipeline as one batch, in order (unknown topics are dead-lettered)."""
        pipeline = self.pipeline
        source = self.source
        counts: dict[tuple[str, str], int] = {}
        results: list[IngestResult] = []
        for topic, payload in messages:
            self.received += 1
            raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
            # The registry's route, kept per topic string: the topic is split once, whoever asks again.
            route = registry.route(topic)
            spec = route.spec
            if spec is None or (route.prefix is not None and route.prefix != self.prefix):
                results.append(pipeline.dead_letter_topic(raw, topic=topic, source=source))
                continue
            results.append(
                pipeline.prepare(raw, spec.key, source, topic, route.device_id, route.device_kind, None, counts)
            )
        pipeline.count_in(counts)
        await pipeline.publish(results)
        return results


class MqttIngest:
    """Subscribes to the broker and feeds every message to the pipeline; reconnects until stopped.

    gmqtt parses MQTT in the event loop itself (an asyncio protocol): about 13 µs of CPU a message, against 46 µs for
    paho-mqtt's network thread and its hand-off (measured side by side, docs/benchmarks.md). Received messages are
    queued and handled in batches. With `ack = "durable"`, each batch is settled (`IngestPipeline.settle`) in a task
    of its own while the next batch is handled, and its QoS 1 messages are acknowledged, in the order received, once
    it is durable. Unacknowledged messages are bounded by the broker's in-flight window; QoS 0 messages, which the
    broker does not hold back, are bounded by pausing the socket while `max_pending` messages wait.
    """

    def __init__(self, settings: MqttSettings, pipeline: IngestPipeline, *, source: str = "mqtt") -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.topics = TopicIngest(pipeline, prefix=settings.topic_prefix, source=source)
        self.connected = asyncio.Event()
        self.stopped = asyncio.Event()  # set when `run` has returned after `stop()`
        self.reconnects = 0
        self.paused = 0  # times reading from the broker was paused for back-pressure
        self._pending: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._durable_acks = settings.ack == "durable"
        self._batch: asyncio.Future[int] | None = None  # settles when the messages received into it are durable
        self._settling: asyncio.Task[None] | None = None  # the latest batch's settle task
        self._client_ref: gmqtt.Client | None = None
        self._reading_paused = False
        self._stopping = False
        self._failed: BaseException | None = None

    def _filters(self) -> list[str]:
        prefix = self.settings.topic_prefix
        filters = [f"{prefix}/+/+/+"]
        for spec in registry.specs():
            # A format's own topics (Frigate's), unless its `[mqtt]` switch is off.
            if spec.mqtt_switch is None or getattr(self.settings, spec.mqtt_switch):
                filters.extend(channel.topic for channel in spec.channels)
        if self.settings.shared_group:
            filters = [f"$share/{self.settings.shared_group}/{f}" for f in filters]
        return filters

    # --- gmqtt callbacks (in the event loop) ------------------------------------------------------------------

    def _on_connect(self, client: gmqtt.Client, _flags: Any, _rc: Any, _props: Any) -> None:
        if client.subscriptions:
            # The broker may have lost the session (a restart without persistence): subscribe again.
            for sub in client.subscriptions:
                client.resubscribe(sub)
        else:
            client.subscribe([gmqtt.Subscription(f, qos=self.settings.qos) for f in self._filters()])
        self.connected.set()
        log.info("mqtt_connected", host=self.settings.host, port=self.settings.port)

    def _on_disconnect(self, _client: gmqtt.Client, _packet: Any, _exc: Any = None) -> None:
        if self.connected.is_set():
            self.connected.clear()
            self.reconnects += 1
            log.warning("mqtt_disconnected", host=self.settings.host, port=self.settings.port)

    def _on_message(self, _client: gmqtt.Client, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        """Acknowledge on receipt (`ack = "received"`, or a QoS 0 subscription, which has nothing to acknowledge)."""
        self._queue(topic, payload)
        return 0

    async def _on_message_durable(
        self, _client: gmqtt.Client, topic: str, payload: bytes, qos: int, _props: Any
    ) -> int:
        """Acknowledge once durable: gmqtt sends PUBACK when this returns (0: success)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = asyncio.get_running_loop().create_future()
        self._queue(topic, payload)
        if qos == 0:
            return 0
        # Raises if the batch could not be made durable: gmqtt then sends no PUBACK, the broker sends it again.
        return await asyncio.shield(batch)

    def _queue(self, topic: str, payload: bytes) -> None:
        self._pending.append((topic, payload))
        self._wake.set()
        if len(self._pending) >= self.settings.max_pending and not self._reading_paused:
            self._pause_reading(True)

    def _pause_reading(self, pause: bool) -> None:
        """Stop (or resume) reading from the broker's socket: back-pressure for what its in-flight window lets by."""
        connection = getattr(self._client_ref, "_connection", None)
        transport = getattr(connection, "_transport", None)
        if transport is None or transport.is_closing():
            return
        if pause:
            transport.pause_reading()
            if not self._stopping:
                self.paused += 1
                log.warning("mqtt_intake_paused", pending=len(self._pending))
        else:
            transport.resume_reading()
        self._reading_paused = pause

    # --- the event loop ---------------------------------------------------------------------------------------

    def _client(self) -> gmqtt.Client:
        v5 = self.settings.protocol == "5"
        # Persistent session: the broker keeps our subscriptions and QoS 1 messages while we are away.
        extra = {"session_expiry_interval": SESSION_EXPIRY_S} if v5 else {}
        if v5:
            # How many unacknowledged QoS 1 messages the broker may send us (MQTT 5 §3.1.2.11.3).
            extra["receive_maximum"] = self.settings.receive_maximum
        client = gmqtt.Client(
            self.settings.client_id,
            clean_session=False,
            optimistic_acknowledgement=not self._durable_acks,
            **extra,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        # A QoS 0 subscription gets no PUBACK to hold back: the plain callback then spares gmqtt a task a message.
        durable = self._durable_acks and self.settings.qos > 0
        client.on_message = self._on_message_durable if durable else self._on_message
        self._client_ref = client
        client.set_config({"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": 1})
        return client

    async def _connect(self, client: gmqtt.Client) -> None:
        """Connect, retrying with exponential backoff (1 s to 30 s) while the broker is unreachable."""
        version = MQTTv50 if self.settings.protocol == "5" else MQTTv311
        delay = 1.0
        while True:
            try:
                await client.connect(self.settings.host, self.settings.port, version=version)
                return
            except (OSError, MQTTConnectError) as err:
                log.warning("mqtt_connect_failed", host=self.settings.host, port=self.settings.port, error=str(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def run(self) -> None:
        """Connect, then process batches of messages until `stop()` (or cancellation)."""
        self._stopping = False
        self._failed = None
        self.stopped.clear()
        client = self._client()
        await self._connect(client)
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                if self._failed is not None:
                    raise self._failed
                await self._handle_pending()
            # Reading is paused (`stop`): handle what is left; the last acknowledgements go out before we disconnect.
            while True:
                await self._handle_pending()
                if self._settling is not None:
                    await self._settling
                if not self._pending:
                    break
        finally:
            settling, self._settling = self._settling, None
            if settling is not None and not settling.done():
                settling.cancel()  # unacknowledged: the broker sends these again after we reconnect
                await asyncio.gather(settling, return_exceptions=True)
            batch, self._batch = self._batch, None
            if batch is not None and not batch.done():
                batch.set_exception(ConnectionAbortedError("ingest stopped before the batch was durable"))
                batch.exception()  # retrieved: no PUBACK is due, the broker sends these again
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await client.disconnect()
            self.connected.clear()
            self._reading_paused = False
            if self._stopping:
                self.stopped.set()

    async def stop(self) -> None:
        """Stop reading; handle what was received, acknowledge it once durable, then let `run` disconnect and return."""
        self._stopping = True
        if not self._reading_paused:
            self._pause_reading(True)
        self._wake.set()

    async def _handle_pending(self) -> None:
        pending = self._pending
        if not pending:
            return
        batch, self._batch = self._batch, None
        handle_batch = self.topics.handle_batch
        popleft = pending.popleft
        results: list[IngestResult] = []
        while pending:
            chunk = [popleft() for _ in range(min(len(pending), BATCH))]
            results.extend(await handle_batch(chunk))
            if pending:
                # The pipeline rarely awaits anything real: yield so the network, writer and others keep up.
                await asyncio.sleep(0)
        if self._reading_paused and not self._stopping:
            self._pause_reading(False)
        if self._durable_acks:
            self._settling = asyncio.create_task(
                _settle(functools.partial(self.pipeline.settle, results), self._settling, batch), name="mqtt-settle"
            )
            # A settle that fails (the store is gone) fails ingest: the supervisor reconnects, the broker resends.
            self._settling.add_done_callback(self._settle_done)

    def _settle_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("mqtt_settle_failed", error=repr(task.exception()))
            self._failed = task.exception()
            self._wake.set()


async def _settle(
    durable: Callable[[], Awaitable[None]], previous: asyncio.Task[None] | None, batch: asyncio.Future[int] | None
) -> None:
    """Make one batch durable, then acknowledge it, after the batch before it (PUBACKs go out in receipt order)."""
    try:
        if previous is not None:
            await asyncio.shield(previous)
        await durable()
    except BaseException as err:
        if batch is not None and not batch.done():
            batch.set_exception(err if isinstance(err, Exception) else ConnectionAbortedError(repr(err)))
            batch.exception()
        raise
    if batch is not None and not batch.done():
        batch.set_result(0)
