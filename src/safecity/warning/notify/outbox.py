"""The durable outbox dispatcher: retries with exponential backoff and jitter, one lane per endpoint, dead letters.

Rows are written by the service in the same transaction that decides them. The dispatcher claims due rows with a
lease (so several nodes can share one database), groups them by subscription and hands each group to its own lane
task. A lane keeps up to `in_flight` of its rows in flight at once (one at a time for a channel whose readers go by
the order of arrival, a chat group), each alert's rows in order, with a per-attempt time limit; after a failure it
starts no more rows and defers the rest of its batch to the same retry time, so a dead endpoint costs one timeout
(per row in flight) per backoff step and never blocks any other lane.

A timed-out attempt may have been handled by the receiver (it was sent; only the answer was late), so it is sent again
with the same id (the receiver dedupes on it) under a longer limit: the limit doubles with each attempt and with each
timeout of that endpoint, up to a cap. A slow but working endpoint is thus delivered (and then answered in time), not
dead-lettered for being slow; one that does not answer even within the cap is treated as down.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock

# The sender's side (message, failure, protocol, stamp) lives in delivery.py; re-exported where callers import it.
from safecity.store.engine import write_transaction
from safecity.warning.notify.delivery import Delivery as Delivery  # noqa: PLC0414
from safecity.warning.notify.delivery import DeliveryError as DeliveryError  # noqa: PLC0414
from safecity.warning.notify.delivery import Sender as Sender  # noqa: PLC0414
from safecity.warning.notify.delivery import stamp_delivered as stamp_delivered  # noqa: PLC0414
from safecity.warning.notify.repo import OutboxRepo
from safecity.warning.notify.subscriptions import Subscription

log = structlog.get_logger(__name__)

MAX_ERROR_CHARS = 2000
_LEASE_MARGIN_S = 30.0
# Rows handed over from memory and waiting for their lane, at most: past it new rows wait in the table (due at once)
# and are claimed from there, so a slow endpoint in an alert storm fills the table, not the node's memory.
HANDED_MAX = 2_000


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, and when to give up."""

    max_attempts: int = 8
    base_s: float = 1.0
    max_s: float = 300.0
    jitter: float = 0.5  # the delay is drawn from [d * (1 - jitter), d]

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = min(self.max_s, self.base_s * (2 ** max(0, attempt - 1)))
        draw = (rng or random).random()
        return float(base * (1.0 - self.jitter * draw))


OnDelivered = Callable[[Subscription, Delivery, datetime], Awaitable[None]]
# Records a lane's deliveries (marks the rows delivered); given, it replaces the dispatcher's own transaction (the
# notify service queues them into the alert path's group commit and returns that commit's future).
RecordDelivered = Callable[[list[tuple[Subscription, Delivery, datetime]]], Awaitable["asyncio.Future[None] | None"]]


class AttemptLimits:
    """Time limits of delivery attempts: doubled per attempt of a row and learned per endpoint, capped."""

    def __init__(self, base_s: float, max_s: float) -> None:
        self.base_s = base_s
        self.max_s = max(base_s, max_s)
        # Endpoints that timed out recently: the limit that their next attempts get (absent: `base_s`).
        self._learned: dict[str, float] = {}

    def limit_s(self, sub_id: str, attempt: int) -> float:
        """The limit of attempt number `attempt` (1-based) of a row of this endpoint."""
        by_attempt = self.base_s * float(2 ** min(max(0, attempt - 1), 30))
        return min(self.max_s, max(by_attempt, self._learned.get(sub_id, self.base_s)))

    def timed_out(self, sub_id: str, limit_s: float) -> None:
        """An attempt got no answer within `limit_s`: give this endpoint's next attempts twice as long."""
        self._learned[sub_id] = min(self.max_s, max(self._learned.get(sub_id, self.base_s), 2 * limit_s))

    def answered(self, sub_id: str, elapsed_s: float) -> None:
        """An attempt was answered after `elapsed_s`: shrink a learned limit toward twice that (never below base)."""
        learned = self._learned.get(sub_id)
        if learned is None:
            return
        fitted = max(self.base_s, 2 * elapsed_s)
        if fitted >= learned:
            return
        if fitted <= self.base_s:
            del self._learned[sub_id]
        else:
            self._learned[sub_id] = fitted


@dataclass
class DispatcherStats:
    """Counters for metrics and tests."""

    claims: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    dead: int = 0
    deferred: int = 0
    db_retries: int = 0
    by_subscription: dict[str, int] = field(default_factory=dict)


class OutboxDispatcher:
    """Delivers due outbox rows through the channels, one lane per subscription."""

    def __init__(
        self,
        engine: AsyncEngine,
        senders: Mapping[str, Sender],
        lookup: Callable[[str], Awaitable[Subscription | None]],
        *,
        policy: RetryPolicy | None = None,
        attempt_timeout_s: float = 10.0,
        attempt_timeout_max_s: float = 120.0,
        lane_batch: int = 20,
        in_flight: int = 4,
        one_at_a_time: Collection[str] = (),
        claim_limit: int = 500,
        poll_interval_s: float = 1.0,
        on_delivered: OnDelivered | None = None,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        record_delivered: RecordDelivered | None = None,
    ) -> None:
        self.engine = engine
        self.record_delivered = record_delivered
        self.senders = dict(senders)
        self.lookup = lookup
        self.policy = policy or RetryPolicy()
        self.attempt_timeout_s = attempt_timeout_s
        self.limits = AttemptLimits(attempt_timeout_s, attempt_timeout_max_s)
        self.lane_batch = lane_batch
        self.in_flight = max(1, in_flight)
        self.one_at_a_time = frozenset(one_at_a_time)  # channels whose lanes send one message at a time
        self.claim_limit = claim_limit
        self.poll_interval_s = poll_interval_s
        self.on_delivered = on_delivered
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stats = DispatcherStats()
        self._wake = asyncio.Event()
        self._wakes = 0  # calls of wake(): new rows may be due
        self._busy: set[str] = set()
        self._claimed: set[str] = set()
        self._rng = random.Random()
        # Rows this node inserted leased to itself (`hand`), per subscription, with their lease's end (loop time):
        # delivered from memory, never claimed back from the table.
        self._handed: dict[str, list[tuple[dict[str, Any], float]]] = {}
        self._need_claim = True
        self._tg: asyncio.TaskGroup | None = None  # lanes and delivery records run as its children

    def wake(self) -> None:
        """Look for due rows in the table now (rows may be due that this node did not hand over itself)."""
        self._wakes += 1
        self._need_claim = True
        self._wake.set()

    def hand(self, rows: list[dict[str, Any]]) -> None:
        """Deliver rows just inserted by this node and leased to it (their `next_attempt_at` is the lease's end).

        The rows were committed before they are handed over, so a crash leaves them in the table, due again when
        their lease ends. No claim transaction and no due-time query is spent on them.
        """
        if not rows:
            return
        loop = asyncio.get_running_loop()
        now = clock.now()
        for row in rows:
            ends = loop.time() + (row["next_attempt_at"] - now).total_seconds() - _LEASE_MARGIN_S
            self._handed.setdefault(row["subscription_id"], []).append((row, ends))
            self._claimed.add(row["id"])
        self._wake.set()

    def handed(self) -> int:
        """Rows handed over and not yet given to a lane."""
        return sum(len(rows) for rows in self._handed.values())

    def _start_handed(self, tg: asyncio.TaskGroup) -> None:
        for sub_id in [s for s in self._handed if s not in self._busy]:
            queued = self._handed[sub_id]
            take, rest = queued[: self.lane_batch], queued[self.lane_batch :]
            if rest:
                self._handed[sub_id] = rest
            else:
                del self._handed[sub_id]
            self._busy.add(sub_id)
            rows = [row for row, _ in take]
            ends = min(end for _, end in take)
            tg.create_task(self._lane(sub_id, rows, lease_ends=ends), name=f"notify-lane-{sub_id}")

    def busy_lanes(self) -> int:
        """How many subscriptions' lanes are sending now."""
        return len(self._busy)

    def lease_s(self) -> float:
        """How long a claimed batch is reserved: a full lane batch at the first limit, or one attempt at the cap.

        A lane hands back the rows it has no lease time left for (see `_lane`), so no row is ever attempted after its
        lease could have run out (another node would claim it and send it a second time).
        """
        return max(self.attempt_timeout_s * self.lane_batch, self.limits.max_s) + _LEASE_MARGIN_S

    async def run(self) -> None:
        """Claim and deliver until cancelled; lanes are children of this task."""
        try:
            await self._loop()
        finally:
            # Stopping: hand back leases of rows not finished here, so a restart delivers them at once.
            if self._claimed:
                try:
                    async with write_transaction(self.engine) as conn:
                        await OutboxRepo(conn).release(sorted(self._claimed), clock.now())
                except (SQLAlchemyError, OSError) as err:
                    # Their leases expire on their own; they are delivered then.
                    log.warning("notify_release_failed", rows=len(self._claimed), error=str(err))
                self._claimed.clear()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            failures = 0
            self._need_claim = True
            next_look = loop.time()
            while True:
                self._wake.clear()
                self._start_handed(tg)
                if self._need_claim or loop.time() >= next_look:
                    self._need_claim = False
                    try:
                        batches, full = await self._claim()
                    except (SQLAlchemyError, OSError) as err:
                        # Database locked or connection dropped: keep the running lanes, look again after a pause.
                        failures += 1
                        self.stats.db_retries += 1
                        delay = min(self.retry_max_s, self.retry_initial_s * 2 ** min(failures - 1, 10))
                        log.warning("notify_claim_failed", retry_in_s=delay, error=str(err))
                        self._need_claim = True
                        await asyncio.sleep(delay)
                        continue
                    failures = 0
                    for sub_id, rows in batches.items():
                        self._busy.add(sub_id)
                        tg.create_task(self._lane(sub_id, rows), name=f"notify-lane-{sub_id}")
                    if full:
                        self._need_claim = True
                        continue  # more rows are due than one claim takes
                    next_look = loop.time() + await self._sleep_s()
                try:
                    async with asyncio.timeout(max(0.0, next_look - loop.time())):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _sleep_s(self) -> float:
        try:
            async with self.engine.connect() as conn:
                # Rows of a lane still sending are not ours to wait for: the lane wakes us when it is done. Counting
                # them made the loop poll every 10 ms (two queries a poll) for as long as a lane was busy.
                next_at = await OutboxRepo(conn).next_due_at(exclude=sorted(self._busy))
        except (SQLAlchemyError, OSError) as err:
            log.warning("notify_next_due_failed", error=str(err))
            return self.poll_interval_s
        if next_at is None:
            return self.poll_interval_s
        wait = (next_at - clock.now()).total_seconds()
        return min(self.poll_interval_s, max(0.01, wait))

    async def _claim(self) -> tuple[dict[str, list[dict[str, Any]]], bool]:
        """Lease due rows, at most `lane_batch` per idle subscription; also say whether the claim limit was hit."""
        now = clock.now()
        self.stats.claims += 1
        async with write_transaction(self.engine) as conn:
            repo = OutboxRepo(conn)
            rows = await repo.due(now, limit=self.claim_limit, exclude=sorted(self._busy))
            picked: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                lane = picked.setdefault(row["subscription_id"], [])
                if len(lane) < self.lane_batch:
                    lane.append(row)
            ids = [r["id"] for lane in picked.values() for r in lane]
            won = await repo.lease(ids, now, now + timedelta(seconds=self.lease_s()))
        self._claimed |= won
        batches = {s: kept for s, lane in picked.items() if (kept := [r for r in lane if r["id"] in won])}
        return batches, len(rows) >= self.claim_limit

    async def _lane(self, sub_id: str, rows: list[dict[str, Any]], *, lease_ends: float | None = None) -> None:
        done: list[tuple[Subscription, Delivery, datetime]] = []
        wakes = self._wakes
        loop = asyncio.get_running_loop()
        handed = lease_ends is not None
        if lease_ends is None:
            lease_ends = loop.time() + self.lease_s() - _LEASE_MARGIN_S
        # The dispatcher looks again when this lane ends only if it may have left something due: claims made while
        # it ran skipped its subscription, its batch was full, or it scheduled a retry. Looking after every lane
        # cost two claims and a due-time query an alert.
        # Rows handed over from memory (`lease_ends` given) left nothing in the table: the rest wait in `_handed`.
        look_again = not handed and len(rows) >= self.lane_batch
        try:
            stopped = await self._send(sub_id, rows, done, lease_ends)
            if stopped is not None:
                # The endpoint failed, or slow attempts used up the lease: the rows not started go back to the table.
                look_again = True
                left, due_at = stopped
                await self._record_delivered(done)
                await self._defer(left, due_at)
                return
            # The marks are queued for the writer's next group commit; the endpoint's next lane does not wait for it.
            await self._record_delivered(done, wait=False)
        finally:
            self._busy.discard(sub_id)
            if look_again or self._wakes != wakes:
                self._need_claim = True
                self._wake.set()
            elif sub_id in self._handed:
                self._wake.set()  # more rows handed over for this subscription meanwhile

    async def _send(
        self,
        sub_id: str,
        rows: list[dict[str, Any]],
        done: list[tuple[Subscription, Delivery, datetime]],
        lease_ends: float,
    ) -> tuple[list[dict[str, Any]], datetime] | None:
        """Attempt a lane's rows, up to `in_flight` at once and each alert's rows in order (successes are appended to
        `done`). Returns None when every row was attempted; else the rows not started and when they are due again:
        a failed attempt's retry time (no further row is started once one failed), or now when the lease ran out.
        """
        loop = asyncio.get_running_loop()
        by_alert: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_alert.setdefault(row["alert_id"], []).append(row)
        window = await self._window(sub_id)
        slots = asyncio.Semaphore(window)
        left: list[dict[str, Any]] = []
        due_again: list[datetime] = []

        async def send_in_order(chain: list[dict[str, Any]]) -> None:
            for index, row in enumerate(chain):
                async with slots:
                    if due_again:
                        left.extend(chain[index:])
                        return
                    if loop.time() + self.limits.limit_s(sub_id, int(row["attempts"]) + 1) > lease_ends:
                        # Slow attempts used up the lease: hand the rest back (due now) rather than outlive it.
                        due_again.append(clock.now())
                        left.extend(chain[index:])
                        return
                    failure = await self._attempt(sub_id, row, done)
                    if failure is None:
                        continue
                    attempt, error = failure
                    self.stats.failed_attempts += 1
                    retry_at = self._retry_at(attempt)
                    if retry_at is None:
                        await self._dead(row, attempt, error)
                        continue
                    # The endpoint is failing: start no more rows (no timeout spent per queued row, the rows in flight
                    # end as they will); all are tried again later.
                    due_again.append(retry_at)
                    left.extend(chain[index + 1 :])
                    await self._retry(row, attempt, retry_at, error)
                    return

        if window == 1 or len(by_alert) == 1:
            await send_in_order(rows)
        else:
            async with asyncio.TaskGroup() as tg:
                for chain in by_alert.values():
                    tg.create_task(send_in_order(chain))
        return (left, min(due_again)) if due_again else None

    async def _window(self, sub_id: str) -> int:
        """How many of a lane's rows may be in flight at once (1 for a channel read in order of arrival)."""
        if self.in_flight == 1:
            return 1
        sub = await self.lookup(sub_id)
        return 1 if sub is not None and sub.channel in self.one_at_a_time else self.in_flight

    async def _record_delivered(
        self, done: list[tuple[Subscription, Delivery, datetime]], *, wait: bool = True
    ) -> None:
        """Mark a lane's delivered rows in one transaction (not one commit per message), then run the hooks.

        With `record_delivered`, the marks go into the alert path's group commit: queued here, committed with other
        alerts' rows; without `wait` the bookkeeping after the commit runs as a child task (the rows stay claimed, so
        handed back on stop, until their marks are durable).
        """
        if not done:
            return
        batch = list(done)
        done.clear()
        if self.record_delivered is not None:
            committed = await self.record_delivered(batch)
            if committed is not None:
                if not wait and self._tg is not None:
                    self._tg.create_task(self._recorded_after(batch, committed), name="notify-recorded")
                    return
                await committed
        else:

            async def apply(repo: OutboxRepo) -> None:
                for _sub, delivery, at in batch:
                    await repo.mark_delivered(delivery.id, at, delivery.attempt)

            await self._write("delivered", apply)
        await self._recorded(batch)

    async def _recorded_after(
        self, batch: list[tuple[Subscription, Delivery, datetime]], committed: asyncio.Future[None]
    ) -> None:
        await committed
        await self._recorded(batch)

    async def _recorded(self, batch: list[tuple[Subscription, Delivery, datetime]]) -> None:
        for sub, delivery, at in batch:
            self._claimed.discard(delivery.id)
            self.stats.delivered += 1
            self.stats.by_subscription[sub.id] = self.stats.by_subscription.get(sub.id, 0) + 1
            log.info("notify_delivered", outbox_id=delivery.id, subscription_id=sub.id, alert_id=delivery.alert_id)
            if self.on_delivered is not None:
                await self.on_delivered(sub, delivery, at)

    async def _write(self, what: str, apply: Callable[[OutboxRepo], Awaitable[Any]]) -> None:
        """Run one small write transaction, retrying transient failures."""
        # A lane must not die on a locked database: its rows would stay leased, and one already sent would be sent
        # again once the lease ran out.
        delay = self.retry_initial_s
        while True:
            try:
                async with write_transaction(self.engine) as conn:
                    await apply(OutboxRepo(conn))
                return
            except (SQLAlchemyError, OSError) as err:
                self.stats.db_retries += 1
                log.warning("notify_outbox_write_failed", what=what, retry_in_s=delay, error=str(err))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)

    async def _defer(self, rows: list[dict[str, Any]], at: datetime) -> None:
        if not rows:
            return
        self.stats.deferred += len(rows)
        self._claimed.difference_update(r["id"] for r in rows)

        async def apply(repo: OutboxRepo) -> None:
            for row in rows:
                await repo.mark_retry(row["id"], row["attempts"], at, row["last_error"])

        await self._write("defer", apply)

    async def _attempt(
        self, sub_id: str, row: dict[str, Any], done: list[tuple[Subscription, Delivery, datetime]]
    ) -> tuple[int, str] | None:
        """Try one row (a success is appended to `done`; a row that cannot be delivered is dead-lettered); return the
        attempt and its error when the endpoint failed (`_failed` records it)."""
        attempt = int(row["attempts"]) + 1
        sub = await self.lookup(sub_id)
        if sub is None or not sub.enabled:
            await self._dead(row, attempt, "subscription deleted or disabled")
            return None
        sender = self.senders.get(sub.channel)
        if sender is None:
            await self._dead(row, attempt, f"no sender for channel {sub.channel}")
            return None
        delivery = Delivery(
            id=row["id"],
            subscription_id=sub_id,
            alert_id=row["alert_id"],
            kind=row["kind"],
            body=row["body"],
            attempt=attempt,
        )
        limit_s = self.limits.limit_s(sub_id, attempt)
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(limit_s):
                await sender.send(sub, delivery)
        except TimeoutError:
            # Sent, maybe handled, answer late: retried with the same id under a longer limit (the module docstring).
            self.limits.timed_out(sub_id, limit_s)
            return attempt, f"TimeoutError: no answer within {limit_s:g} s"
        except DeliveryError as err:
            if err.permanent:
                await self._dead(row, attempt, str(err))
                return None
            return attempt, str(err)
        except Exception as err:
            # The lane is the supervisor of one endpoint: any failure there is recorded and retried, never raised
            # into the dispatcher (that would stop every other endpoint).
            return attempt, f"{type(err).__name__}: {err}"
        self.limits.answered(sub_id, asyncio.get_running_loop().time() - started)
        done.append((sub, delivery, clock.now()))
        return None

    def _retry_at(self, attempt: int) -> datetime | None:
        """When a row whose attempt number `attempt` failed is tried again; None when that was its last."""
        if attempt >= self.policy.max_attempts:
            return None
        return clock.now() + timedelta(seconds=self.policy.delay_s(attempt, self._rng))

    async def _retry(self, row: dict[str, Any], attempt: int, at: datetime, error: str) -> None:
        await self._write("retry", lambda repo: repo.mark_retry(row["id"], attempt, at, error[:MAX_ERROR_CHARS]))
        self._claimed.discard(row["id"])  # due again at `at`, for whichever node claims it then
        log.warning(
            "notify_attempt_failed", outbox_id=row["id"], subscription_id=row["subscription_id"], attempt=attempt
        )

    async def _dead(self, row: dict[str, Any], attempt: int, error: str) -> None:
        self.stats.dead += 1
        await self._write("dead", lambda repo: repo.mark_dead(row["id"], attempt, error[:MAX_ERROR_CHARS]))
        self._claimed.discard(row["id"])
        log.warning("notify_dead", outbox_id=row["id"], subscription_id=row["subscription_id"], attempts=attempt)
