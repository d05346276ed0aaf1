"""The alert path's group-commit writer: alert rows, outbox rows, delivered marks and stamps, one transaction a batch.

A bus handler must not wait for the database (that made WebSocket push wait behind every insert, and a
`database is locked` error dropped the alert: the in-process bus does not redeliver). Instead the alert store and the
notify service queue `OutboxWrite`s into a bounded queue (a full queue makes the handler wait: back-pressure) and this
writer commits everything gathered within `interval_s` (or `max_ops` writes) in one transaction: the alerts' rows
(upserts), the outbox rows that deliver them, the outbox rows delivered meanwhile, and the alerts' `delivered` hop
stamps. On SQLite every transaction is several round trips to the driver's thread (0.7-0.8 ms of CPU even for one
statement), and one alert used to cost about seven of them; now a batch of alerts costs one.

`add` returns a future settled once the write is committed: the bus handlers hand it back to the bus, which
acknowledges the message only then (so an alert is never acknowledged before its rows are durable), without waiting
for the commit before reading the next message. A transient failure (database locked, connection dropped) keeps the
batch and retries it with backoff; outbox row ids are derived from the bus message id and the subscription, inserts
are `ON CONFLICT DO NOTHING` and alert rows are upserts, so a retried batch or a redelivered message never duplicates
anything. After each commit `on_commit` runs with the outbox rows this commit inserted already leased to this node
(`lease_until`), so the dispatcher delivers them at once from memory instead of claiming them back from the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock
from safecity.kernel.errors import ServiceUnavailable
from safecity.store.alerts import AlertRepo
from safecity.store.engine import write_transaction
from safecity.store.retry import RefusedWrite, commit_retrying
from safecity.warning.notify.repo import OutboxRepo

log = structlog.get_logger(__name__)

UPDATED = "alert.updated"
DELIVERED_HOP = "delivered"
# Rounds a delivered stamp waits for its alert to be stored (another subscription stores it) before it is dropped,
# and how long a round is.
STAMP_TRIES = 50
STAMP_RETRY_S = 0.2


class OutboxWriterClosed(ServiceUnavailable):
    """The outbox writer is stopped and accepts no more writes."""

    code = "notify.writer_closed"


@dataclass(frozen=True)
class OutboxWrite:
    """One decision of the alert path, applied in order inside a batch transaction.

    `alert_row` is upserted into `alerts` (the alert store). `rows` are inserted into the outbox (skipped when their
    id exists); with `lease_until`, the rows due by then are inserted leased to this node until that time and handed
    to `on_commit` after the commit. With `coalesce_body`, rows of kind `alert.updated` whose subscription still has
    an untried, unleased update of the same alert replace that row's body instead (one message per endpoint in an
    alert storm). `cancel_escalations_of` cancels the pending escalations of an acknowledged alert. `delivered` marks
    outbox rows delivered ((row id, time, attempts)); `stamps` set the `delivered` hop of alerts (alert id -> time,
    the first time stays).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    alert_id: str | None = None
    coalesce_body: dict[str, Any] | None = None
    cancel_escalations_of: str | None = None
    at: datetime | None = None
    alert_row: dict[str, Any] | None = None
    lease_until: datetime | None = None
    delivered: tuple[tuple[str, datetime, int], ...] = ()
    stamps: dict[str, datetime] = field(default_factory=dict)
    stamp_tries: int = 0


def _leased_count(write: OutboxWrite) -> int:
    """Rows of a write that are inserted leased to this node (due at once, with `lease_until`)."""
    if write.lease_until is None:
        return 0
    return sum(1 for row in write.rows if row["next_attempt_at"] <= row["created_at"])


def _stored(row: dict[str, Any], at: datetime) -> dict[str, Any]:
    hops = row.get("hops")
    hops = {**hops, "stored": at.isoformat()} if isinstance(hops, dict) else {"stored": at.isoformat()}
    return {**row, "hops": hops, "created_at": at, "updated_at": at}


@dataclass
class OutboxWriterStats:
    """Counters for metrics and tests."""

    commits: int = 0
    writes: int = 0
    rows_offered: int = 0
    coalesced: int = 0
    cancelled: int = 0
    retries: int = 0
    rejected: int = 0
    alerts: int = 0
    marked_delivered: int = 0
    stamped: int = 0
    stamps_dropped: int = 0
    handed: int = 0
    last_commit_sizes: list[int] = field(default_factory=list)


class OutboxWriter:
    """Commits queued outbox writes in batches from one background task."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        interval_s: float = 0.05,
        max_ops: int = 500,
        queue_size: int = 10_000,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        on_commit: Callable[[list[dict[str, Any]], bool], None] | None = None,
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.max_ops = max_ops
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.on_commit = on_commit
        self.stats = OutboxWriterStats()
        # None is a "commit now" marker put by flush(), so a stop does not wait out the batch window.
        self._queue: asyncio.Queue[tuple[OutboxWrite, asyncio.Future[None]] | None] = asyncio.Queue(maxsize=queue_size)
        self._later: set[asyncio.TimerHandle] = set()  # stamps waiting for their alert's row, re-added later
        self._outstanding = 0  # writes added and not yet committed (queued, gathered or being committed)
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._running = False
        self._leased_queued = 0

    @property
    def leased_queued(self) -> int:
        """Outbox rows queued to be inserted leased to this node (handed to the dispatcher once committed)."""
        return self._leased_queued

    @property
    def running(self) -> bool:
        """Whether `run` is committing and writes are accepted (a write added otherwise would wait for a start)."""
        return self._running and not self._closed

    @property
    def queued(self) -> int:
        """Writes not yet committed (queued or in the batch being committed)."""
        return self._outstanding

    async def add(self, write: OutboxWrite) -> asyncio.Future[None]:
        """Queue a write; waits while the queue is full (back-pressure on the bus consumer).

        Returns a future settled once the write is committed (a bus handler returns it: the message is acknowledged
        then). Nobody has to wait for it.
        """
        if self._closed:
            raise OutboxWriterClosed(service="outbox writer")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outstanding += 1
        leased = _leased_count(write)
        self._leased_queued += leased
        self._idle.clear()
        try:
            await self._queue.put((write, future))
        except BaseException:
            self._outstanding -= 1
            self._leased_queued -= leased
            raise
        return future

    def add_nowait(self, write: OutboxWrite) -> bool:
        """Queue a write without waiting (bookkeeping such as delivered marks); False when the queue is full."""
        if self._closed:
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((write, future))
        except asyncio.QueueFull:
            return False
        self._outstanding += 1
        self._leased_queued += _leased_count(write)
        self._idle.clear()
        return True

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._outstanding:
            await self._queue.put(None)
        while self._outstanding:
            await self._idle.wait()

    def close(self) -> None:
        """Refuse further writes (what is queued is still committed by `run`)."""
        self._closed = True
        for handle in self._later:
            handle.cancel()
        self._later.clear()

    async def run(self) -> None:
        """Commit batches until cancelled."""
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            writes = [write for write, _ in batch]
            error: BaseException | None = None
            try:
                await self._commit_with_retry(writes)
            except Exception as err:
                # Not a database failure (those are retried) but a bug: report it, keep the writer alive.
                self.stats.rejected += len(batch)
                log.exception("outbox_batch_failed", writes=len(batch))
                error = err
            self._leased_queued -= sum(_leased_count(write) for write in writes)
            for _, future in batch:
                if not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
            self._outstanding -= len(batch)
            if self._outstanding == 0:
                self._idle.set()

    async def _next_batch(self) -> list[tuple[OutboxWrite, asyncio.Future[None]]]:
        """Gather writes for up to `interval_s` after the first one, `max_ops` writes, or until a flush marker."""
        first = await self._queue.get()
        if first is None:
            return []
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.interval_s
        while len(batch) < self.max_ops:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    # A timeout scope, not `wait_for`: on Python 3.11 that wraps the get in a task of its own.
                    async with asyncio.timeout(remaining):
                        item = await self._queue.get()
                except TimeoutError:
                    break
            if item is None:
                break
            batch.append(item)
        return batch

    async def _commit_with_retry(self, batch: list[OutboxWrite]) -> None:
        try:
            await self._commit_retrying(batch)
        except RefusedWrite as err:
            # Never seen in practice (no foreign keys, ids are conflict-free): isolate the culprit, keep the rest.
            log.warning("outbox_batch_rejected_isolating", writes=len(batch), error=str(err))
            for write in batch:
                try:
                    await self._commit_retrying([write])
                except RefusedWrite as one:
                    self.stats.rejected += 1
                    log.error("outbox_write_rejected", alert_id=write.alert_id, rows=len(write.rows), error=str(one))

    async def _commit_retrying(self, batch: list[OutboxWrite]) -> None:
        def retrying(failure: Exception, delay: float) -> None:
            self.stats.retries += 1
            log.warning("outbox_commit_failed", writes=len(batch), retry_in_s=delay, error=str(failure))

        await commit_retrying(
            lambda: self._commit(batch), initial_s=self.retry_initial_s, max_s=self.retry_max_s, on_retry=retrying
        )

    async def _commit(self, batch: list[OutboxWrite]) -> None:
        coalesced = cancelled = offered = 0
        handed: list[dict[str, Any]] = []
        stamps: dict[str, tuple[datetime, int]] = {}
        delivered: list[tuple[str, datetime, int]] = []
        async with write_transaction(self.engine) as conn:
            stored_at = clock.now()
            # The `stored` hop and the row's times are this commit's (the rows were made when queued).
            alert_rows = [_stored(w.alert_row, stored_at) for w in batch if w.alert_row is not None]
            if alert_rows:
                # First: a delivered stamp in this same batch finds its alert stored.
                await AlertRepo(conn).upsert_many(alert_rows)
            repo = OutboxRepo(conn)
            pending: list[dict[str, Any]] = []
            for write in batch:
                offered += len(write.rows)
                rows = write.rows
                if write.coalesce_body is not None and write.alert_id is not None:
                    # Rows queued before this one may be the very updates to coalesce with: insert them first.
                    handed += await self._enqueue(repo, pending)
                    pending = []
                    subs = [r["subscription_id"] for r in rows if r["kind"] == UPDATED]
                    refreshed = await repo.refresh_pending_updates(
                        write.alert_id, subs, write.coalesce_body, now=clock.now()
                    )
                    coalesced += len(refreshed)
                    rows = [r for r in rows if not (r["kind"] == UPDATED and r["subscription_id"] in refreshed)]
                pending.extend(self._leased(rows, write.lease_until))
                if write.cancel_escalations_of is not None and write.at is not None:
                    handed += await self._enqueue(repo, pending)
                    pending = []
                    cancelled += await repo.cancel_escalations(write.cancel_escalations_of, write.at)
                delivered.extend(write.delivered)
                for alert_id, at in write.stamps.items():
                    known = stamps.get(alert_id)
                    if known is None or at < known[0]:
                        stamps[alert_id] = (at, max(write.stamp_tries, known[1] if known else 0))
            handed += await self._enqueue(repo, pending)
            if delivered:
                await repo.mark_delivered_many(delivered)
            missing: set[str] = set()
            if stamps:
                missing = await AlertRepo(conn).stamp_hop_many(DELIVERED_HOP, {a: at for a, (at, _) in stamps.items()})
        stats = self.stats
        stats.commits += 1
        stats.writes += len(batch)
        stats.rows_offered += offered
        stats.coalesced += coalesced
        stats.cancelled += cancelled
        stats.alerts += len(alert_rows)
        stats.marked_delivered += len(delivered)
        stats.stamped += len(stamps) - len(missing)
        stats.handed += len(handed)
        stats.last_commit_sizes = [*stats.last_commit_sizes[-99:], len(batch)]
        if missing:
            self._stamp_later({a: stamps[a] for a in missing})
        log.debug("outbox_committed", writes=len(batch), rows=offered, coalesced=coalesced, cancelled=cancelled)
        if self.on_commit is not None:
            # Rows not handed over (escalations due later, duplicates, coalesced updates) may need a look in the table.
            self.on_commit(handed, offered > len(handed) or cancelled > 0)

    @staticmethod
    def _leased(rows: list[dict[str, Any]], until: datetime | None) -> list[dict[str, Any]]:
        """The rows with those due at once (due when made) leased to this node until `until` (marked `_handed`)."""
        if until is None:
            return rows
        out = []
        for row in rows:
            due_now = row["next_attempt_at"] <= row["created_at"]
            out.append({**row, "next_attempt_at": until, "_handed": True} if due_now else row)
        return out

    @staticmethod
    async def _enqueue(repo: OutboxRepo, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert rows; return those inserted now that this node delivers from memory (leased at insert)."""
        if not rows:
            return []
        clean = [{k: v for k, v in r.items() if k != "_handed"} for r in rows]
        inserted = await repo.enqueue_returning(clean)
        handed = []
        for row, marked in zip(clean, rows, strict=True):
            # A redelivered message in the same batch repeats a row id: the row is inserted, and handed over, once.
            if marked.get("_handed") and row["id"] in inserted:
                inserted.discard(row["id"])
                handed.append(row)
        return handed

    def _stamp_later(self, stamps: dict[str, tuple[datetime, int]]) -> None:
        """Stamps of alerts not stored yet: try again in a round, up to `STAMP_TRIES` rounds, then drop them."""
        retry: dict[str, datetime] = {}
        tries = 0
        for alert_id, (at, tried) in stamps.items():
            if tried + 1 >= STAMP_TRIES:
                self.stats.stamps_dropped += 1
                log.warning("alert_delivered_stamp_dropped", alert_id=alert_id, reason="alert never stored")
                continue
            retry[alert_id] = at
            tries = max(tries, tried + 1)
        if not retry or self._closed:
            return
        write = OutboxWrite(stamps=retry, stamp_tries=tries)
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._later.discard(handle)
            if not self.add_nowait(write):
                self._stamp_later({a: (at, tries) for a, at in retry.items()})

        handle = loop.call_later(STAMP_RETRY_S, again)
        self._later.add(handle)
