"""Group-commit writer of outbox rows: the bus handler only queues; one task commits batches and retries failures.

A bus handler must not wait for the database (that made WebSocket push wait behind every insert, and a
`database is locked` error dropped the alert: the in-process bus does not redeliver). Instead the service queues
`OutboxWrite`s into a bounded queue (a full queue makes the handler wait: back-pressure) and this writer commits
everything gathered within `interval_s` (or `max_ops` writes) in one transaction. A transient failure (database
locked, connection dropped) keeps the batch and retries it with backoff; outbox row ids are derived from the bus
message id and the subscription, and inserts are `ON CONFLICT DO NOTHING`, so a retried batch never duplicates a
delivery. After each commit `on_commit` runs (the service wakes the dispatcher there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel.errors import ServiceUnavailable
from safecity.store.retry import RefusedWrite, commit_retrying
from safecity.warning.notify.repo import OutboxRepo

log = structlog.get_logger(__name__)

UPDATED = "alert.updated"


class OutboxWriterClosed(ServiceUnavailable):
    """The outbox writer is stopped and accepts no more writes."""

    code = "notify.writer_closed"


@dataclass(frozen=True)
class OutboxWrite:
    """One decision of the service, applied in order inside a batch transaction.

    `rows` are inserted (skipped when their id exists). With `coalesce_body`, rows of kind `alert.updated` whose
    subscription still has an untried update of the same alert replace that row's body instead (one message per
    endpoint in an alert storm). `cancel_escalations_of` cancels the pending escalations of an acknowledged alert.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    alert_id: str | None = None
    coalesce_body: dict[str, Any] | None = None
    cancel_escalations_of: str | None = None
    at: datetime | None = None


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
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.max_ops = max_ops
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.on_commit = on_commit
        self.stats = OutboxWriterStats()
        # None is a "commit now" marker put by flush(), so a stop does not wait out the batch window.
        self._queue: asyncio.Queue[OutboxWrite | None] = asyncio.Queue(maxsize=queue_size)
        self._outstanding = 0  # writes added and not yet committed (queued, gathered or being committed)
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    @property
    def queued(self) -> int:
        """Writes not yet committed (queued or in the batch being committed)."""
        return self._outstanding

    async def add(self, write: OutboxWrite) -> None:
        """Queue a write; waits while the queue is full (back-pressure on the bus consumer)."""
        if self._closed:
            raise OutboxWriterClosed(service="outbox writer")
        self._outstanding += 1
        self._idle.clear()
        try:
            await self._queue.put(write)
        except BaseException:
            self._outstanding -= 1
            raise

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._outstanding:
            await self._queue.put(None)
        while self._outstanding:
            await self._idle.wait()

    def close(self) -> None:
        """Refuse further writes (what is queued is still committed by `run`)."""
        self._closed = True

    async def run(self) -> None:
        """Commit batches until cancelled."""
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                await self._commit_with_retry(batch)
            except Exception:
                # Not a database failure (those are retried) but a bug: report it, keep the writer alive.
                self.stats.rejected += len(batch)
                log.exception("outbox_batch_failed", writes=len(batch))
            self._outstanding -= len(batch)
            if self._outstanding == 0:
                self._idle.set()

    async def _next_batch(self) -> list[OutboxWrite]:
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
                    item = await asyncio.wait_for(self._queue.get(), remaining)
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
        async with self.engine.begin() as conn:
            repo = OutboxRepo(conn)
            pending: list[dict[str, Any]] = []
            for write in batch:
                offered += len(write.rows)
                rows = write.rows
                if write.coalesce_body is not None and write.alert_id is not None:
                    # Rows queued before this one may be the very updates to coalesce with: insert them first.
                    await repo.enqueue(pending)
                    pending = []
                    subs = [r["subscription_id"] for r in rows if r["kind"] == UPDATED]
                    refreshed = await repo.refresh_pending_updates(write.alert_id, subs, write.coalesce_body)
                    coalesced += len(refreshed)
                    rows = [r for r in rows if not (r["kind"] == UPDATED and r["subscription_id"] in refreshed)]
                pending.extend(rows)
                if write.cancel_escalations_of is not None and write.at is not None:
                    await repo.enqueue(pending)
                    pending = []
                    cancelled += await repo.cancel_escalations(write.cancel_escalations_of, write.at)
            await repo.enqueue(pending)
        stats = self.stats
        stats.commits += 1
        stats.writes += len(batch)
        stats.rows_offered += offered
        stats.coalesced += coalesced
        stats.cancelled += cancelled
        stats.last_commit_sizes = [*stats.last_commit_sizes[-99:], len(batch)]
        log.debug("outbox_committed", writes=len(batch), rows=offered, coalesced=coalesced, cancelled=cancelled)
        if self.on_commit is not None:
            self.on_commit()
