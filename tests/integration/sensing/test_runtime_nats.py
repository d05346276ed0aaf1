"""The same ingest path with NATS JetStream as the bus and PostgreSQL as the store (the scale-out set-up)."""

from __future__ import annotations

import asyncio
import time

import orjson

from safecity.kernel.bus_nats import NatsBus
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sim.district import build_district

DISTRICT = build_district(devices=200)
DOOR = next(d for d in DISTRICT.devices if d["kind"] == "door")


async def test_events_flow_over_jetstream_into_postgres(pg_url: str, nats_url: str, unique_name: str) -> None:
    settings = Settings(
        database={"url": pg_url},
        log_json=False,
        bus={"kind": "nats", "nats_url": nats_url, "stream": f"T{unique_name}", "subject_prefix": f"t{unique_name}"},
    )
    rt = Runtime(settings, tagger=DISTRICT.tag_index())
    await rt.start()
    try:
        await rt.devices.upsert_many(DISTRICT.devices)
        topic = f"safecity/{DOOR['community']}/door/{DOOR['id']}"
        for i in range(300):
            await rt.mqtt_route(topic, orjson.dumps({"id": f"d{i}", "ts": time.time(), "open": i % 2 == 0}))
        # A replayed message (same id) is refused before the bus; the store holds each event once.
        await rt.mqtt_route(topic, orjson.dumps({"id": "d7", "ts": time.time(), "open": True}))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await rt.writer.flush()
            if await rt.events.count() >= 300:
                break
            await asyncio.sleep(0.1)
        assert await rt.events.count() == 300
        rows = await rt.events.list(limit=1000)
        assert {r["community"] for r in rows} == {DOOR["community"]}
        assert await rt.bus.healthy()
        assert (await rt.ready())["bus"] is True
    finally:
        await rt.stop()
        cleanup = NatsBus(nats_url, stream=f"T{unique_name}", subject_prefix=f"t{unique_name}")
        await cleanup.start()
        await cleanup.delete_stream()
        await cleanup.close()
