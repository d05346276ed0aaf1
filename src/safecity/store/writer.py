"""Group-commit event writer: one background task commits queued events every <= interval_ms or <= max_rows rows.

While the store is busy (a commit takes over half the interval), the interval doubles up to `interval_max_ms`, so
commits grow and each row costs less; it comes back down as commits get quick again.

Events are inserted with the dialect's `INSERT ... ON CONFLICT DO NOTHING`, so a replayed envelope (same id) or a
repeated (device_id, message_id) is counted as a duplicate and never fails a batch. A commit that fails for a
transient reason (database down, locked, connection killed) is retried with backoff, keeping the batch in memory;
the bounded queue in front gives back-pressure to producers meanwhile.

A producer that must know when an event is durable (MQTT acknowledges a message only then, HTTP ingest answers only
then) calls `expect_many(event_ids)` before publishing a batch: the future it gets is settled after the commits that
decided those rows, with the outcome of each row not STORED: `DUPLICATE` (the store already had it) or `REJECTED` (the
store refused it: dead-lettered by the `on_rejected` hook before the future is settled).
"""

from __future__ import annotations

import asyncio
import functools
import operator
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog
from sqlalchemy import JSON, DateTime, Float, Integer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from safecity.kernel import clock
from safecity.kernel.envelope import Envelope
from safecity.kernel.errors import ServiceUnavailable
from safecity.kernel.supervisor import Supervisor
from safecity.store.driver_thread import SQLITE_MAX_VARIABLES, in_driver_thread, run_statement, sqlite_time
from safecity.store.engine import write_transaction
from safecity.store.retry import RefusedWrite, commit_retrying
from safecity.store.tables import events

if TYPE_CHECKING:
    from safecity.kernel.metrics import Metrics

log = structlog.get_logger(__name__)

Row = dict[str, Any]  # column -> value, JSON columns as their encoded text (see `row_from_envelope`)
RejectHook = Callable[[Row, Exception], Awaitable[None]]
T = TypeVar("T")

# A commit running longer than this means the database is stalled (locked, or its disk is): intake slows down.
STALL_S = 1.0

# Outcomes of an event (`expect_many`).
STORED = "stored"
DUPLICATE = "duplicate"
REJECTED = "rejected"


class WriterClosed(ServiceUnavailable):
    """The event writer was closed (or its task failed) and accepts no more events."""

    code = "store.writer_closed"


def _utc(value: datetime) -> datetime:
    # SQLite stores DateTime without its zone: everything goes in as UTC so text order is time order.
    if value.tzinfo is UTC:  # the common case (clock.now() and the normalizers give UTC): skip the conversion
        return value
    return clock.ensure_aware(value).astimezone(UTC)


def row_from_envelope(env: Envelope) -> Row:
    """Map an envelope whose payload is a `SensorEvent` to a row of the `events` table (without `stored_at`).

    The JSON columns are encoded here, so a row holds only strings, numbers, times and None: such a dict is not
    tracked by the garbage collector. Rows wait up to a commit interval in the queue, long enough to outlive two
    young collections; with nested dicts, 10,000 rows a second were promoted to the old generation and a full
    collection (15-46 ms) ran several times every 5 s, the largest stalls left on the alert path.
    """
    p = env.payload
    tags = p.tags
    return {
        "id": env.id,
        "key": env.key,
        "kind": str(p.kind),
        "device_id": p.device_id,
        "message_id": p.message_id,
        "occurred_at": _utc(env.occurred_at),
        "received_at": _utc(env.received_at),
        "district": tags.district,
        "town": tags.town,
        "community": tags.community,
        "building": tags.building,
        "device_kind": tags.device_kind,
        "lon": p.lon,
        "lat": p.lat,
        "value": p.value,
        "state": p.state,
        "data": _json_text(p.data),
        "pseudonyms": _json_text(p.pseudonyms),
        "source": env.source,
        "tier": env.tier,
        "correlation_id": env.context.correlation_id,
        "hops": _json_text(env.hops),  # orjson writes datetimes as RFC 3339 text
    }


@dataclass
class WriterStats:
    """Counters of one writer since it was made."""

    rows_written: int = 0
    duplicates_ignored: int = 0
    rows_rejected: int = 0
    commits: int = 0
    retries: int = 0
    last_commit_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=64))
    last_commit_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as plain values (for /metrics pages and logs)."""
        return {
            "rows_written": self.rows_written,
            "duplicates_ignored": self.duplicates_ignored,
            "rows_rejected": self.rows_rejected,
            "commits": self.commits,
            "retries": self.retries,
            "last_commit_sizes": list(self.last_commit_sizes),
            "last_commit_seconds": self.last_commit_seconds,
        }


_COLUMNS = [c.name for c in events.columns]


def _pg_array_type(column_type: Any) -> str:
    if isinstance(column_type, DateTime):
        return "timestamptz[]"
    if isinstance(column_type, Float):
        return "float8[]"
    if isinstance(column_type, Integer):
        return "int8[]"
    if isinstance(column_type, JSON):
        return "json[]"
    return "text[]"


_TIME_COLUMNS = frozenset(c.name for c in events.columns if isinstance(c.type, DateTime))
_COLUMN_LIST = ", ".join(_COLUMNS)
# The hot path bypasses SQLAlchemy's per-row parameter processing (most of the writer's CPU otherwise).
#
# SQLite: a commit's rows are turned into statements and inserted by one call in the driver's (aiosqlite's) thread,
# `in_driver_thread`. Each call to that thread is a round trip that comes back only when the event loop next gets
# to it, and under load a loop pass takes tens of milliseconds: with the rows converted on the loop (yielding every
# 200 rows so as not to stall it) and three calls a statement, a 5,000-row commit at 7,500 events/s took 1.15 s, the
# writer stored 4,000 rows a second and intake paused, while the driver's thread was idle most of the time.
# The statements are multi-row INSERTs (executemany steps once a row, and Python's sqlite3 releases the GIL for each
# step and takes it back after, a wait of up to a switch interval, 5 ms, while the loop's thread is busy), without
# RETURNING (its rows are read a step each too: 136-3,500 ms for 1,400 rows beside a busy thread, 14 ms without).
# The rows inserted are counted (`rowcount`); only a commit that met a duplicate is done again to learn which.
_SQLITE_ROWS_PER_STATEMENT = SQLITE_MAX_VARIABLES // len(_COLUMNS)
_SQLITE_ROW_MARKS = "(" + ", ".join("?" for _ in _COLUMNS) + ")"


@functools.lru_cache(maxsize=64)
def _sqlite_insert(rows: int) -> str:
    """The INSERT statement for `rows` rows (cached per size)."""
    values = ", ".join([_SQLITE_ROW_MARKS] * rows)
    return f"INSERT INTO events ({_COLUMN_LIST}) VALUES {values} ON CONFLICT DO NOTHING"


_RETURNING = " RETURNING id"


# PostgreSQL: one statement and one round trip per batch: the rows travel as one array per column.
_PG_INSERT = (
    f"INSERT INTO events ({_COLUMN_LIST}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{_pg_array_type(c.type)}" for i, c in enumerate(events.columns, start=1))
    + ") ON CONFLICT DO NOTHING RETURNING id"
)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


_SQLITE_VALUES = operator.itemgetter(*_COLUMNS)
_STORED_AT = _COLUMNS.index("stored_at")
_SQLITE_TIME_INDEXES = tuple(i for i, c in enumerate(_COLUMNS) if c in _TIME_COLUMNS and i != _STORED_AT)


def _sqlite_params(row: Row, stored: tuple[datetime, str]) -> list[Any]:
    """One row's values in column order, times as SQLAlchemy's SQLite text (JSON is text already). `stored` is the
    commit's `stored_at` with its text, made once for the rows that share it."""
    values = list(_SQLITE_VALUES(row))
    for i in _SQLITE_TIME_INDEXES:
        values[i] = sqlite_time(values[i])
    at = values[_STORED_AT]
    values[_STORED_AT] = stored[1] if at is stored[0] else sqlite_time(at)
    return values


Statement = tuple[str, Any]


def _sqlite_statements(rows: list[Row], stored: tuple[datetime, str], returning: bool) -> Iterator[Statement]:
    """The multi-row INSERT statements of a commit's rows, with their parameters."""
    step = _SQLITE_ROWS_PER_STATEMENT
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        params: list[Any] = []
        for row in chunk:
            params.extend(_sqlite_params(row, stored))
        yield _sqlite_insert(len(chunk)) + (_RETURNING if returning else ""), params


def _sqlite_insert_counting(db: sqlite3.Connection, rows: list[Row], stored: tuple[datetime, str]) -> int:
    """In the driver's thread: insert the rows; return how many went in."""
    return sum(run_statement(db, sql, params).rowcount for sql, params in _sqlite_statements(rows, stored, False))


def _sqlite_insert_returning(db: sqlite3.Connection, rows: list[Row], stored: tuple[datetime, str]) -> set[str]:
    """In the driver's thread: insert the rows; return the ids of those that went in (the others were duplicates)."""
    return {
        found[0]
        for sql, params in _sqlite_statements(rows, stored, True)
        for found in run_statement(db, sql, params).fetchall()
    }


class _SomeDuplicates(Exception):
    """Fewer rows went in than were given: the transaction is rolled back and done again, asking which went in."""


async def _insert_returning(conn: AsyncConnection, statements: list[Statement]) -> set[str]:
    """Run INSERT statements that return the ids of the rows inserted (the others were duplicates); return those."""
    inserted: set[str] = set()
    for sql, params in statements:
        result = await conn.exec_driver_sql(sql, params)
        inserted.update(row[0] for row in result.all())
    return inserted


def _postgresql_statements(rows: list[Row]) -> list[Statement]:
    arrays = tuple([row[c] for row in rows] for c in _COLUMNS)  # JSON columns are text already
    return [(_PG_INSERT, arrays)]


class _Expected:
    """Events waited for together (`EventWriter.expect_many`): a future and what is left to decide."""

    __slots__ = ("future", "left", "not_stored")

    def __init__(self, future: asyncio.Future[dict[str, str]], count: int) -> None:
        self.future = future
        self.left = count
        self.not_stored: dict[str, str] = {}

    def decide(self, event_id: str, outcome: str) -> None:
        if outcome != STORED:
            self.not_stored[event_id] = outcome
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(self.not_stored)


class _Marker:
    """A flush or stop request travelling through the queue behind everything added before it."""

    __slots__ = ("future", "stop")

    def __init__(self, future: asyncio.Future[None], *, stop: bool = False) -> None:
        self.future = future
        self.stop = stop


class EventWriter:
    """Writes event envelopes to the `events` table in group commits from one background task."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        interval_ms: int = 100,
        max_rows: int = 2000,
        interval_max_ms: int | None = None,
        metrics: Metrics | None = None,
        queue_size: int = 50_000,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        on_rejected: RejectHook | None = None,
        tasks: Supervisor | None = None,
    ) -> None:
        if interval_ms < 1 or max_rows < 1 or queue_size < 1:
            raise ValueError("interval_ms, max_rows and queue_size must be positive")
        if interval_max_ms is not None and interval_max_ms < interval_ms:
            raise ValueError("interval_max_ms must be at least interval_ms")
        self._engine = engine
        self._interval_s = self._interval_min_s = interval_ms / 1000.0
        self._interval_max_s = (interval_max_ms or interval_ms) / 1000.0
        self._max_rows = max_rows
        self._metrics = metrics
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._on_rejected = on_rejected
        self._queue: asyncio.Queue[Row | _Marker] = asyncio.Queue(maxsize=queue_size)
        # The node's supervisor owns the commit task (a writer used alone owns a supervisor of its own).
        self._tasks = tasks if tasks is not None else Supervisor()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._pending: set[asyncio.Future[None]] = set()
        # ON CONFLICT DO NOTHING with no conflict target: both the primary key (replayed envelope) and the
        # partial unique index on (device_id, message_id) (a sender's repeat) are skipped, never failing a batch.
        self._pg = engine.dialect.name == "postgresql"
        self._expected: dict[str, _Expected] = {}  # event id -> the batch (`expect_many`) waiting for it
        # Set when a batch being collected can be committed before its interval is up: enough rows, or a marker.
        self._wake = asyncio.Event()
        self._wake_at = max_rows  # queued rows that would fill the batch being collected
        self._retrying = False
        self._committing_since: float | None = None
        self.stats = WriterStats()

    @property
    def interval_s(self) -> float:
        """The group-commit interval now: `interval_ms`, longer while the store is busy (see `_adapt_interval`)."""
        return self._interval_s

    @property
    def queued(self) -> int:
        """Rows waiting in the queue (not yet in a commit)."""
        return self._queue.qsize()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The background commit task (None before `start`)."""
        return self._task

    @property
    def capacity(self) -> int:
        """Rows the queue holds before `add` waits."""
        return self._queue.maxsize

    @property
    def stalled(self) -> bool:
        """Whether the store is not keeping up: a commit is being retried, or has waited over `STALL_S` seconds."""
        since = self._committing_since
        return self._retrying or (since is not None and time.perf_counter() - since > STALL_S)

    def expect_many(self, event_ids: list[str]) -> asyncio.Future[dict[str, str]]:
        """Return a future settled once the commits deciding every one of `event_ids` are done, with the outcome of
        each that was not STORED: DUPLICATE, REJECTED, or what `settle` was told (an empty dict: all stored).

        Call it before the events are published, so no commit can come first.
        """
        self._check_open()
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        group = _Expected(future, len(event_ids))
        if not event_ids:
            future.set_result(group.not_stored)
        expected = self._expected
        for event_id in event_ids:
            expected[event_id] = group
        return future

    def settle(self, event_id: str, outcome: str) -> None:
        """Decide an event from outside the writer (an event dead-lettered before it reached the queue)."""
        group = self._expected.pop(event_id, None)
        if group is not None:
            group.decide(event_id, outcome)

    async def start(self) -> None:
        """Start the background commit task."""
        if self._task is not None:
            return
        if self._closed:
            raise WriterClosed(service="event writer")
        # Essential: a failed writer is not restarted (its queue and waiters are failed below), it makes the node
        # not ready instead.
        self._task = self._tasks.spawn("event-writer", self._run, essential=True)
        self._task.add_done_callback(self._on_task_done)

    async def add(self, envelope: Envelope) -> None:
        """Queue one event; waits while the queue is full (back-pressure)."""
        self._check_open()
        await self.add_row(row_from_envelope(envelope))

    async def add_row(self, row: Row) -> None:
        """Queue one row made by `row_from_envelope` (for callers that map envelopes themselves)."""
        self._check_open()
        await self._queue.put(row)
        if self._queue.qsize() >= self._wake_at:
            self._wake.set()

    async def flush(self) -> None:
        """Wait until every event added before this call is committed."""
        self._check_open()
        await self._send_marker(stop=False)

    async def close(self, give_up_after_s: float | None = None) -> None:
        """Commit what is queued, then stop; after `give_up_after_s` seconds the rest is abandoned (and logged)."""
        if self._closed:
            return
        self._closed = True
        task = self._task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(give_up_after_s):
                await self._send_marker(stop=True)
        except TimeoutError:
            lost = self._queue.qsize()
            task.cancel()
            log.error("event_writer_close_timed_out", rows_abandoned=lost)
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        log.info("event_writer_closed", **self.stats.as_dict())

    async def __aenter__(self) -> EventWriter:
        """Start on entering an `async with` block."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Commit what is queued and stop on leaving the block."""
        await self.close()

    # --- internals ------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise WriterClosed(service="event writer", detail=str(self._error)) from self._error
        if self._closed:
            raise WriterClosed(service="event writer")

    async def _send_marker(self, *, stop: bool) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.add(future)
        try:
            await self._queue.put(_Marker(future, stop=stop))
            self._wake.set()
            await future
        finally:
            self._pending.discard(future)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        error: BaseException = WriterClosed(service="event writer")
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._error = error = exc
            log.error("event_writer_failed", error=repr(exc))
        # Nothing more will be committed: whoever waits for a flush or for an event learns it now.
        expected, self._expected = self._expected, {}
        futures: list[asyncio.Future[Any]] = [*self._pending, *{id(g): g.future for g in expected.values()}.values()]
        for future in futures:
            if not future.done():
                future.set_exception(error)

    async def _run(self) -> None:
        while True:
            batch, markers = await self._next_batch()
            if batch:
                await self._commit_with_retry(batch)
            stop = False
            for marker in markers:
                stop = stop or marker.stop
                if not marker.future.done():
                    marker.future.set_result(None)
            if stop:
                return

    async def _next_batch(self) -> tuple[list[Row], list[_Marker]]:
        """Collect rows until max_rows, interval_ms after the first row, or a flush/stop marker.

        While the batch waits for its interval, `add` wakes it only once enough rows are queued to fill it (or a
        marker is): one timer a batch, not a wake-up (and a timeout) a row.
        """
        queue = self._queue
        loop = asyncio.get_running_loop()
        first = await queue.get()
        if isinstance(first, _Marker):
            return [], [first]
        batch = [first]
        markers: list[_Marker] = []
        deadline = loop.time() + self._interval_s
        max_rows = self._max_rows
        while True:
            while len(batch) < max_rows and not markers:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if isinstance(item, _Marker):
                    markers.append(item)
                else:
                    batch.append(item)
            remaining = deadline - loop.time()
            if len(batch) >= max_rows or markers or remaining <= 0:
                break
            self._wake.clear()
            self._wake_at = max_rows - len(batch)
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                pass
            finally:
                self._wake_at = max_rows
        return batch, markers

    async def _commit_with_retry(self, rows: list[Row]) -> None:
        try:
            inserted = await self._commit_retrying(rows)
        except RefusedWrite as err:
            # A bad row (e.g. too long for its column on PostgreSQL): isolate it and keep the others.
            log.warning("event_batch_rejected_isolating", rows=len(rows), error=str(err))
            written = rejected = 0
            for row in rows:
                try:
                    one = await self._commit_retrying([row])
                except RefusedWrite as row_err:
                    await self._reject(row, row_err.cause)
                    self.settle(row["id"], REJECTED)
                    rejected += 1
                else:
                    written += len(one)
                    self._settle_rows([row], one)
        else:
            written, rejected = len(inserted), 0
            self._settle_rows(rows, inserted)
        self.stats.duplicates_ignored += len(rows) - written - rejected

    def _settle_rows(self, rows: list[Row], inserted: set[str]) -> None:
        expected = self._expected
        if expected:
            for row in rows:
                event_id = row["id"]
                group = expected.pop(event_id, None)
                if group is not None:
                    group.decide(event_id, STORED if event_id in inserted else DUPLICATE)

    async def _commit_retrying(self, rows: list[Row]) -> set[str]:
        """Commit rows, retrying transient failures with backoff; a refused row raises `RefusedWrite`."""

        def retrying(failure: Exception, delay: float) -> None:
            self.stats.retries += 1
            self._retrying = True
            # The driver's message alone: SQLAlchemy's text carries the whole statement and every parameter.
            error = str(getattr(failure, "orig", None) or failure)[:300]
            log.warning("event_commit_failed", rows=len(rows), retry_in_s=delay, error=error)

        try:
            return await commit_retrying(
                lambda: self._commit(rows), initial_s=self._retry_initial_s, max_s=self._retry_max_s, on_retry=retrying
            )
        finally:
            self._retrying = False

    async def _reject(self, row: Row, err: SQLAlchemyError) -> None:
        self.stats.rows_rejected += 1
        log.error("event_rejected_by_store", event_id=row.get("id"), error=str(err))
        if self._on_rejected is not None:
            await self._on_rejected(row, err)

    def _adapt_interval(self, commit_s: float) -> None:
        """Lengthen the interval while commits are slow, shorten it back as they get quick.

        A commit's cost is mostly the index pages it dirties, and a page is written once however many of the
        commit's rows it takes: on a table of 200,000 events our rows cost 81 µs each in commits of 600 rows, 55 µs in
        commits of 2,000 and 35 µs in commits of 6,000 (`bench/event_store.py --transaction`). So a store that
        spends over half the interval committing gets twice the interval (up to `interval_max_ms`), and bigger,
        cheaper commits; under an eighth, half of it (down to `interval_ms`). What waits for an event commit (a QoS 1
        acknowledgement, an HTTP ingest answer) waits longer only while the store is busy; the node's other writers
        (the alert path's among them) wait behind at most the one commit in progress (`write_transaction`).
        """
        interval = self._interval_s
        if commit_s > interval / 2:
            self._interval_s = min(interval * 2, self._interval_max_s)
        elif commit_s < interval / 8:
            self._interval_s = max(interval / 2, self._interval_min_s)

    async def _commit(self, rows: list[Row]) -> set[str]:
        stored_at = clock.now()
        for row in rows:
            row["stored_at"] = stored_at
        started = self._committing_since = time.perf_counter()
        try:
            if self._pg:
                statements = _postgresql_statements(rows)  # before the transaction
                async with write_transaction(self._engine) as conn:
                    inserted = await _insert_returning(conn, statements)
            else:
                stored = (stored_at, sqlite_time(stored_at))
                try:
                    async with write_transaction(self._engine) as conn:
                        if await in_driver_thread(conn, _sqlite_insert_counting, rows, stored) != len(rows):
                            raise _SomeDuplicates
                    inserted = {row["id"] for row in rows}
                except _SomeDuplicates:
                    # Rare (a replay after a reconnect or a crash, a sender's repeat): the same rows again, asking
                    # which went in.
                    async with write_transaction(self._engine) as conn:
                        inserted = await in_driver_thread(conn, _sqlite_insert_returning, rows, stored)
        finally:
            self._committing_since = None
        elapsed = time.perf_counter() - started
        self._adapt_interval(elapsed)
        written = len(inserted)
        stats = self.stats
        stats.commits += 1
        stats.rows_written += written
        stats.last_commit_sizes.append(len(rows))
        stats.last_commit_seconds = elapsed
        if self._metrics is not None:
            self._metrics.commit_rows.observe(len(rows))
            self._metrics.commit_seconds.observe(elapsed)
            self._metrics.stored.inc(written)
        return inserted
