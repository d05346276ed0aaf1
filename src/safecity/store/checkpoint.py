"""WAL checkpoints of a node's SQLite database in a thread of their own, off the writers' commits.

In WAL mode a commit appends the pages it changed to the WAL; a checkpoint copies them back into the database file
and syncs both. By default SQLite checkpoints in whichever connection commits while the WAL holds over 1,000 pages:
the event writer, every commit or two under load (a commit of events dirties a page of each of three indexes keyed
by device or building a row), so the write gate (`engine.write_transaction`) was held for the copy and the syncs too
and the alert path's writes waited behind them. Measured at 8,000 event rows/s in 1,000-row commits
(`bench/checkpoint.py --quick`): a commit took 57 ms at the median, 85 ms at p99 and 40 µs of the writer's CPU a row;
with the checkpoints in this thread 32 / 57 ms and 31 µs (the checkpoints' own 10 µs a row run beside it: sqlite3
lets go of the GIL while it works).

Every `interval_s` the thread reads from the WAL index (the `-shm` file) how many pages wait to be copied; once
`BATCH_PAGES` do, or any have waited `MAX_WAIT_S`, it runs PASSIVE checkpoints, which never take the write lock nor
wait for it, again and again while the WAL has pages left to copy. (Copying every 50 ms whatever is there would copy
a page that each commit rewrites, the end of the time index, once a commit: at 1,000 events/s, 10% more CPU than
SQLite's own checkpoint every 1,000 pages.) A writer that begins after a checkpoint has caught up starts the WAL over
from its beginning, so the WAL stays a few commits long. The node's connections keep SQLite's own
checkpoint as a backstop at `BACKSTOP_PAGES` (`engine.create_engine(background_checkpoints=True)`): should this
thread fall behind or stop, the WAL still cannot grow past it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

# SQLite's own checkpoint in the committing connection, once the WAL holds this many pages (64 MiB of 4 KiB pages):
# a backstop only, 16 times the default, reached when the checkpoint thread falls behind or has stopped.
BACKSTOP_PAGES = 16_384
# After a checkpoint that found the WAL grown past this, the file is cut back to it (bytes): disk use stays bounded.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# The thread's pause between looks at the WAL (s).
CHECK_INTERVAL_S = 0.05
# Checkpoint once this many pages wait to be copied (SQLite's own default), or once some have waited MAX_WAIT_S.
BATCH_PAGES = 1000
MAX_WAIT_S = 1.0
# The WAL index's header (https://www.sqlite.org/walformat.html), in the machine's byte order: its version at byte
# 0, mxFrame (the WAL's last valid page) at byte 16, and the checkpoint's nBackfill (pages copied) at byte 96.
_WAL_INDEX_VERSION = 3_007_000
# After a checkpoint that failed (disk error, a locked file), wait this long before the next try.
RETRY_S = 1.0


@dataclass
class CheckpointStats:
    """What the checkpoint thread has done since it started."""

    checkpoints: int = 0
    busy: int = 0  # checkpoints that could not run (another was running)
    failures: int = 0
    wal_pages_max: int = 0  # the longest WAL (in pages) a checkpoint found
    wal_pages: int = 0  # pages in the WAL at the last checkpoint
    copied: int = 0  # pages of those copied to the database by then (all of them: caught up)
    cpu_s: float = 0.0  # the thread's CPU time

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as plain values (for logs and benchmarks)."""
        return {
            "checkpoints": self.checkpoints,
            "busy": self.busy,
            "failures": self.failures,
            "wal_pages_max": self.wal_pages_max,
            "wal_pages": self.wal_pages,
            "copied": self.copied,
            "cpu_s": round(self.cpu_s, 3),
        }


def database_file(engine: AsyncEngine) -> str | None:
    """The file of a SQLite engine's database (a `file:` URI as given), or None for PostgreSQL or memory."""
    url = engine.url
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or "mode=memory" in database:
        return None
    return database


class WalCheckpointer:
    """Runs the WAL checkpoints of one SQLite database file in a thread of its own (see the module's text)."""

    def __init__(self, database: str, *, interval_s: float = CHECK_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._database = database
        self._wal_index = database.removeprefix("file:").split("?", 1)[0] + "-shm"
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = CheckpointStats()

    @classmethod
    def of(cls, engine: AsyncEngine, *, interval_s: float = CHECK_INTERVAL_S) -> WalCheckpointer | None:
        """A checkpointer for a file-backed SQLite engine; None for PostgreSQL or an in-memory database."""
        database = database_file(engine)
        return cls(database, interval_s=interval_s) if database is not None else None

    @property
    def running(self) -> bool:
        """Whether the thread is running."""
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        """Start the thread (its connection is opened there)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread, after the checkpoint it is running (if any) ends."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        await asyncio.to_thread(thread.join)
        log.info("wal_checkpointer_stopped", **self.stats.as_dict())

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._database, uri=self._database.startswith("file:"), check_same_thread=False)
        # A PASSIVE checkpoint never waits for a lock; the timeout covers opening the WAL beside a writer.
        db.execute("PRAGMA busy_timeout=1000")
        return db

    def _waiting_pages(self) -> int | None:
        """Pages in the WAL not yet copied, from the WAL index; None when it cannot be read (then checkpoint)."""
        try:
            with open(self._wal_index, "rb") as index:
                header = index.read(100)
        except OSError:
            return None
        if len(header) < 100 or int.from_bytes(header[0:4], sys.byteorder) != _WAL_INDEX_VERSION:
            return None
        return int.from_bytes(header[16:20], sys.byteorder) - int.from_bytes(header[96:100], sys.byteorder)

    def _run(self) -> None:
        started = time.thread_time()
        db: sqlite3.Connection | None = None
        waiting_since: float | None = None  # when a look first found pages waiting, fewer than BATCH_PAGES
        try:
            while not self._stopping.is_set():
                try:
                    if db is None:
                        db = self._connect()
                    waiting, now = self._waiting_pages(), time.monotonic()
                    if waiting == 0:
                        waiting_since = None
                    elif waiting is not None and waiting < BATCH_PAGES:
                        waiting_since = waiting_since or now
                    if waiting is None or waiting >= BATCH_PAGES or now - (waiting_since or now) >= MAX_WAIT_S:
                        self._catch_up(db)
                        waiting_since = None
                    wait = self._interval_s
                except sqlite3.Error as err:
                    self.stats.failures += 1
                    log.warning("wal_checkpoint_failed", error=str(err), retry_in_s=RETRY_S)
                    wait = RETRY_S
                self.stats.cpu_s = time.thread_time() - started
                self._stopping.wait(wait)
        finally:
            if db is not None:
                db.close()

    def _catch_up(self, db: sqlite3.Connection) -> None:
        """Checkpoint again while the WAL has pages left to copy (writers append meanwhile) and each round copies
        some: a reader on an older snapshot holds back the pages after it, and then the next try is after a pause."""
        stats = self.stats
        before = -1
        while not self._stopping.is_set():
            # (busy, pages in the WAL, pages of it copied so far); -1 for both when the database is not in WAL mode.
            busy, wal_pages, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            stats.checkpoints += 1
            if busy:
                stats.busy += 1
                return
            stats.wal_pages, stats.copied = wal_pages, copied
            stats.wal_pages_max = max(stats.wal_pages_max, wal_pages)
            if copied >= wal_pages or copied <= before:
                return
            before = copied
