"""The SQLite engine's connection pool: no round trip to roll back a committed transaction, and never a connection
returned to the pool while it holds SQLite's write lock."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.store.engine import create_engine


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
    """Each aiosqlite call is a trip to its thread: a one-statement write costs four, not five."""
    calls: collections.Counter[str] = collections.Counter()
    execute = aiosqlite.core.Connection._execute

    async def counted(self: aiosqlite.core.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls[getattr(fn, "__name__", "?")] += 1
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    for i in range(3):
        async with sqlite_engine.begin() as conn:
            await conn.execute(text("UPDATE t SET v = :v WHERE id = 1"), {"v": str(i)})
    assert dict(calls) == {"cursor": 3, "execute": 3, "close": 3, "commit": 3}


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
