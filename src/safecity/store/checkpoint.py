"""WAL checkpoints of a node's SQLite database in a thread of their own, off the writers' commits.

In WAL mode a commit appends the pages it changed to the WAL; a checkpoint copies them back into the database file
and syncs both. By default SQLite checkpoints in whichever connection commits while the WAL holds over 1,000 pages:
the event writer, every commit or two under load (a commit of events dirties a page of each of three indexes keyed
by device or building a row), so the write gate (`engine.write_transaction`) was held for the copy and the syncs too
and the alert path's writes waited behind them. Measured at 8,000 event rows/s in 1,000-row commits
(`bench/checkpoint.py --quick`): a commit took 59 ms at the median, 91 ms at p99 and 42 µs of the writer's CPU a row;
with the checkpoints in this thread 33 / 62 ms and 30 µs (the checkpoints' own 9 µs a row run beside it: sqlite3
lets go of the GIL while it works).

The thread runs PASSIVE checkpoints, which never take the write lock nor wait for it, again and again while the WAL
has pages left to copy, then pauses: `interval_s` while the WAL grew by `BATCH_PAGES` or more since its last look,
twice as long each time it grew by less, up to `MAX_WAIT_S`. (Copying every 50 ms whatever is there would copy a
page that every commit rewrites, the end of the time index, once a commit: at 1,000 events/s, 10% more CPU than
SQLite's own checkpoint every 1,000 pages.) A writer that begins after a checkpoint has caught up starts the WAL
over from its beginning, so the WAL stays a few commits long. The node's connections keep SQLite's own checkpoint as
a backstop at `engine.BACKSTOP_PAGES` (`engine.create_engine(background_checkpoints=True)`): should this thread fall
behind or stop, the WAL still cannot grow past it.

The thread never opens the WAL index (`-shm`) or the database file itself: closing a file that SQLite has open in
the same process drops SQLite's POSIX locks on it (https://www.sqlite.org/howtocorrupt.html, 2.2). A first version
read the WAL index's header to count the pages waiting, and the kill -9 test then failed under load (a node that
stopped storing, another that left acknowledged events unstored).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.store.engine import sqlite_file

log = structlog.get_logger(__name__)

# The thread's pause between looks at the WAL (s).
CHECK_INTERVAL_S = 0.05
# The pause stays CHECK_INTERVAL_S while each look finds this many new pages (SQLite's own checkpoint interval), and
# doubles up to MAX_WAIT_S while looks find fewer.
BATCH_PAGES = 1000
MAX_WAIT_S = 1.0
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
        return {**asdict(self), "cpu_s": round(self.cpu_s, 3)}


def database_file(engine: AsyncEngine) -> str | None:
    """The file of a SQLite engine's database (a `file:` URI as given), or None for PostgreSQL or memory."""
    return sqlite_file(engine.url)


class WalCheckpointer:
    """Runs the WAL checkpoints of one SQLite database file in a thread of its own (see the module's text)."""

    def __init__(self, database: str, *, interval_s: float = CHECK_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._database = database
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

    def _run(self) -> None:
        started = time.thread_time()
        db: sqlite3.Connection | None = None
        pause = self._interval_s
        try:
            while not self._stopping.is_set():
                try:
                    if db is None:
                        db = self._connect()
                    grown = self._catch_up(db)
                    pause = self._interval_s if grown >= BATCH_PAGES else min(pause * 2, MAX_WAIT_S)
                except sqlite3.Error as err:
                    self.stats.failures += 1
                    log.warning("wal_checkpoint_failed", error=str(err), retry_in_s=RETRY_S)
                    pause = RETRY_S
                self.stats.cpu_s = time.thread_time() - started
                self._stopping.wait(pause)
        finally:
            if db is not None:
                db.close()

    def _catch_up(self, db: sqlite3.Connection) -> int:
        """Checkpoint again while the WAL has pages left to copy (writers append meanwhile) and each round copies
        some: a reader on an older snapshot holds back the pages after it, and then the next try is after a pause.
        Return how many pages the WAL grew by since the last look (all of it when a writer has started it over)."""
        stats = self.stats
        last_look = stats.wal_pages
        before = -1
        while not self._stopping.is_set():
            # (busy, pages in the WAL, pages of it copied so far); -1 for both when the database is not in WAL mode.
            busy, wal_pages, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            stats.checkpoints += 1
            if busy:
                stats.busy += 1
                break
            stats.wal_pages, stats.copied = wal_pages, copied
            stats.wal_pages_max = max(stats.wal_pages_max, wal_pages)
            if copied >= wal_pages or copied <= before:
                break
            before = copied
        return stats.wal_pages - last_look if stats.wal_pages >= last_look else stats.wal_pages
