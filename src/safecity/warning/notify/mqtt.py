"""The `mqtt` channel: publish alert JSON to `<prefix>/<severity>/<community>` with QoS 1."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiomqtt
import orjson
import structlog

from safecity.kernel import ids
from safecity.warning.notify import tasks
from safecity.warning.notify.delivery import Delivery, stamp_delivered
from safecity.warning.notify.subscriptions import Subscription

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "safecity/alerts"
_UNSAFE = re.compile(r"[/+#\x00\s]")


def topic_for(prefix: str, body: dict[str, Any]) -> str:
    """Return the topic of a message: `<prefix>/<severity lower case>/<community or _none>` for an alert,
    `<prefix>/task/<responder id>` for a task message."""
    if tasks.is_task(body):
        responder = str((body.get("task") or {}).get("responder_id") or "_none")
        return f"{prefix.rstrip('/')}/task/{_UNSAFE.sub('_', responder)}"
    alert = body.get("alert") or {}
    severity = str(alert.get("severity") or "unknown").lower()
    community = (alert.get("tags") or {}).get("community") or "_none"
    # A topic level must not contain separators or wildcards; place names come from data, so make them safe.
    return f"{prefix.rstrip('/')}/{_UNSAFE.sub('_', severity)}/{_UNSAFE.sub('_', str(community))}"


class MqttSender:
    """One long-lived MQTT connection; a failed publish drops it so the next attempt reconnects."""

    def __init__(self, host: str, port: int = 1883, *, default_prefix: str = DEFAULT_PREFIX) -> None:
        self.host = host
        self.port = port
        self.default_prefix = default_prefix
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            client = aiomqtt.Client(self.host, self.port, identifier=f"safecity-notify-{ids.new_id()}")
            await client.__aenter__()
            self._client = client
        return self._client

    async def close(self) -> None:
        """Disconnect."""
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                log.info("notify_mqtt_disconnect_failed")

    async def send(self, sub: Subscription, delivery: Delivery) -> None:
        """Publish with QoS 1 (returns after the broker's PUBACK)."""
        topic = topic_for(sub.target or self.default_prefix, delivery.body)
        payload = orjson.dumps(stamp_delivered(delivery.body))
        async with self._lock:
            try:
                client = await self._connected()
                await client.publish(topic, payload, qos=1)
            except (aiomqtt.MqttError, OSError, asyncio.CancelledError, TimeoutError):
                await self._drop()
                raise
