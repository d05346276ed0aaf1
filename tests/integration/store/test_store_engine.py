"""The SQLite engine's connection pool: no round trip to roll back a committed transaction, never a connection
returned to the pool while it holds SQLite's write lock, and writers served in turn by the write gate."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.store.engine import create_engine, write_transaction


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", busy_timeout_ms=100)
    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        await conn.execute(text("INSERT INTO t VALUES (1, 'a')"))
    try:
        yield eng
    finally:
        await eng.dispose()


async def test_a_committed_transaction_is_not_rolled_back_again(
    sqlite_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each aiosqlite call is a trip to its thread: a one-statement write costs two (the statement, the commit), not
    five (make a cursor, execute, close it, commit, roll back)."""
    calls: collections.Counter[str] = collections.Counter()
    execute = aiosqlite.core.Connection._execute

    async def counted(self: aiosqlite.core.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls[getattr(fn, "__name__", "?")] += 1
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    for i in range(3):
        async with sqlite_engine.begin() as conn:
            await conn.execute(text("UPDATE t SET v = :v WHERE id = 1"), {"v": str(i)})
    assert dict(calls) == {"_run_one": 3, "commit": 3}


async def test_a_statement_is_one_trip_and_reads_as_through_sqlalchemys_own_cursor(
    sqlite_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows, row counts, the last row id, RETURNING, executemany and errors, each statement one trip to the thread."""
    trips: list[str] = []
    execute = aiosqlite.core.Connection._execute

    async def counted(self: aiosqlite.core.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", "?"))
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    async with write_transaction(sqlite_engine) as conn:
        inserted = await conn.execute(text("INSERT INTO t (v) VALUES ('b')"))
        assert inserted.lastrowid == 2 and inserted.rowcount == 1
        many = await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "c"}, {"v": "d"}, {"v": "e"}])
        assert many.rowcount == 3
        back = await conn.execute(text("UPDATE t SET v = v || '!' WHERE id > 3 RETURNING id, v"))
        assert sorted(back.all()) == [(4, "d!"), (5, "e!")]
        assert trips == ["_run_one", "_run_many", "_run_one"]
        trips.clear()
        rows = await conn.execute(text("SELECT id, v FROM t ORDER BY id"))
        assert [tuple(r) for r in rows] == [(1, "a"), (2, "b"), (3, "c"), (4, "d!"), (5, "e!")]
        assert (await conn.execute(text("SELECT count(*) FROM t WHERE v = :v"), {"v": "zz"})).scalar_one() == 0
        assert trips == ["_run_one", "_run_one"]
        with pytest.raises(IntegrityError):
            await conn.execute(text("INSERT INTO t (id, v) VALUES (1, 'again')"))
    async with sqlite_engine.connect() as conn:  # the refused row failed its statement, not the ones before
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 5


async def test_a_connection_never_returns_to_the_pool_holding_the_write_lock(sqlite_engine: AsyncEngine) -> None:
    """A transaction opened behind SQLAlchemy's back (on the driver connection) is rolled back at check-in."""
    async with sqlite_engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("UPDATE t SET v = 'uncommitted' WHERE id = 1")
        assert driver.in_transaction
    # The pool has one idle connection; a second one must be able to write at once (busy timeout 100 ms).
    other = create_engine(sqlite_engine.url, busy_timeout_ms=100, null_pool=True)
    try:
        async with other.begin() as conn:
            await conn.execute(text("UPDATE t SET v = 'b' WHERE id = 1"))
        async with sqlite_engine.connect() as conn:
            assert (await conn.execute(text("SELECT v FROM t"))).scalar_one() == "b"
    finally:
        await other.dispose()


async def _hog(engine: AsyncEngine, stop: asyncio.Event, commits: list[int]) -> None:
    """Write back to back, each transaction holding SQLite's write lock for 300 ms (three busy timeouts)."""
    while not stop.is_set():
        async with write_transaction(engine) as conn:
            await conn.execute(text("UPDATE t SET v = 'hog' WHERE id = 1"))
            await asyncio.sleep(0.3)
        commits.append(1)


async def test_a_writer_is_not_starved_by_one_that_commits_back_to_back(sqlite_engine: AsyncEngine) -> None:
    """Behind the gate the second writer waits its turn (one hog transaction), not in SQLite's busy handler, whose
    100 ms timeout the hog's 300 ms transactions would exceed every time."""
    stop = asyncio.Event()
    commits: list[int] = []
    hog = asyncio.create_task(_hog(sqlite_engine, stop, commits))
    try:
        await asyncio.sleep(0.05)  # the hog holds the lock now
        for i in range(3):
            async with write_transaction(sqlite_engine) as conn:
                await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": f"other-{i}"})
        assert commits, "the hog committed in between"
    finally:
        stop.set()
        await hog
    async with sqlite_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t WHERE v LIKE 'other-%'"))).scalar_one() == 3


async def test_without_the_gate_the_busy_handler_gives_up(sqlite_engine: AsyncEngine) -> None:
    """The case the gate exists for: a plain `begin()` beside the hog fails with "database is locked"."""
    stop = asyncio.Event()
    hog = asyncio.create_task(_hog(sqlite_engine, stop, []))
    try:
        await asyncio.sleep(0.05)
        with pytest.raises(OperationalError, match="locked"):
            async with sqlite_engine.begin() as conn:
                await conn.execute(text("INSERT INTO t (v) VALUES ('ungated')"))
    finally:
        stop.set()
        await hog


async def test_a_writer_cancelled_while_waiting_for_the_gate_leaves_it_free(sqlite_engine: AsyncEngine) -> None:
    async def held() -> None:
        async with write_transaction(sqlite_engine) as conn:
            await conn.execute(text("UPDATE t SET v = 'held' WHERE id = 1"))
            await asyncio.sleep(0.1)

    first = asyncio.create_task(held())
    await asyncio.sleep(0.02)
    waiting = asyncio.create_task(held())
    await asyncio.sleep(0.02)
    waiting.cancel()
    await asyncio.gather(first, waiting, return_exceptions=True)
    assert waiting.cancelled()
    async with asyncio.timeout(5), write_transaction(sqlite_engine) as conn:
        await conn.execute(text("UPDATE t SET v = 'after' WHERE id = 1"))
