"""Notify under database trouble: live WebSocket push never waits for the outbox; outbox rows are group-committed
and survive a locked SQLite database and killed PostgreSQL connections, each alert delivered exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy.engine import make_url

from safecity.kernel.bus import MemoryBus
from safecity.store.engine import create_engine, upgrade
from safecity.warning.alerts import AlertService
from safecity.warning.notify.service import NotifyConfig, NotifyService
from safecity.warning.notify.subscriptions import Channel, SubscriptionCreate, SubscriptionFilter
from safecity.warning.notify.writer import OutboxWrite, OutboxWriter
from tests.integration.warning.notify_helpers import free_port, http_receiver, make_alert, raise_alert, wait_for

FAST = {"allow_loopback": True, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "poll_interval_s": 0.1}
RETRY: dict[str, Any] = {"writer_retry_initial_s": 0.01, "writer_retry_max_s": 0.05}


def _received_alert_ids(requests: list[tuple[dict[str, str], bytes]]) -> Counter[str]:
    return Counter(orjson.loads(body)["alert"]["alert_id"] for _, body in requests)


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> list[str]:
    got = []
    while not queue.empty():
        got.append(queue.get_nowait()["alert"]["alert_id"])
    return got


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    """An in-process bus (a failed handler's message is gone there: the service must not fail)."""
    memory = MemoryBus()
    await memory.start()
    yield memory
    await memory.close()


async def test_sqlite_lock_delays_the_outbox_but_not_live_push_and_loses_nothing(
    sqlite_url: str, bus: MemoryBus
) -> None:
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url, busy_timeout_ms=20)
    path = make_url(sqlite_url).database
    assert path is not None
    svc = NotifyService(engine, bus, NotifyConfig(**FAST), **RETRY)
    await svc.start()
    try:
        async with http_receiver(free_port()) as receiver:
            await svc.create(SubscriptionCreate(name="hook", channel=Channel.WEBHOOK, target=receiver.url))
            live = svc.hub.connect(SubscriptionFilter())
            before = [make_alert() for _ in range(20)]
            for alert in before:
                await raise_alert(bus, alert)
            await wait_for(lambda: len(receiver.requests) == 20)
            assert sorted(_drain(live.queue)) == sorted(a.alert_id for a in before)

            during = [make_alert() for _ in range(200)]
            await wait_for(lambda: svc.dispatcher.stats.delivered == 20)
            # Taken off the event loop: the service may be finishing a write transaction, which needs the loop.
            locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            try:
                await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
                for alert in during:
                    await raise_alert(bus, alert)
                # Every alert reaches the live client while no outbox row can be written.
                await wait_for(lambda: live.queue.qsize() == 200)
                await wait_for(lambda: svc.writer.stats.retries >= 3)
                assert len(receiver.requests) == 20
                assert svc.writer.queued > 0
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            assert sorted(_drain(live.queue)) == sorted(a.alert_id for a in during)

            await wait_for(lambda: len(receiver.requests) >= 220, 60)
            await bus.drain()
            await svc.writer.flush()
            await asyncio.sleep(0.3)  # room for a duplicate to show up, were there one
            received = _received_alert_ids(receiver.requests)
            assert received == Counter({a.alert_id: 1 for a in [*before, *during]})
            rows = await svc.deliveries(limit=1000)
            assert len(rows) == 220
            assert {r["state"] for r in rows} == {"delivered"}
            # Group commit: far fewer transactions than alerts.
            assert svc.writer.stats.commits < 220 // 2
    finally:
        await svc.stop()
        await engine.dispose()


async def test_postgres_killed_connections_lose_nothing(pg_url: str, pg_admin_dsn: str, bus: MemoryBus) -> None:
    await upgrade(pg_url)
    name = make_url(pg_url).database
    kill = (
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )

    killed: list[int] = []

    async def terminate() -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            killed.append(len(await conn.fetch(kill)))
        finally:
            await conn.close()

    engine = create_engine(pg_url)
    svc = NotifyService(engine, bus, NotifyConfig(**FAST, attempt_timeout_s=1.0, lane_batch=5), **RETRY)
    await svc.start()
    try:
        async with http_receiver(free_port()) as receiver:
            await svc.create(SubscriptionCreate(name="hook", channel=Channel.WEBHOOK, target=receiver.url))
            live = svc.hub.connect(SubscriptionFilter())
            alerts = [make_alert() for _ in range(400)]
            for i, alert in enumerate(alerts):
                await raise_alert(bus, alert)
                if i % 50 == 25:
                    await asyncio.sleep(0.03)
                    await terminate()
            await wait_for(lambda: live.queue.qsize() == 400)
            await wait_for(lambda: len(receiver.requests) >= 400, 90)
            await bus.drain()
            await svc.writer.flush()
            await asyncio.sleep(0.3)
            assert _received_alert_ids(receiver.requests) == Counter({a.alert_id: 1 for a in alerts})
            rows = await svc.deliveries(limit=1000)
            assert len(rows) == 400
            assert {r["state"] for r in rows} == {"delivered"}
            # The fault happened: the node's connections were killed under it (with group commits most kills hit a
            # pooled connection between transactions, which the pool replaces; one inside a transaction is retried).
            assert sum(killed) >= 1
    finally:
        await svc.stop()
        await engine.dispose()


async def test_stop_commits_what_is_queued(sqlite_url: str, bus: MemoryBus) -> None:
    """Alerts handled just before stop are in the outbox afterwards (a long batch window is flushed, not dropped)."""
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    port = free_port()  # nothing listens: deliveries stay pending
    svc = NotifyService(engine, bus, NotifyConfig(**FAST), writer_interval_s=60.0)
    await svc.start()
    try:
        sub, _ = await svc.create(
            SubscriptionCreate(name="later", channel=Channel.WEBHOOK, target=f"http://127.0.0.1:{port}/hook")
        )
        alerts = [make_alert() for _ in range(30)]
        for alert in alerts:
            await raise_alert(bus, alert)
        await bus.drain()
        assert await svc.deliveries(subscription_id=sub.id) == []
        assert svc.writer.queued == 30
    finally:
        await svc.stop()
    try:
        again = NotifyService(engine, bus, NotifyConfig(**FAST))
        rows = await again.deliveries(subscription_id=sub.id, limit=100)
        assert sorted(r["alert_id"] for r in rows) == sorted(a.alert_id for a in alerts)
    finally:
        await engine.dispose()


async def test_writer_batches_and_applies_back_pressure(sqlite_url: str) -> None:
    """Writes gathered in one window share a transaction; a full queue makes `add` wait until there is room."""
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    commits: list[int] = []
    writer = OutboxWriter(engine, interval_s=0.05, queue_size=3, on_commit=lambda *_: commits.append(1))

    def write(i: int) -> OutboxWrite:
        from safecity.kernel import clock, ids

        now = clock.now()
        row: dict[str, Any] = {
            "id": ids.new_id(),
            "subscription_id": "s",
            "alert_id": f"a-{i}",
            "kind": "alert.raised",
            "body": {},
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": None,
            "created_at": now,
            "delivered_at": None,
        }
        return OutboxWrite(rows=[row, dict(row)], alert_id=row["alert_id"])  # a repeated id is a no-op

    try:
        for i in range(3):
            await writer.add(write(i))
        blocked = asyncio.create_task(writer.add(write(3)))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        task = asyncio.create_task(writer.run())
        try:
            await asyncio.wait_for(blocked, 10)
            await asyncio.wait_for(writer.flush(), 10)
        finally:
            task.cancel()
        assert writer.stats.writes == 4
        assert writer.stats.commits == len(commits) <= 2
        from safecity.warning.notify.repo import OutboxRepo

        async with engine.connect() as conn:
            stored = await OutboxRepo(conn).rows(limit=100)
        assert sorted(r["alert_id"] for r in stored) == [f"a-{i}" for i in range(4)]
    finally:
        await engine.dispose()


async def test_alerts_raised_while_sqlite_is_locked_are_stored_once_it_frees(sqlite_url: str, bus: MemoryBus) -> None:
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url, busy_timeout_ms=20)
    path = make_url(sqlite_url).database
    assert path is not None
    svc = AlertService(engine, bus, node_id="test-hub")
    await svc.start()
    try:
        alerts = [make_alert() for _ in range(5)]
        locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
            for alert in alerts:
                await raise_alert(bus, alert)
            await asyncio.sleep(0.5)  # several failed attempts, each retried
            assert bus.stats.handler_errors == 0
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await bus.drain()
        stored = [await svc.get(a.alert_id) for a in alerts]
        assert [s.id for s in stored] == [a.alert_id for a in alerts]
    finally:
        await svc.stop()
        await engine.dispose()
