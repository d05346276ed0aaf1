"""Group-commit event writer on SQLite and PostgreSQL: batching, exactly-once storage, flush, failures."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock
from safecity.kernel.envelope import Envelope
from safecity.kernel.metrics import Metrics
from safecity.store import writer as writer_module
from safecity.store.engine import create_engine, upgrade
from safecity.store.events import EventRepo
from safecity.store.tables import events
from safecity.store.writer import DUPLICATE, EventWriter, WriterClosed, row_from_envelope

MakeEvent = Callable[..., Envelope]


async def _ids_stored_more_than_once(engine: AsyncEngine) -> int:
    stmt = select(events.c.id).group_by(events.c.id).having(func.count() > 1)
    async with engine.connect() as conn:
        return len((await conn.execute(stmt)).all())


async def _wait_for(predicate: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Poll until `predicate` holds; a deadline only guards against hanging, it is not a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_ten_thousand_events_in_few_commits(engine: AsyncEngine, make_event: MakeEvent) -> None:
    """10k events land exactly once in far fewer commits than events, and the metrics say so."""
    metrics = Metrics()
    writer = EventWriter(engine, interval_ms=100, max_rows=2000, metrics=metrics)
    envelopes = [
        make_event(i, device_id=f"dev-{i % 50}", message_id=f"m-{i}" if i % 2 else None) for i in range(10_000)
    ]
    async with writer:
        for env in envelopes:
            await writer.add(env)
        await writer.flush()
        stats = writer.stats
        assert stats.rows_written == 10_000
        assert stats.duplicates_ignored == 0
        assert stats.commits <= 10_000 // 50
        assert all(size <= 2000 for size in stats.last_commit_sizes)

    repo = EventRepo(engine)
    assert await repo.count() == 10_000
    assert await _ids_stored_more_than_once(engine) == 0
    async with engine.connect() as conn:
        stored = set((await conn.execute(select(events.c.id))).scalars())
    assert stored == {env.id for env in envelopes}
    assert metrics.registry.get_sample_value("safecity_events_stored_total") == 10_000
    assert metrics.registry.get_sample_value("safecity_writer_commit_rows_count") == stats.commits
    assert metrics.registry.get_sample_value("safecity_writer_commit_rows_sum") == 10_000
    assert (metrics.registry.get_sample_value("safecity_writer_commit_seconds_count") or 0) == stats.commits


async def test_replays_and_repeated_messages_are_ignored(engine: AsyncEngine, make_event: MakeEvent) -> None:
    """A replayed envelope or a repeated (device_id, message_id) never fails a batch and is stored once."""
    first = [make_event(i, device_id="dev-x", message_id=f"m-{i}") for i in range(100)]
    # Same sender message ids under new envelope ids (a device resending), and events without message ids.
    resent = [make_event(i, device_id="dev-x", message_id=f"m-{i}") for i in range(50)]
    anonymous = [make_event(i, device_id="dev-x") for i in range(10)]
    other_device = [make_event(i, device_id="dev-y", message_id=f"m-{i}") for i in range(5)]
    async with EventWriter(engine, interval_ms=50) as writer:
        for env in first:
            await writer.add(env)
        await writer.flush()
        # A new event repeated inside one batch, under its own id and under a new one.
        fresh = make_event(500, device_id="dev-z", message_id="z-1")
        fresh_resent = make_event(500, device_id="dev-z", message_id="z-1")
        for env in [*first, *resent, *anonymous, *other_device, first[0], fresh, fresh, fresh_resent]:
            await writer.add(env)
        await writer.flush()
        assert writer.stats.rows_written == 116
        assert writer.stats.duplicates_ignored == 153
        assert writer.stats.rows_rejected == 0
    repo = EventRepo(engine)
    assert await repo.count() == 116
    assert await repo.ids_for_device("dev-z") == [fresh.id]
    assert sorted(await repo.ids_for_device("dev-x")) == sorted(e.id for e in [*first, *anonymous])


async def test_sqlite_reads_back_which_rows_went_in_only_after_a_duplicate(
    sqlite_url: str, make_event: MakeEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a commit inserts its rows in the driver's thread and counts them (no RETURNING rows to read, each a
    GIL re-take); only a commit that met a duplicate is rolled back and done again with RETURNING, and still decides
    each row right."""
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    statements: list[str] = []
    run = writer_module.run_statement

    def seen(db: sqlite3.Connection, sql: str, params: Any) -> sqlite3.Cursor:
        assert threading.current_thread() is not threading.main_thread()  # in the driver's thread
        statements.append("returning" if sql.endswith("RETURNING id") else "counting")
        return run(db, sql, params)

    monkeypatch.setattr(writer_module, "run_statement", seen)
    try:
        async with EventWriter(engine, interval_ms=20) as writer:
            batch = [make_event(i, device_id="dev-r", message_id=f"r-{i}") for i in range(3)]
            outcome = writer.expect_many([e.id for e in batch])
            for env in batch:
                await writer.add(env)
            await writer.flush()
            assert await outcome == {}
            assert statements == ["counting"]
            resent = make_event(1, device_id="dev-r", message_id="r-1")  # a sender's repeat, a new envelope id
            fresh = make_event(9, device_id="dev-r", message_id="r-9")
            outcome = writer.expect_many([resent.id, fresh.id])
            await writer.add(resent)
            await writer.add(fresh)
            await writer.flush()
            assert await outcome == {resent.id: DUPLICATE}
            assert statements == ["counting", "counting", "returning"]
        assert sorted(await EventRepo(engine).ids_for_device("dev-r")) == sorted([*(e.id for e in batch), fresh.id])
    finally:
        await engine.dispose()


async def test_flush_commits_what_was_added_and_nothing_is_committed_per_event(
    engine: AsyncEngine, make_event: MakeEvent
) -> None:
    """With a long interval nothing is committed until flush; flush then commits everything in one go."""
    repo = EventRepo(engine)
    async with EventWriter(engine, interval_ms=60_000, max_rows=10_000) as writer:
        for i in range(10):
            await writer.add(make_event(i))
        await asyncio.sleep(0.2)
        assert await repo.count() == 0
        assert writer.stats.commits == 0
        await asyncio.wait_for(writer.flush(), 10)
        assert await repo.count() == 10
        assert writer.stats.commits == 1
        assert list(writer.stats.last_commit_sizes) == [10]
        # A flush with nothing queued returns at once and commits nothing.
        await asyncio.wait_for(writer.flush(), 10)
        assert writer.stats.commits == 1


async def test_max_rows_caps_each_commit(engine: AsyncEngine, make_event: MakeEvent) -> None:
    """No commit holds more than max_rows rows, even when the interval is long."""
    async with EventWriter(engine, interval_ms=60_000, max_rows=7) as writer:
        for i in range(30):
            await writer.add(make_event(i))
        await asyncio.wait_for(writer.flush(), 10)
        assert list(writer.stats.last_commit_sizes) == [7, 7, 7, 7, 2]
    assert await EventRepo(engine).count() == 30


async def test_the_interval_grows_while_the_store_is_busy_and_comes_back(
    engine: AsyncEngine, make_event: MakeEvent
) -> None:
    """Commits taking over half the interval double it (up to interval_max_ms); quick ones halve it back."""
    with pytest.raises(ValueError, match="interval_max_ms"):
        EventWriter(engine, interval_ms=100, interval_max_ms=50)
    added = 0
    async with EventWriter(engine, interval_ms=20, interval_max_ms=320, max_rows=5000) as writer:
        assert writer.interval_s == 0.02
        for added in range(20_000):  # four commits of 5,000 rows, each longer than half of 20 ms
            await writer.add(make_event(added, device_id=f"dev-{added % 50}"))
        await asyncio.wait_for(writer.flush(), 60)
        grown = writer.interval_s
        assert 0.02 < grown <= 0.32
        while writer.interval_s > 0.02 and added < 20_050:  # one-row commits, quick: the interval halves back
            added += 1
            await writer.add(make_event(added))
            await asyncio.wait_for(writer.flush(), 10)
        assert writer.interval_s == 0.02
    assert await EventRepo(engine).count() == added + 1


async def test_close_commits_the_queue_then_refuses(engine: AsyncEngine, make_event: MakeEvent) -> None:
    """close() commits what is queued; adding afterwards is an error."""
    writer = EventWriter(engine, interval_ms=60_000)
    await writer.start()
    for i in range(25):
        await writer.add(make_event(i))
    await asyncio.wait_for(writer.close(), 10)
    assert await EventRepo(engine).count() == 25
    with pytest.raises(WriterClosed):
        await writer.add(make_event(99))


async def test_full_queue_applies_back_pressure(engine: AsyncEngine, make_event: MakeEvent) -> None:
    """add() waits while the queue is full, and the waiting add is not lost once there is room."""
    writer = EventWriter(engine, interval_ms=10, queue_size=5)
    for i in range(5):
        await writer.add(make_event(i))
    assert writer.queued == 5
    blocked = asyncio.create_task(writer.add(make_event(5)))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    await writer.start()
    await asyncio.wait_for(blocked, 10)
    await writer.flush()
    await writer.close()
    assert await EventRepo(engine).count() == 6


async def test_row_mapping(engine: AsyncEngine, make_event: MakeEvent) -> None:
    """Envelope fields land in their columns; times come back aware and equal, hops as ISO strings."""
    at = clock.now().astimezone(timezone(timedelta(hours=8))) - timedelta(minutes=5)
    env = make_event(3, message_id="m-3", occurred_at=at)
    row = row_from_envelope(env)
    assert row["occurred_at"].utcoffset() == timedelta(0)
    async with EventWriter(engine) as writer:
        await writer.add(env)
        await writer.flush()
    got = await EventRepo(engine).get(env.id)
    assert got is not None
    assert got["occurred_at"] == at
    assert got["occurred_at"].utcoffset() == timedelta(0)
    assert got["received_at"] == env.received_at
    assert got["stored_at"] >= env.received_at
    assert (got["key"], got["kind"], got["device_kind"]) == ("event.smoke", "smoke", "smoke")
    assert (got["town"], got["community"], got["building"]) == ("town-a", "comm-a", "bldg-a")
    assert (got["device_id"], got["message_id"], got["value"], got["state"]) == ("dev-1", "m-3", 3.0, "alarm")
    assert got["data"] == {"i": 3, "note": "烟雾"}
    assert got["pseudonyms"] == {"plate": "ab" * 16}
    assert (got["source"], got["tier"], got["correlation_id"]) == ("test", "community", "corr-3")
    assert got["hops"] == {"tagged": env.hops["tagged"].isoformat()}
    assert got["lon"] == pytest.approx(121.470003)


async def test_sqlite_lock_is_retried_without_loss(sqlite_url: str, make_event: MakeEvent) -> None:
    """Another process holding the SQLite write lock makes commits fail; the writer retries and loses nothing."""
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url, busy_timeout_ms=20)
    path = make_url(sqlite_url).database
    assert path is not None
    envelopes = [make_event(i, message_id=f"m-{i}") for i in range(600)]
    try:
        async with EventWriter(engine, interval_ms=20, retry_initial_s=0.01, retry_max_s=0.05) as writer:
            for env in envelopes[:100]:
                await writer.add(env)
            await writer.flush()
            locker = sqlite3.connect(path, isolation_level=None)
            try:
                locker.execute("BEGIN EXCLUSIVE")
                for env in envelopes[100:]:
                    await writer.add(env)
                await _wait_for(lambda: writer.stats.retries >= 3, "retries while the database is locked")
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            await asyncio.wait_for(writer.flush(), 20)
            assert writer.stats.rows_written == 600
        assert await EventRepo(engine).count() == 600
        assert await _ids_stored_more_than_once(engine) == 0
    finally:
        await engine.dispose()


def _pg_admin(admin_dsn: str) -> Callable[[str], Any]:
    async def run(sql: str) -> Any:
        conn = await asyncpg.connect(admin_dsn)
        try:
            return await conn.execute(sql)
        finally:
            await conn.close()

    return run


async def test_postgres_outage_is_retried_without_loss(pg_url: str, pg_admin_dsn: str, make_event: MakeEvent) -> None:
    """Connections killed and refused for a while: the writer retries with backoff and loses nothing."""
    await upgrade(pg_url)
    name = make_url(pg_url).database
    admin = _pg_admin(pg_admin_dsn)
    kill = (
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    engine = create_engine(pg_url)
    envelopes = [make_event(i, message_id=f"m-{i}") for i in range(3000)]
    try:
        async with EventWriter(engine, interval_ms=20, retry_initial_s=0.01, retry_max_s=0.1) as writer:
            # Kill the pooled connections in the middle of a stream of adds.
            for i, env in enumerate(envelopes[:1000]):
                await writer.add(env)
                if i % 250 == 0:
                    await asyncio.sleep(0.03)
                    await admin(kill)
            await writer.flush()
            assert writer.stats.rows_written == 1000
            # The database goes away for a while: no new connections, existing ones killed.
            await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                await admin(kill)
                for env in envelopes[1000:]:
                    await writer.add(env)
                await _wait_for(lambda: writer.stats.retries >= 3, "retries while the database is down")
            finally:
                await admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await asyncio.wait_for(writer.flush(), 30)
            assert writer.stats.rows_written == 3000
        assert await EventRepo(engine).count() == 3000
        assert await _ids_stored_more_than_once(engine) == 0
    finally:
        await engine.dispose()


async def test_postgres_bad_row_is_isolated_and_reported(pg_url: str, make_event: MakeEvent) -> None:
    """A row the database refuses (too long for its column) is rejected alone; the rest of the batch is stored."""
    await upgrade(pg_url)
    engine = create_engine(pg_url)
    rejected: list[str] = []

    async def on_rejected(row: dict[str, Any], err: Exception) -> None:
        rejected.append(row["id"])

    good = [make_event(i) for i in range(20)]
    bad = make_event(99, device_id="d" * 300)
    try:
        async with EventWriter(engine, interval_ms=60_000, on_rejected=on_rejected) as writer:
            for env in [*good[:10], bad, *good[10:]]:
                await writer.add(env)
            await asyncio.wait_for(writer.flush(), 30)
            assert writer.stats.rows_rejected == 1
            assert writer.stats.rows_written == 20
            assert writer.stats.duplicates_ignored == 0
        assert rejected == [bad.id]
        assert await EventRepo(engine).count() == 20
    finally:
        await engine.dispose()


def test_rows_waiting_for_their_commit_are_not_tracked_by_the_gc(make_event: MakeEvent) -> None:
    """A queued row holds no containers, so it never reaches the collector's old generation."""
    env = make_event(4, message_id="m-4")
    row = row_from_envelope(env)
    assert not gc.is_tracked(row)
    assert orjson.loads(row["data"]) == {"i": 4, "note": "烟雾"}
    assert orjson.loads(row["hops"]).keys() == env.hops.keys()
