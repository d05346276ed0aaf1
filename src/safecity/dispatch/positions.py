"""Responder positions over MQTT: `<prefix>/responders/<responder id>/position` with a JSON body
`{"lon": .., "lat": .., "heading": .., "fix_at": ..}` (heading and fix_at optional).

Positions are perishable (the next fix replaces this one), so the feed subscribes at QoS 0 and takes each message as
it comes. A message that cannot be used (not JSON, bad fields, an unknown responder, off the road network, stale or
out of order) becomes a dead letter with its reason; it never stops the feed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime

import aiomqtt
import structlog
from pydantic import ValidationError

from safecity.dispatch.incident import Position
from safecity.dispatch.model import ResponderMoved
from safecity.kernel.errors import SafeCityError
from safecity.kernel.settings import MqttSettings
from safecity.sensing.pipeline import DeadLetterSink

log = structlog.get_logger(__name__)

Report = Callable[..., Awaitable[ResponderMoved]]
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_PAYLOAD = 4096


class PositionFeed:
    """Subscribes to responders' position topics and hands each fix to `report` (DispatchService.report_position)."""

    def __init__(self, settings: MqttSettings, report: Report, dead_letters: DeadLetterSink) -> None:
        self.settings = settings
        self.report = report
        self.dead_letters = dead_letters
        self.topic = f"{settings.topic_prefix}/responders/+/position"
        self.source = f"mqtt:{settings.host}:{settings.port}"
        self.taken = 0
        self.refused = 0
        self.connected = asyncio.Event()

    async def handle(self, topic: str, payload: bytes, *, now: datetime | None = None) -> bool:
        """Take one message; False (and a dead letter) when it cannot be used."""
        parts = topic.split("/")
        responder_id = parts[-2] if len(parts) >= 3 else ""
        try:
            if not _ID.match(responder_id):
                raise ValueError(f"topic {topic[:200]!r} does not name a responder")
            if len(payload) > MAX_PAYLOAD:
                raise ValueError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
            fix = Position.model_validate_json(payload)
            await self.report(responder_id, fix.lon, fix.lat, fix_at=fix.fix_at, heading=fix.heading, now=now)
        except (ValueError, ValidationError, SafeCityError) as err:
            self.refused += 1
            reason = err.code if isinstance(err, SafeCityError) else "invalid_position"
            self.dead_letters.put(
                reason=reason,
                detail=str(err)[:500],
                source=self.source,
                raw=payload[:MAX_PAYLOAD],
                topic=topic,
                device_id=responder_id or None,
                kind="responder_position",
                raw_size=len(payload),
            )
            return False
        self.taken += 1
        return True

    async def run(self) -> None:
        """Connect, subscribe and take messages until cancelled (the supervisor restarts it after a failure)."""
        client_id = f"{self.settings.client_id}-positions"
        async with aiomqtt.Client(self.settings.host, self.settings.port, identifier=client_id) as client:
            await client.subscribe(self.topic, qos=0)
            self.connected.set()
            log.info("position_feed_started", topic=self.topic)
            try:
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                    await self.handle(str(message.topic), payload)
            finally:
                self.connected.clear()
