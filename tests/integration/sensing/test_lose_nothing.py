"""Lose nothing: poison input, store refusals, duplicates after a restart, bus overflow, a stalled store.

Every message sent ends up stored exactly once or dead-lettered with its reason, and ingest goes on: over MQTT (a real
Mosquitto) and HTTP batch ingest, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text

from safecity.api.app import create_app
from safecity.kernel.envelope import Envelope
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sharing.keys import Role
from safecity.sim.district import build_district

DISTRICT = build_district(devices=200)
SMOKE = [d for d in DISTRICT.devices if d["kind"] == "smoke"][:4]
DOOR = next(d for d in DISTRICT.devices if d["kind"] == "door")
CHECKPOINT = next(d for d in DISTRICT.devices if d["kind"] == "checkpoint")

DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


def topic(prefix: str, device: dict[str, Any], kind: str | None = None) -> str:
    return f"{prefix}/{device['community']}/{kind or device['kind']}/{device['id']}"


def line(device: dict[str, Any], ident: str, **data: Any) -> bytes:
    body: dict[str, Any] = {"device": device["id"], "kind": device["kind"], "id": ident, "ts": time.time()}
    if device["kind"] == "smoke":
        body["alarm"] = False
    body.update(data)
    return json.dumps(body, ensure_ascii=False).encode()  # json: orjson refuses what these tests must send


async def counts(rt: Runtime) -> tuple[int, dict[str, int]]:
    """(events stored, dead letters by reason) as the database holds them."""
    async with rt.engine.connect() as conn:
        stored = int((await conn.execute(text("SELECT count(*) FROM events"))).scalar_one())
        reasons = dict((await conn.execute(text("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))).all())
    return stored, {str(k): int(v) for k, v in reasons.items()}


async def no_duplicate_rows(rt: Runtime) -> bool:
    async with rt.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT device_id, message_id FROM events"))).all()
    return len(rows) == len(set(rows))


async def eventually(check: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


def node_settings(db_url: str, **overrides: Any) -> Settings:
    return Settings(database={"url": db_url}, log_json=False, **overrides)


@pytest.fixture
async def node(db_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient, dict[str, str]]]:
    """A node with its HTTP API (no MQTT), the devices registered, and an ingest key."""
    app, client, manager = await start_app(node_settings(db_url))
    rt: Runtime = app.state.runtime
    key = await rt.keys.create("ingest test", Role.INGEST)
    try:
        yield rt, client, {"X-API-Key": key.key}
    finally:
        await client.aclose()
        await manager.__aexit__(None, None, None)


async def start_app(settings: Settings) -> tuple[FastAPI, httpx.AsyncClient, LifespanManager]:
    rt = Runtime(settings, tagger=DISTRICT.tag_index())
    app = create_app(rt.api_services())
    app.state.runtime = rt  # the tests reach the node behind the app here
    manager = LifespanManager(app, startup_timeout=60, shutdown_timeout=60)
    await manager.__aenter__()
    await rt.devices.upsert_many(DISTRICT.devices)
    transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
    return app, httpx.AsyncClient(transport=transport, base_url="http://testserver"), manager


# --- 2, 3: HTTP batch ingest answers per line, once durable, and never 500s on content -----------------------------


async def test_batch_answers_each_line_and_stores_what_it_accepts(
    node: tuple[Runtime, httpx.AsyncClient, dict[str, str]],
) -> None:
    rt, client, headers = node
    good = [line(SMOKE[0], f"ok{i}") for i in range(4)]
    bad = {
        "invalid UTF-8": b'{"device": "%s", "kind": "smoke", "state": "\xff"}' % SMOKE[0]["id"].encode(),
        "10,000 deep": DEEP,
        "integer over 64 bits": line(SMOKE[1], "big", data={"n": 2**100}),
        "300 objects deep": line(SMOKE[1], "deep", data=json.loads('{"a":' * 300 + "1" + "}" * 300)),
        "NUL in a text": line(SMOKE[1], "nul", state="on\x00off"),
        "NUL in a field name": line(SMOKE[1], "nulkey", data={"a\x00b": 1}),
        "non-finite number": line(SMOKE[1], "inf", data={"x": 1.0}).replace(b'"x": 1.0', b'"x": 1e999'),
    }
    body = b"\n".join([good[0], *bad.values(), *good[1:]])
    answer = await client.post("/api/v1/ingest/batch", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    report = answer.json()
    assert report["lines"] == 1 + len(bad) + 3
    assert report["accepted"] == 4
    refused = {r["line"]: r["reason"] for r in report["dead_lettered"]}
    assert sorted(refused) == list(range(2, 2 + len(bad)))
    assert set(refused.values()) <= {"malformed_json", "invalid_payload"}, report["dead_lettered"]
    # Answered once durable: every accepted event is stored now, every refused line is a dead letter now.
    stored, reasons = await counts(rt)
    assert stored == 4
    assert sum(reasons.values()) == len(bad)
    for event_id in report["event_ids"]:
        assert await rt.events.get(event_id) is not None

    checkpoint = await client.post(
        "/api/v1/ingest/batch?format=checkpoint",
        content=b'{"device": "%s", "plate": "\xff\xfe"}\n' % CHECKPOINT["id"].encode() + DEEP,
        headers=headers,
    )
    assert checkpoint.status_code == 202, checkpoint.text
    assert [r["reason"] for r in checkpoint.json()["dead_lettered"]] == ["malformed_json", "invalid_payload"]


async def test_a_duplicate_after_a_restart_is_answered_as_a_duplicate(db_url: str) -> None:
    settings = node_settings(db_url)
    first = line(DOOR, "door-1", open=True)
    for attempt in range(3):
        app, client, manager = await start_app(settings)
        rt: Runtime = app.state.runtime
        key = await rt.keys.create("ingest test", Role.INGEST)
        if attempt == 2:
            # The reloaded ids are gone (older than the reload window): the store's unique index answers instead.
            rt.pipeline._seen.clear()
        try:
            answer = await client.post("/api/v1/ingest/batch", content=first, headers={"X-API-Key": key.key})
            report = answer.json()
            if attempt == 0:
                assert report["accepted"] == 1
            else:
                assert report["accepted"] == 0, report
                assert [r["reason"] for r in report["dead_lettered"]] == ["duplicate"]
            assert (await counts(rt))[0] == 1
        finally:
            await client.aclose()
            await manager.__aexit__(None, None, None)


# --- 1: poison over MQTT is dead-lettered and ingest goes on; a dead loop is restarted and shown -------------------


@pytest.fixture
async def mqtt_node(
    db_url: str, mqtt_broker: tuple[str, int], unique_name: str
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    host, port = mqtt_broker
    settings = node_settings(
        db_url,
        mqtt={
            "enabled": True,
            "host": host,
            "port": port,
            "topic_prefix": f"sc{unique_name}",
            "frigate": True,
            "client_id": f"poison-{unique_name}",
        },
    )
    app, client, manager = await start_app(settings)
    rt: Runtime = app.state.runtime
    assert rt.mqtt is not None
    await asyncio.wait_for(rt.mqtt.connected.wait(), 10)
    try:
        yield rt, client
    finally:
        await client.aclose()
        await manager.__aexit__(None, None, None)


async def test_poison_messages_over_mqtt_are_dead_lettered_and_ingest_goes_on(
    mqtt_node: tuple[Runtime, httpx.AsyncClient], mqtt_broker: tuple[str, int]
) -> None:
    rt, client = mqtt_node
    host, port = mqtt_broker
    prefix = rt.settings.mqtt.topic_prefix
    poison = [
        (topic(prefix, SMOKE[0]), b'{"state":"\xff"}'),
        (topic(prefix, SMOKE[0]), DEEP),
        ("frigate/events", b'{"type":"\xff"}'),
        ("frigate/events", DEEP),
        (topic(prefix, SMOKE[1]), json.dumps({"ts": time.time(), "alarm": False, "data": {"n": 2**70}}).encode()),
    ]
    async with aiomqtt.Client(host, port) as sender:
        for t, payload in poison:
            await sender.publish(t, payload, qos=1)
        for i in range(5):
            await sender.publish(topic(prefix, SMOKE[2]), line(SMOKE[2], f"after{i}"), qos=1)

    async def all_kept() -> bool:
        stored, reasons = await counts(rt)
        return stored == 5 and sum(reasons.values()) == len(poison)

    assert await eventually(all_kept), await counts(rt)
    assert rt.supervisor.down() == []
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text


async def test_a_failing_loop_is_restarted_counted_and_fails_readiness(
    node: tuple[Runtime, httpx.AsyncClient, dict[str, str]],
) -> None:
    rt, client, _ = node
    rt.supervisor.initial_backoff_s = 0.5
    runs = 0
    release = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")
        await release.wait()
        await asyncio.Event().wait()

    rt.spawn(flaky, "flaky-loop")

    async def is_down() -> bool:
        return rt.supervisor.down() == ["flaky-loop"]

    assert await eventually(is_down, 5)
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["tasks"]["down"] == ["flaky-loop"]

    async def is_back() -> bool:
        return runs == 2 and not rt.supervisor.down()

    assert await eventually(is_back, 5)
    assert (await client.get("/readyz")).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert 'safecity_task_failures_total{task="flaky-loop"} 1.0' in metrics
    assert 'safecity_task_up{task="flaky-loop"} 1.0' in metrics
    release.set()


# --- 4: a subscriber that cannot keep up loses nothing silently --------------------------------------------------


async def test_bus_overflow_is_dead_lettered(node: tuple[Runtime, httpx.AsyncClient, dict[str, str]]) -> None:
    rt, client, headers = node
    stuck = asyncio.Event()

    async def never_done(_: Envelope) -> None:
        await stuck.wait()

    await rt.bus.subscribe("event.>", never_done, queue_size=1)
    rt.bus.block_timeout = 0.05  # type: ignore[attr-defined]
    body = b"\n".join(line(SMOKE[3], f"o{i}") for i in range(5))
    answer = await client.post("/api/v1/ingest/batch", content=body, headers=headers)
    assert answer.json()["accepted"] == 5
    stored, reasons = await counts(rt)
    # The stuck subscriber took one and queued one; the other three are dead letters that name it. All are stored.
    assert stored == 5
    assert reasons.get("bus_overflow") == 3
    stuck.set()
