"""A crash and a stalled database lose nothing acknowledged, on SQLite and PostgreSQL, with exact counts.

- kill -9 of a node mid-stream at 5,000 messages/s (QoS 1), then a restart: every message the broker took is stored
  exactly once (`sent = stored`, no duplicate row; the broker's redeliveries are dead-lettered as duplicates).
- the database held locked for 6 s under a stream: the node stops taking messages it cannot make durable (at most
  `receive_maximum` unacknowledged), answers HTTP ingest 503 with Retry-After, keeps answering /api/v1/me, and in the
  end `sent = stored + dead-lettered`, with no duplicate.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as paho
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.conftest import _wait_port, free_port

from safecity.api.app import create_app
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sharing.keys import Role
from safecity.sim.district import build_district

pytestmark = [pytest.mark.slow, pytest.mark.mqtt, pytest.mark.timeout(600)]

DISTRICT = build_district(devices=200)
SMOKE = [d for d in DISTRICT.devices if d["kind"] == "smoke"][:8]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A broker of the test's own that queues without limit for a client that is away (the default drops past 1,000)."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        "set_tcp_nodelay true\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, "mosquitto")
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Publisher(threading.Thread):
    """Sends `n` QoS 1 messages at `rate`/s; a message is sent once the broker has acknowledged it."""

    def __init__(self, host: str, port: int, prefix: str, n: int, rate: float, bad_every: int = 0) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.prefix, self.n, self.rate, self.bad_every = host, port, prefix, n, rate, bad_every
        self.sent = 0
        self.bad = 0
        self.error: BaseException | None = None

    def payload(self, i: int) -> tuple[str, bytes]:
        device = SMOKE[i % len(SMOKE)]
        topic = f"{self.prefix}/{device['community']}/smoke/{device['id']}"
        if self.bad_every and i % self.bad_every == 0:
            return topic, b'{"id": "m%d", "alarm": ' % i  # malformed: a dead letter
        return topic, json.dumps({"id": f"m{i}", "ts": time.time(), "alarm": False}).encode()

    def run(self) -> None:
        try:
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{self.prefix}")
            client.max_inflight_messages_set(2000)
            client.max_queued_messages_set(0)
            client.connect(self.host, self.port)
            client.loop_start()
            started = time.monotonic()
            infos = []
            for i in range(self.n):
                ahead = started + i / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                topic, body = self.payload(i)
                self.bad += body.endswith(b": ")
                infos.append(client.publish(topic, body, qos=1))
            for info in infos:
                info.wait_for_publish(60)
                assert info.is_published()
                self.sent += 1
            client.loop_stop()
            client.disconnect()
        except BaseException as err:
            self.error = err


async def db_counts(url: str) -> tuple[int, int, dict[str, int]]:
    """(event rows, distinct (device, message id), dead letters by reason)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            # One statement, so both counts read the same snapshot (two could straddle a commit of the writer).
            both = (
                "SELECT (SELECT count(*) FROM events),"
                " (SELECT count(*) FROM (SELECT DISTINCT device_id, message_id FROM events) d)"
            )
            rows, distinct = (int(n) for n in (await conn.execute(text(both))).one())
            reasons = (await conn.execute(text("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))).all()
    finally:
        await engine.dispose()
    return rows, distinct, {str(r): int(n) for r, n in reasons}


Counts = tuple[int, int, dict[str, int]]


async def counts_once(url: str, done: Callable[[Counts], bool], *, within: float) -> Counts:
    """`db_counts` once `done` holds for them, or as they are when `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        counts = await db_counts(url)
        if done(counts) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


def tail(log: Path) -> str:
    return log.read_bytes()[-3000:].decode(errors="replace")


async def wait_ready(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while b"READY" not in log.read_bytes():  # noqa: ASYNC240 - a small local file
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"node did not start: {tail(log)}")
        await asyncio.sleep(0.1)


def spawn_node(settings: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child has its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.sensing.node_process", json.dumps(settings)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_kill_9_mid_stream_loses_nothing_acknowledged(
    db_url: str, broker: tuple[str, int], unique_name: str, tmp_path: Path
) -> None:
    host, port = broker
    prefix = f"k{unique_name}"
    settings = {
        "database": {"url": db_url},
        "log_json": True,
        "log_level": "warning",
        "warning": {"enabled": False},
        "mqtt": {
            "enabled": True,
            "host": host,
            "port": port,
            "topic_prefix": prefix,
            "frigate": False,
            "client_id": f"node-{unique_name}",
        },
    }
    first = spawn_node(settings, tmp_path / "first.log")
    await wait_ready(tmp_path / "first.log", first)
    n, rate = 20_000, 5_000.0
    publisher = Publisher(host, port, prefix, n, rate)
    publisher.start()
    # Kill once a good part is stored, while the stream still runs.
    deadline = time.monotonic() + 60
    while (stored_at_kill := (await db_counts(db_url))[0]) < 2_000:
        assert time.monotonic() < deadline, "the node stored too little to test a crash mid-stream"
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert publisher.is_alive(), "the stream ended before the kill: raise n"
    second = spawn_node(settings, tmp_path / "second.log")
    try:
        await wait_ready(tmp_path / "second.log", second)
        await asyncio.to_thread(publisher.join, 120)
        assert publisher.error is None and publisher.sent == n

        rows, distinct, reasons = await counts_once(db_url, lambda c: c[1] >= n, within=120)
        print(f"kill -9 at {stored_at_kill} stored: sent {n}, stored {rows}, dead letters {reasons}")
        assert distinct == n, (rows, distinct, reasons)  # every message the broker took, stored
        assert rows == n  # and stored once
        # The broker resent what the first node had not acknowledged: duplicates, never anything else.
        assert set(reasons) <= {"duplicate"}, reasons
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(30)
        except subprocess.TimeoutExpired:
            second.kill()


def hold_sqlite_lock(path: str, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")  # the write lock: every writer waits, readers go on (WAL)
        locked.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def hold_pg_lock(url: str, seconds: float, locked: threading.Event) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE events, dead_letters IN EXCLUSIVE MODE")  # writers wait, readers go on
            locked.set()
            await asyncio.sleep(seconds)
    finally:
        await conn.close()


async def test_a_locked_database_slows_intake_and_loses_nothing(
    db_url: str, broker: tuple[str, int], unique_name: str
) -> None:
    host, port = broker
    prefix = f"l{unique_name}"
    receive_maximum = 500
    settings = Settings(
        database={"url": db_url},
        log_json=False,
        warning={"enabled": False},
        mqtt={
            "enabled": True,
            "host": host,
            "port": port,
            "topic_prefix": prefix,
            "frigate": False,
            "client_id": f"node-{unique_name}",
            "receive_maximum": receive_maximum,
        },
    )
    rt = Runtime(settings, tagger=DISTRICT.tag_index())
    app = create_app(rt.api_services())
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        await rt.devices.upsert_many(DISTRICT.devices)
        assert rt.mqtt is not None
        await asyncio.wait_for(rt.mqtt.connected.wait(), 10)
        key = await rt.keys.create("stall test", Role.INGEST)
        headers = {"X-API-Key": key.key}
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get("/api/v1/me", headers=headers)).status_code == 200  # verified, cached, noted
            rt.keys.clear_cache()  # the next call reads the key again, as after the cache period
            n, rate, lock_s = 4_000, 1_000.0, 6.0
            publisher = Publisher(host, port, prefix, n, rate, bad_every=10)
            publisher.start()
            await asyncio.sleep(1.0)
            locked = threading.Event()
            if db_url.startswith("sqlite"):
                lock = asyncio.create_task(
                    asyncio.to_thread(hold_sqlite_lock, db_url.split(":///", 1)[1], lock_s, locked)
                )
            else:
                lock = asyncio.create_task(hold_pg_lock(db_url, lock_s, locked))
            await asyncio.to_thread(locked.wait, 10)
            await asyncio.sleep(1.5)
            # Held well past SQLite's busy timeout: bookkeeping must not make a read fail.
            me = await client.get("/api/v1/me", headers=headers)
            assert me.status_code == 200, me.text
            refused = await client.post("/api/v1/ingest/batch", content=b'{"device": "x"}', headers=headers)
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "2"
            assert refused.headers["content-type"].startswith("application/problem+json")
            # Intake slowed: what the node holds and has not made durable stays within the broker's window.
            peak = 0
            for _ in range(10):
                rows, _, reasons = await db_counts(db_url)
                peak = max(peak, rt.mqtt.topics.received - rows - sum(reasons.values()))
                await asyncio.sleep(0.2)
            assert peak <= receive_maximum, peak
            await lock
            await asyncio.to_thread(publisher.join, 120)
            assert publisher.error is None and publisher.sent == n
            rows, distinct, reasons = await counts_once(db_url, lambda c: c[0] + sum(c[2].values()) >= n, within=60)
            print(f"locked {lock_s}s: sent {n}, stored {rows}, dead letters {reasons}, peak held {peak}")
            assert rows == distinct == n - publisher.bad
            assert reasons == {"malformed_json": publisher.bad}
            assert (await client.get("/readyz")).status_code == 200
