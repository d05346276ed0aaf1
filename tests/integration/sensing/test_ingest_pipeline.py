"""The ingest path end to end on a real runtime: normalize -> tag -> bus -> stored, and every kind of bad input
dead-lettered with its reason while the good messages around it are all stored, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from safecity.kernel.envelope import Envelope
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sensing.model import DeadLetterReason
from safecity.sim.district import build_district

DISTRICT = build_district(devices=400)
SMOKE = next(d for d in DISTRICT.devices if d["kind"] == "smoke")
CHECKPOINT = next(d for d in DISTRICT.devices if d["kind"] == "checkpoint")
CAMERA = {
    "id": "frigate:front_door",
    "kind": "video",
    "name": "北门摄像机",
    "town": SMOKE["town"],
    "community": SMOKE["community"],
    "building": None,
    "lon": SMOKE["lon"],
    "lat": SMOKE["lat"],
    "owner": "test",
    "status": "active",
    "offline_after_s": None,
    "attributes": {},
}


def topic(device: dict[str, Any], kind: str | None = None) -> str:
    return f"safecity/{device['community']}/{kind or device['kind']}/{device['id']}"


@pytest.fixture
async def runtime(db_url: str) -> AsyncIterator[Runtime]:
    settings = Settings(database={"url": db_url}, log_json=False, ingest={"max_payload_bytes": 4096})
    rt = Runtime(settings, tagger=DISTRICT.tag_index())
    await rt.start()
    await rt.devices.upsert_many([*DISTRICT.devices, CAMERA])
    try:
        yield rt
    finally:
        await rt.stop()


async def settle(rt: Runtime) -> None:
    """Wait until everything published is stored and dead letters are written."""
    await rt.bus.drain()
    await rt.writer.flush()
    await rt.dead_letters.flush()


async def test_good_message_is_tagged_published_and_stored(runtime: Runtime) -> None:
    seen: list[Envelope] = []

    async def grab(env: Envelope) -> None:
        seen.append(env)

    await runtime.bus.subscribe("event.smoke", grab)
    body = {"id": "a1", "ts": time.time(), "alarm": True, "temp": 71.5}
    await runtime.mqtt_route(topic(SMOKE), orjson.dumps(body))
    await settle(runtime)
    assert len(seen) == 1
    env = seen[0]
    assert env.payload.tags.building == SMOKE["building"]
    assert env.payload.tags.community == SMOKE["community"]
    assert env.payload.tags.town == SMOKE["town"]
    assert {"tagged", "published"} <= set(env.hops)
    stored = await runtime.events.list(device_id=SMOKE["id"])
    assert len(stored) == 1
    row = stored[0]
    assert row["id"] == env.id
    assert row["state"] == "alarm" or row["data"].get("alarm") is True
    assert row["building"] == SMOKE["building"]
    assert row["message_id"] == "a1"


async def test_plate_is_stored_only_as_keyed_hmac(runtime: Runtime) -> None:
    body = {"id": "c1", "ts": time.time(), "plate": "沪A 12345", "direction": "in"}
    await runtime.mqtt_route(topic(CHECKPOINT), orjson.dumps(body))
    await settle(runtime)
    [row] = await runtime.events.list(device_id=CHECKPOINT["id"])
    assert set(row["pseudonyms"]) == {"plate"}
    assert len(row["pseudonyms"]["plate"]) == 64
    assert "12345" not in json.dumps(row, default=str)
    # Same plate, same pseudonym: rules can match a watch list on it.
    assert row["pseudonyms"]["plate"] == runtime.pipeline.pseudonymize("plate", "沪A12345")


BAD_INPUTS: list[tuple[str, str, bytes | None]] = [
    ("malformed", DeadLetterReason.MALFORMED_JSON, b'{"alarm": tru'),
    ("wrong_type", DeadLetterReason.INVALID_PAYLOAD, b'{"alarm": "yes"}'),
    ("bad_coords", DeadLetterReason.BAD_COORDINATES, b'{"alarm": false, "lon": 200.0, "lat": 31.0}'),
    ("too_large", DeadLetterReason.TOO_LARGE, b'{"alarm": false, "data": {"x": "' + b"x" * 5000 + b'"}}'),
    ("future", DeadLetterReason.TIME_OUT_OF_RANGE, None),
    ("past", DeadLetterReason.TIME_OUT_OF_RANGE, None),
]


async def test_each_bad_input_is_dead_lettered_and_nothing_else_is_lost(runtime: Runtime) -> None:
    now = time.time()
    sent_good = 0
    dated = {
        "future": orjson.dumps({"alarm": False, "ts": now + 86_400}),
        "past": orjson.dumps({"alarm": False, "ts": now - 86_400 * 30}),
    }
    for i, (name, _reason, raw) in enumerate(BAD_INPUTS):
        await runtime.mqtt_route(topic(SMOKE), raw if raw is not None else dated[name])
        await runtime.mqtt_route(topic(SMOKE), orjson.dumps({"id": f"g{i}", "ts": now, "alarm": False}))
        sent_good += 1
    # Unknown device, unknown topic kind, duplicate message id.
    await runtime.mqtt_route(f"safecity/{SMOKE['community']}/smoke/ghost-1", orjson.dumps({"alarm": False}))
    await runtime.mqtt_route(f"safecity/{SMOKE['community']}/toaster/t-1", b"{}")
    await runtime.mqtt_route(topic(SMOKE), orjson.dumps({"id": "g0", "ts": now, "alarm": False}))
    await settle(runtime)

    assert await runtime.events.count() == sent_good
    rows = await runtime.dead_letter_repo.list(limit=100)
    reasons = sorted(r["reason"] for r in rows)
    expected = sorted(
        [str(r) for _, r, _ in BAD_INPUTS]
        + [DeadLetterReason.UNKNOWN_DEVICE, DeadLetterReason.UNKNOWN_TOPIC, DeadLetterReason.DUPLICATE]
    )
    assert reasons == expected
    too_large = next(r for r in rows if r["reason"] == DeadLetterReason.TOO_LARGE)
    assert too_large["raw_size"] > 5000
    assert len(too_large["raw"]) == runtime.settings.ingest.dead_letter_raw_bytes
    malformed = next(r for r in rows if r["reason"] == DeadLetterReason.MALFORMED_JSON)
    assert malformed["raw"] == b'{"alarm": tru'
    assert malformed["device_id"] == SMOKE["id"]
    text = runtime.metrics.render().decode()
    assert 'safecity_dead_letters_total{kind="smoke",reason="malformed_json"} 1.0' in text


async def test_frigate_face_updates_are_counted_never_stored(runtime: Runtime, shared_data: Path) -> None:
    folder = shared_data / "frigate_mqtt"
    face = (folder / "tracked_object_update__face_recognition_update.example.json").read_bytes()
    event = json.loads((folder / "events.example.json").read_text())
    for side in ("before", "after"):
        # The documented example dates from 2020: move it to now, or it is (rightly) refused as too old.
        shift = time.time() - event[side]["start_time"]
        for field in ("start_time", "frame_time", "end_time"):
            if event[side].get(field):
                event[side][field] += shift
        event[side]["camera"] = "front_door"
    await runtime.mqtt_route("frigate/tracked_object_update", face)
    await runtime.mqtt_route("frigate/events", orjson.dumps(event))
    await settle(runtime)
    rows = await runtime.events.list(device_id="frigate:front_door")
    assert len(rows) == 1
    assert rows[0]["kind"] == "video"
    assert await runtime.dead_letter_repo.count_by_reason() == {}
    text = runtime.metrics.render().decode()
    assert 'safecity_discarded_total{reason="biometric"} 1.0' in text


async def test_silent_device_raises_device_offline(runtime: Runtime) -> None:
    got: list[Envelope] = []
    arrived = asyncio.Event()

    async def grab(env: Envelope) -> None:
        got.append(env)
        arrived.set()

    await runtime.bus.subscribe("device.offline", grab)
    runtime.health.track(SMOKE["id"], 0.3)
    await asyncio.wait_for(arrived.wait(), 5)
    assert got[0].payload.device_id == SMOKE["id"]
    assert got[0].payload.tags.building == SMOKE["building"]
    assert "safecity_devices_offline_total 1.0" in runtime.metrics.render().decode()


async def test_storm_of_good_and_bad_messages_loses_nothing(runtime: Runtime) -> None:
    from safecity.sim.traffic import TrafficSimulator

    sim = TrafficSimulator(DISTRICT.devices, seed=3, bad_fraction=0.05)
    for _ in range(3000):
        msg = sim.message()
        await runtime.mqtt_route(msg.topic, msg.payload)
    await settle(runtime)
    published = runtime.metrics.total(runtime.metrics.events_out)
    dead = runtime.metrics.total(runtime.metrics.dead_letters)
    assert published + dead == 3000
    assert await runtime.events.count() == published
    assert sum((await runtime.dead_letter_repo.count_by_reason()).values()) == dead
    assert dead > 50


async def test_last_seen_reaches_the_device_registry(runtime: Runtime) -> None:
    ts = time.time()
    await runtime.mqtt_route(topic(SMOKE), orjson.dumps({"id": "ls1", "ts": ts, "alarm": False}))
    await settle(runtime)
    await runtime.device_health.persist_last_seen()
    device = await runtime.devices.get(SMOKE["id"])
    assert device.last_seen is not None
    assert abs(device.last_seen.timestamp() - ts) < 0.01


async def test_malformed_tracked_object_update_keeps_no_bytes(runtime: Runtime) -> None:
    # Truncated JSON that still holds a recognised name: the dead letter records the fault, never the name.
    raw = b'{"type": "face", "name": "Zhang San", "score": 0.9'
    await runtime.mqtt_route("frigate/tracked_object_update", raw)
    await settle(runtime)
    rows = await runtime.dead_letter_repo.list()
    assert len(rows) == 1
    assert rows[0]["raw"] == b""
    assert rows[0]["raw_size"] == len(raw)
