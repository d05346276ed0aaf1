"""MQTT ingest adapter (aiomqtt): device topics and Frigate topics into the ingest pipeline.

MQTT 5, QoS 1 by default, persistent session (clean_start off, session expiry), TCP_NODELAY, reconnect with
exponential backoff. With `shared_group` set it subscribes `$share/<group>/...` so several workers split the load.
"""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from safecity.kernel.settings import MqttSettings
from safecity.sensing.model import DeviceKind, EventKind
from safecity.sensing.pipeline import IngestPipeline

log = structlog.get_logger(__name__)

FRIGATE_TOPICS = ("frigate/events", "frigate/reviews", "frigate/tracked_object_update", "frigate/triggers")
SESSION_EXPIRY_S = 3600

# Topic kind -> (normalizer format, device kind). Heartbeats come from any device kind, so they carry none.
TOPIC_KINDS: dict[str, tuple[str, DeviceKind | None]] = {
    **{k.value: ("generic", k) for k in DeviceKind if k is not DeviceKind.CHECKPOINT},
    DeviceKind.CHECKPOINT.value: ("checkpoint", DeviceKind.CHECKPOINT),
    EventKind.HEARTBEAT.value: ("generic", None),
    EventKind.NETSEC.value: ("suricata", None),
}


def route_topic(topic: str, prefix: str) -> tuple[str, str | None, DeviceKind | None, str | None] | None:
    """Map a topic to (format, device_id, device kind, topic kind); None when the topic is not ours."""
    if topic.startswith("frigate/"):
        return ("frigate", None, DeviceKind.VIDEO, None)
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != prefix:
        return None
    _, _community, topic_kind, device_id = parts
    found = TOPIC_KINDS.get(topic_kind)
    if found is None:
        return None
    fmt, kind = found
    return (fmt, device_id, kind, topic_kind)


class TopicIngest:
    """Routes (topic, payload) pairs to the pipeline: the MQTT adapter and the in-process simulator share it."""

    def __init__(self, pipeline: IngestPipeline, *, prefix: str = "safecity", source: str = "mqtt") -> None:
        self.pipeline = pipeline
        self.prefix = prefix
        self.source = source
        self.received = 0

    async def handle(self, topic: str, payload: Any) -> None:
        """Route one message by its topic to the pipeline (unknown topics are dead-lettered)."""
        self.received += 1
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
        route = route_topic(topic, self.prefix)
        if route is None:
            self.pipeline.dead_letter_topic(raw, topic=topic, source=self.source)
            return
        fmt, device_id, kind, _ = route
        await self.pipeline.ingest(raw, fmt=fmt, source=self.source, topic=topic, device_id=device_id, kind=kind)


class MqttIngest:
    """Subscribes to the broker and feeds every message to the pipeline; reconnects forever until cancelled."""

    def __init__(self, settings: MqttSettings, pipeline: IngestPipeline, *, source: str = "mqtt") -> None:
        self.settings = settings
        self.topics = TopicIngest(pipeline, prefix=settings.topic_prefix, source=source)
        self.connected = asyncio.Event()
        self.reconnects = 0

    def _filters(self) -> list[str]:
        prefix = self.settings.topic_prefix
        filters = [f"{prefix}/+/+/+"]
        if self.settings.frigate:
            filters.extend(FRIGATE_TOPICS)
        if self.settings.shared_group:
            filters = [f"$share/{self.settings.shared_group}/{f}" for f in filters]
        return filters

    def _client(self) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        return aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            identifier=self.settings.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            max_queued_incoming_messages=50_000,
        )

    async def run(self) -> None:
        """Connect, subscribe, and process messages; on a lost connection back off and retry."""
        delay = 0.5
        while True:
            try:
                async with self._client() as client:
                    for topic_filter in self._filters():
                        await client.subscribe(topic_filter, qos=self.settings.qos)
                    self.connected.set()
                    delay = 0.5
                    log.info("mqtt_connected", host=self.settings.host, port=self.settings.port)
                    async for message in client.messages:
                        await self.topics.handle(str(message.topic), message.payload)
            except aiomqtt.MqttError as err:
                self.connected.clear()
                self.reconnects += 1
                wait = delay * (0.5 + random.random())
                log.warning("mqtt_disconnected", error=str(err), retry_in_s=round(wait, 2))
                await asyncio.sleep(wait)
                delay = min(delay * 2, 30.0)
