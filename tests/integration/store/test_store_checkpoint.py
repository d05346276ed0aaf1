"""WAL checkpoints in a thread of their own: the writers' connections leave them to it (bar a backstop), the thread
copies the WAL back while writers go on, keeps it from growing, waits out a reader on an old snapshot without
spinning, and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from safecity.store.checkpoint import MAX_WAIT_S, WalCheckpointer, database_file
from safecity.store.engine import BACKSTOP_PAGES, create_engine, write_transaction

ROW = "x" * 3000  # about a page a row: a commit of 200 rows is some 200 pages of WAL


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}", background_checkpoints=True)
    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    try:
        yield eng
    finally:
        await eng.dispose()


async def write_rows(engine: AsyncEngine, commits: int, rows: int = 200) -> None:
    for _ in range(commits):
        async with write_transaction(engine) as conn:
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": ROW}] * rows)


def wal_bytes(path: str) -> int:
    try:
        return os.path.getsize(path + "-wal")
    except FileNotFoundError:
        return 0


async def caught_up(checkpointer: WalCheckpointer, *, after: int = 0, timeout_s: float = 5.0) -> None:
    """Wait until a checkpoint of the thread's (past the first `after`) found every page of the WAL copied."""
    deadline = time.monotonic() + timeout_s
    while (stats := checkpointer.stats).copied < stats.wal_pages or stats.checkpoints <= after:
        assert time.monotonic() < deadline, f"not caught up: {stats.as_dict()}"
        await asyncio.sleep(0.02)


async def test_connections_leave_checkpoints_to_the_thread_but_keep_a_backstop(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == BACKSTOP_PAGES
    plain = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}")
    try:
        async with plain.connect() as conn:
            assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 1000  # SQLite's default
    finally:
        await plain.dispose()


async def test_the_thread_copies_the_wal_back_and_keeps_it_short_while_writers_go_on(engine: AsyncEngine) -> None:
    path = database_file(engine)
    assert path is not None
    # Without the thread, nothing is checkpointed below the backstop: the WAL holds every commit.
    await write_rows(engine, 10)
    grown = wal_bytes(path)
    assert grown > 10 * 200 * 3000
    checkpointer = WalCheckpointer(path, interval_s=0.02)
    await checkpointer.start()
    try:
        await checkpointer.start()  # a second start is a no-op
        assert checkpointer.running
        # Writers go on beside it, a commit every 50 ms as the event writer's group commits: each time the thread has
        # caught up, the next commit starts the WAL over, so the file grows little past what it held when the thread
        # came. Without it, 40 more commits would add four times as much again (a writer that never pauses can take
        # the WAL to the backstop, BACKSTOP_PAGES, where its own connection checkpoints). The bound is half of that:
        # on a loaded machine (CI, two test workers) the thread's looks come late, and the WAL overshot by 1.1x once.
        for _ in range(40):
            await write_rows(engine, 1)
            await asyncio.sleep(0.05)
        assert wal_bytes(path) <= grown + grown / 10 * 40 / 2
        await caught_up(checkpointer)
        assert checkpointer.stats.checkpoints > 0 and checkpointer.stats.failures == 0
        assert checkpointer.stats.wal_pages_max >= 10 * 200
        assert checkpointer.stats.cpu_s > 0
    finally:
        await checkpointer.stop()
    assert not checkpointer.running
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 50 * 200


async def test_a_reader_on_an_old_snapshot_holds_it_back_without_making_it_spin(engine: AsyncEngine) -> None:
    path = database_file(engine)
    assert path is not None
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)  # the snapshot: before any row
    checkpointer = WalCheckpointer(path, interval_s=0.05)
    await checkpointer.start()
    try:
        await write_rows(engine, 10)
        await asyncio.sleep(0.5)
        stats = checkpointer.stats
        # The pages after the reader's snapshot stay in the WAL while it reads.
        assert 0 <= stats.copied < stats.wal_pages and stats.failures == 0
        # A try or two each interval (the second to see no progress), not a busy loop: about 25 in 0.6 s.
        assert stats.checkpoints < 100
        reader.execute("COMMIT")
        await caught_up(checkpointer)
    finally:
        reader.close()
        await checkpointer.stop()


async def test_a_quiet_wal_is_looked_at_less_often_and_still_copied_within_a_second(engine: AsyncEngine) -> None:
    path = database_file(engine)
    assert path is not None
    checkpointer = WalCheckpointer(path, interval_s=0.02)
    await checkpointer.start()
    try:
        await caught_up(checkpointer)
        await asyncio.sleep(2.5)  # the pause doubles from 20 ms to MAX_WAIT_S while looks find little
        looks = checkpointer.stats.checkpoints
        await asyncio.sleep(2.0)
        assert checkpointer.stats.checkpoints - looks <= 4  # a look a second, not 100 (one each 20 ms)
        looks = checkpointer.stats.checkpoints
        await write_rows(engine, 1, rows=20)  # some 25 pages, far under BATCH_PAGES
        await caught_up(checkpointer, after=looks, timeout_s=MAX_WAIT_S + 1.0)
    finally:
        await checkpointer.stop()


def test_only_a_sqlite_file_gets_a_checkpointer(tmp_path: Path) -> None:
    assert WalCheckpointer.of(create_engine("sqlite+aiosqlite:///:memory:")) is None
    shared_memory = "sqlite+aiosqlite:///file:checkpoints?mode=memory&cache=shared&uri=true"
    assert WalCheckpointer.of(create_async_engine(shared_memory, poolclass=NullPool)) is None
    assert WalCheckpointer.of(create_engine("postgresql://safecity@127.0.0.1/none")) is None
    on_file = WalCheckpointer.of(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    assert on_file is not None and not on_file.running
    with pytest.raises(ValueError, match="interval_s"):
        WalCheckpointer(str(tmp_path / "a.db"), interval_s=0)
