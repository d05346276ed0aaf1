"""A normalizer added by one module and nothing else: this test module defines and registers a toy format.

The toy reads a water-level gauge on its own topic kind, `<prefix>/<community>/toy_level/<device>`. Registered, it
is served end to end without editing any other file: an MQTT message through the real broker and an HTTP batch line
are normalized and stored, its topic is in the AsyncAPI document, the simulator sends it, the HTTP ingest accepts
its format and still refuses unknown ones with 422. Unregistered, every trace of it is gone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import aiomqtt
import httpx
import jsonschema_rs
import msgspec
import pytest
from asgi_lifespan import LifespanManager
from msgspec import Meta

from safecity.api.app import create_app
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sensing.asyncapi import build_asyncapi
from safecity.sensing.model import DeadLetterReason, DeviceKind, EventKind, NormalizeError, Reading
from safecity.sensing.normalize import NORMALIZERS, NormalizerConflict, registry
from safecity.sensing.normalize._common import decode, to_time
from safecity.sensing.normalize.registry import NormalizerSpec, TopicKind
from safecity.sharing.keys import Role
from safecity.sim.district import build_district
from safecity.sim.traffic import TrafficSimulator, simulated_kinds

DISTRICT = build_district(devices=200)
GAUGE = next(d for d in DISTRICT.devices if d["kind"] == "generic")  # a gauge is registered as a generic device

# --- the toy normalizer: everything a new format needs ---------------------------------------------------------

KEY = "toy"
TOPIC_KIND = "toy_level"
FLOOD_CM = 50.0


class ToyLevel(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A water-level gauge's reading."""

    level_cm: Annotated[float, Meta(ge=0, le=10_000, description="Water above the gauge's zero, cm.")]
    id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    ts: float | None = None
    device: Annotated[str, Meta(min_length=1, max_length=128)] | None = None  # required in an HTTP batch line


_DECODER = msgspec.json.Decoder(ToyLevel)


def normalize(
    raw: bytes, *, topic: str | None, device_id: str | None, kind: DeviceKind | None, received_at: datetime
) -> list[Reading]:
    """One gauge reading -> one GENERIC reading; above FLOOD_CM its state is `flood`."""
    msg = decode(_DECODER, raw, device_id)
    device = device_id or (registry.route(topic).device_id if topic else None) or msg.device
    if device is None:
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, "no device id in topic or payload")
    return [
        Reading(
            device_id=device,
            kind=EventKind.GENERIC,
            occurred_at=to_time(msg.ts, received_at, device),
            message_id=msg.id,
            value=msg.level_cm,
            state="flood" if msg.level_cm > FLOOD_CM else "normal",
            data={"level_cm": msg.level_cm, "gauge": "toy"},
        )
    ]


SPEC = NormalizerSpec(
    key=KEY,
    normalize=normalize,
    summary="A toy water-level gauge (defined in a test).",
    kinds=(
        TopicKind(
            kind=TOPIC_KIND,
            payload=ToyLevel,
            device_kind=DeviceKind.GENERIC,
            summary="Water-level gauge: `level_cm` is required.",
            example={"level_cm": 62.5},
        ),
    ),
)

# --- the test ----------------------------------------------------------------------------------------------------


@contextmanager
def toy_registered() -> Iterator[None]:
    """The toy format registered for the duration of the block."""
    registry.register(SPEC)
    try:
        yield
    finally:
        registry.unregister(KEY)


def toy_topic(prefix: str) -> str:
    return f"{prefix}/{GAUGE['community']}/{TOPIC_KIND}/{GAUGE['id']}"


async def stored_rows(rt: Runtime, n: int, within: float = 20) -> list[dict[str, Any]]:
    """The gauge's stored events, once there are `n` of them (or the deadline passed)."""
    deadline = time.monotonic() + within
    while True:
        await rt.writer.flush()
        rows = await rt.events.list(device_id=GAUGE["id"], limit=100)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def test_a_toy_normalizer_is_served_end_to_end(
    sqlite_url: str, mqtt_broker: tuple[str, int], unique_name: str
) -> None:
    host, port = mqtt_broker
    prefix = f"sc{unique_name}"
    settings = Settings(
        database={"url": sqlite_url},
        log_json=False,
        mqtt={"enabled": True, "host": host, "port": port, "topic_prefix": prefix, "client_id": f"toy-{unique_name}"},
    )
    with toy_registered():
        assert KEY in NORMALIZERS
        with pytest.raises(NormalizerConflict) as conflict:
            registry.register(SPEC)  # the same key (and topic kind) twice
        assert conflict.value.code == "sensing.normalizer_conflict"

        rt = Runtime(settings, tagger=DISTRICT.tag_index())
        app = create_app(rt.api_services())
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            await rt.devices.upsert_many(DISTRICT.devices)
            assert rt.mqtt is not None
            await asyncio.wait_for(rt.mqtt.connected.wait(), 10)
            key = await rt.keys.create("toy ingest", Role.INGEST)
            headers = {"X-API-Key": key.key}
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                # MQTT, through the real broker, on the toy's own topic kind.
                async with aiomqtt.Client(host, port) as mqtt:
                    body = json.dumps({"id": "mqtt-1", "ts": time.time(), "level_cm": 71.0}).encode()
                    await mqtt.publish(toy_topic(prefix), body, qos=1)
                (row,) = await stored_rows(rt, 1)
                assert (row["message_id"], row["value"], row["state"]) == ("mqtt-1", 71.0, "flood")
                assert row["data"]["gauge"] == "toy" and row["community"] == GAUGE["community"]

                # HTTP batch ingest with the toy's format.
                line = {"device": GAUGE["id"], "id": "http-1", "ts": time.time(), "level_cm": 12.0}
                answer = await client.post(
                    "/api/v1/ingest/batch?format=toy", content=json.dumps(line).encode(), headers=headers
                )
                assert answer.status_code == 202, answer.text
                assert answer.json()["accepted"] == 1
                stored = await rt.events.get(answer.json()["event_ids"][0])
                assert stored is not None and (stored["value"], stored["state"]) == (12.0, "normal")

                # Unknown formats are still refused whole.
                refused = await client.post("/api/v1/ingest/batch?format=nope", content=b"{}", headers=headers)
                assert refused.status_code == 422
                assert refused.headers["content-type"].startswith("application/problem+json")
                assert refused.json()["code"] == "sensing.unknown_format"

                # The OpenAPI document lists the toy among the accepted formats.
                spec = (await client.get("/openapi.json")).json()
                (fmt,) = [
                    p for p in spec["paths"]["/api/v1/ingest/batch"]["post"]["parameters"] if p["name"] == "format"
                ]
                assert KEY in fmt["schema"]["enum"]

            # The simulator sends the toy's kind; its message goes the device path and is stored.
            assert TOPIC_KIND in simulated_kinds()
            sim = TrafficSimulator([{**GAUGE, "kind": TOPIC_KIND}], prefix=prefix, bad_fraction=0.0)
            sent = [m for m in (sim.message() for _ in range(40)) if m.topic == toy_topic(prefix)]
            assert sent and json.loads(sent[0].payload)["level_cm"] == 62.5
            async with aiomqtt.Client(host, port) as mqtt:
                await mqtt.publish(sent[0].topic, sent[0].payload, qos=1)
            rows = await stored_rows(rt, 3)
            assert sorted(r["value"] for r in rows) == [12.0, 62.5, 71.0]
            assert {r["message_id"] for r in rows} == {"mqtt-1", "http-1", json.loads(sent[0].payload)["id"]}

        # The AsyncAPI document has the toy's channel, payload schema and example.
        doc = build_asyncapi()
        channel = doc["channels"][f"device_{TOPIC_KIND}"]
        assert channel["address"] == f"safecity/{{community}}/{TOPIC_KIND}/{{device}}"
        schema = {"$ref": "#/components/schemas/ToyLevel", "components": doc["components"]}
        assert jsonschema_rs.validator_for(schema).is_valid({"level_cm": 62.5})
        assert not jsonschema_rs.validator_for(schema).is_valid({"level_cm": -1})

    # Unregistered: gone from every list derived from the registry.
    assert KEY not in NORMALIZERS
    assert registry.route(toy_topic("safecity")).spec is None
    assert TOPIC_KIND not in simulated_kinds()
    assert f"device_{TOPIC_KIND}" not in build_asyncapi()["channels"]
