"""Responder positions over a real MQTT broker: good fixes move the responder (and go out on `responder.moved`),
bad ones become dead letters with their reason, and the feed keeps going."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.dispatch.positions import PositionFeed
from safecity.dispatch.responders import ResponderIn
from safecity.dispatch.service import DispatchService
from safecity.kernel.bus import MemoryBus
from safecity.kernel.dispatch_settings import DispatchSettings
from safecity.kernel.envelope import Envelope
from safecity.kernel.settings import MqttSettings
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.store.engine import create_engine, upgrade


class Letters:
    """A dead-letter sink that keeps what it is given."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def put(self, **fields: Any) -> None:
        self.items.append(fields)

    async def durable(self) -> None:
        return None


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncEngine:
    await upgrade(sqlite_url)
    return create_engine(sqlite_url)


async def test_positions_over_mqtt_move_responders_and_bad_ones_are_dead_lettered(
    engine: AsyncEngine, mqtt_broker: tuple[str, int], unique_name: str
) -> None:
    host, port = mqtt_broker
    bus = MemoryBus()
    await bus.start()
    moved: list[Envelope] = []

    async def keep(env: Envelope) -> None:
        moved.append(env)

    await bus.subscribe("responder.moved", keep)
    service = DispatchService(
        engine, bus, DispatchSettings(), pseudonymize=Pseudonymizer(b"k" * 32), link_key=b"l" * 32
    )
    await service.import_responders(
        [ResponderIn(id="car-1", kind="police", unit_type="car", station="s1")]  # type: ignore[arg-type]
    )
    letters = Letters()
    settings = MqttSettings(host=host, port=port, topic_prefix=unique_name, client_id=unique_name)
    feed = PositionFeed(settings, service.report_position, letters)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.connected.wait(), 10)
        now = datetime.now(UTC)
        messages = [
            ("car-1", json.dumps({"lon": 121.25, "lat": 31.37, "fix_at": now.isoformat()}).encode()),
            ("car-1", b"not json"),
            ("car-1", json.dumps({"lon": 500, "lat": 31.37}).encode()),
            ("ghost", json.dumps({"lon": 121.25, "lat": 31.37}).encode()),
            (
                "car-1",
                json.dumps({"lon": 121.25, "lat": 31.37, "fix_at": (now - timedelta(hours=2)).isoformat()}).encode(),
            ),
            ("car-1", json.dumps({"lon": 121.26, "lat": 31.38, "heading": 90}).encode()),
        ]
        async with aiomqtt.Client(host, port) as client:
            for responder_id, payload in messages:
                await client.publish(f"{unique_name}/responders/{responder_id}/position", payload, qos=0)
        for _ in range(200):
            if feed.taken + feed.refused >= len(messages):
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert (feed.taken, feed.refused) == (2, 4)
    assert [d["reason"] for d in letters.items] == [
        "invalid_position",
        "invalid_position",
        "dispatch.responder_not_found",
        "dispatch.bad_position",
    ]
    assert all(d["kind"] == "responder_position" and d["topic"].endswith("/position") for d in letters.items)
    unit = await service.responder("car-1")
    assert (unit.lon, unit.lat, unit.heading) == (121.26, 31.38, 90.0)
    await bus.drain()
    assert [e.payload.lon for e in moved] == [121.25, 121.26]  # type: ignore[attr-defined]
    await bus.close()
    await engine.dispose()
