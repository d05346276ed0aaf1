"""MQTT ingest against a real Mosquitto: QoS 1 persistent sessions, shared subscriptions, reconnect."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import orjson
import pytest
from tests.conftest import _wait_port, free_port

from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sim.district import build_district

DISTRICT = build_district(devices=200)
SMOKE = [d for d in DISTRICT.devices if d["kind"] == "smoke"][:4]


def settings_for(db_url: str, host: str, port: int, prefix: str, **mqtt: object) -> Settings:
    return Settings(
        database={"url": db_url},
        log_json=False,
        mqtt={"enabled": True, "host": host, "port": port, "topic_prefix": prefix, "frigate": False, **mqtt},
    )


async def started(settings: Settings) -> Runtime:
    rt = Runtime(settings, tagger=DISTRICT.tag_index())
    await rt.start()
    await rt.devices.upsert_many(DISTRICT.devices)
    assert rt.mqtt is not None
    await asyncio.wait_for(rt.mqtt.connected.wait(), 10)
    return rt


async def publish(host: str, port: int, prefix: str, n: int, *, qos: int, start: int = 0) -> None:
    async with aiomqtt.Client(host, port) as client:
        for i in range(start, start + n):
            device = SMOKE[i % len(SMOKE)]
            body = orjson.dumps({"id": f"m{i}", "ts": time.time(), "alarm": False})
            await client.publish(f"{prefix}/{device['community']}/smoke/{device['id']}", body, qos=qos)


async def wait_stored(rt: Runtime, n: int, within: float = 20) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await rt.writer.flush()
        count = await rt.events.count()
        if count >= n:
            return count
        await asyncio.sleep(0.1)
    return await rt.events.count()


@pytest.fixture
async def node(sqlite_url: str, mqtt_broker: tuple[str, int], unique_name: str) -> AsyncIterator[Runtime]:
    host, port = mqtt_broker
    rt = await started(settings_for(sqlite_url, host, port, f"sc{unique_name}", client_id=f"t-{unique_name}"))
    yield rt
    await rt.stop()


async def test_messages_over_mqtt_are_stored_exactly_once(node: Runtime, mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    prefix = node.settings.mqtt.topic_prefix
    await publish(host, port, prefix, 500, qos=1)
    assert await wait_stored(node, 500) == 500
    rows = await node.events.list(limit=1000)
    assert len({r["message_id"] for r in rows}) == 500
    assert all(r["community"] == SMOKE[int(r["message_id"][1:]) % 4]["community"] for r in rows)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])  # 5: clean_start off with a session expiry interval
async def test_persistent_session_receives_what_was_sent_while_away(
    sqlite_url: str, mqtt_broker: tuple[str, int], unique_name: str, protocol: str
) -> None:
    host, port = mqtt_broker
    prefix = f"sc{unique_name}"
    settings = settings_for(sqlite_url, host, port, prefix, client_id=f"persist-{unique_name}", protocol=protocol)
    rt = await started(settings)
    await publish(host, port, prefix, 50, qos=1)
    assert await wait_stored(rt, 50) == 50
    await rt.stop()
    # Away: QoS 1 messages wait in the broker for our persistent session.
    await publish(host, port, prefix, 70, qos=1, start=50)
    rt = await started(settings)
    try:
        assert await wait_stored(rt, 120) == 120
    finally:
        await rt.stop()


async def test_shared_subscription_spreads_load_over_workers(
    tmp_path: Path, mqtt_broker: tuple[str, int], unique_name: str
) -> None:
    host, port = mqtt_broker
    prefix = f"sc{unique_name}"
    workers = [
        await started(
            settings_for(
                f"sqlite+aiosqlite:///{tmp_path / f'w{i}.db'}",
                host,
                port,
                prefix,
                shared_group=f"g{unique_name}",
                client_id=f"w{i}-{unique_name}",
            )
        )
        for i in range(2)
    ]
    try:
        await publish(host, port, prefix, 400, qos=1)
        deadline = time.monotonic() + 20
        counts = [0, 0]
        while time.monotonic() < deadline and sum(counts) < 400:
            await asyncio.sleep(0.2)
            counts = [await wait_stored(w, 0, 0.1) for w in workers]
        assert sum(counts) == 400
        assert min(counts) > 0, counts
    finally:
        for w in workers:
            await w.stop()


def start_broker(conf: Path, port: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Start Mosquitto on `conf` and wait for its port."""
    procs.append(subprocess.Popen(["mosquitto", "-c", str(conf)]))
    _wait_port(port, procs[-1], "mosquitto")


@pytest.fixture
def own_broker() -> Iterator[tuple[int, list[subprocess.Popen[bytes]], Path]]:
    port = free_port()
    conf = Path(tempfile.mkdtemp(prefix="safecity-mqtt-")) / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    procs: list[subprocess.Popen[bytes]] = []
    start_broker(conf, port, procs)
    yield port, procs, conf
    for p in procs:
        p.terminate()
        p.wait(10)


async def test_ingest_reconnects_after_the_broker_restarts(
    sqlite_url: str, own_broker: tuple[int, list[subprocess.Popen[bytes]], Path], unique_name: str
) -> None:
    port, procs, conf = own_broker
    prefix = f"sc{unique_name}"
    rt = await started(settings_for(sqlite_url, "127.0.0.1", port, prefix, client_id=f"rc-{unique_name}"))
    try:
        await publish("127.0.0.1", port, prefix, 20, qos=1)
        assert await wait_stored(rt, 20) == 20
        procs[0].terminate()
        await asyncio.to_thread(procs[0].wait, 10)
        assert rt.mqtt is not None
        for _ in range(100):
            if not rt.mqtt.connected.is_set():
                break
            await asyncio.sleep(0.05)
        assert not rt.mqtt.connected.is_set()
        await asyncio.to_thread(start_broker, conf, port, procs)
        await asyncio.wait_for(rt.mqtt.connected.wait(), 40)
        await publish("127.0.0.1", port, prefix, 20, qos=1, start=20)
        assert await wait_stored(rt, 40) == 40
        assert rt.mqtt.reconnects >= 1
    finally:
        await rt.stop()
