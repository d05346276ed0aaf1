"""A lane keeps several of its endpoint's messages in flight, each alert's in order; a chat lane sends one at a time;
after a failure it starts no more rows. The dispatcher runs on a real SQLite outbox; the senders record when each
message started and ended (the webhook lane against a real receiver is in test_notify_outbox.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock
from safecity.store.engine import create_engine, upgrade
from safecity.warning.notify.outbox import Delivery, DeliveryError, OutboxDispatcher
from safecity.warning.notify.subscriptions import Subscription, SubscriptionFilter
from tests.integration.warning.notify_helpers import wait_for


@dataclass
class TimedSender:
    """Takes `delay_s` a message; records (delivery id, start, end) and the most messages it had at once."""

    delay_s: float = 0.05
    fail: set[str] = field(default_factory=set)  # delivery ids that fail (retried later)
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    active: int = 0
    most: int = 0

    async def send(self, sub: Subscription, delivery: Delivery) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.active -= 1
        self.spans.append((delivery.id, started, loop.time()))
        if delivery.id in self.fail:
            raise DeliveryError("HTTP 503")


def _sub(channel: str) -> Subscription:
    return Subscription(
        id=f"sub-{channel}",
        name=channel,
        channel=channel,
        target="x",
        filter=SubscriptionFilter(),
        created_at=clock.now(),
    )


def _row(sub: Subscription, row_id: str, alert_id: str) -> dict[str, Any]:
    return {
        "id": row_id,
        "subscription_id": sub.id,
        "alert_id": alert_id,
        "kind": "alert.raised",
        "body": {"alert": {"alert_id": alert_id}},
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": clock.now() + timedelta(seconds=300),  # leased to this node
    }


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(sqlite_url)
    made = create_engine(sqlite_url)
    yield made
    await made.dispose()


async def _deliver(
    engine: AsyncEngine, sender: TimedSender, sub: Subscription, rows: list[dict[str, Any]], *, in_flight: int = 4
) -> OutboxDispatcher:
    async def lookup(sub_id: str) -> Subscription | None:
        return sub if sub_id == sub.id else None

    dispatcher = OutboxDispatcher(
        engine,
        {"webhook": sender, "chat": sender},
        lookup,
        in_flight=in_flight,
        one_at_a_time={"chat"},
        poll_interval_s=0.1,
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        dispatcher.hand(rows)
        await wait_for(lambda: dispatcher.handed() == 0 and dispatcher.busy_lanes() == 0, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return dispatcher


async def test_a_lane_keeps_several_messages_in_flight_and_each_alerts_in_order(engine: AsyncEngine) -> None:
    sub = _sub("webhook")
    # Three rows of alert A (raised, updated twice) among eight single-row alerts.
    rows = [_row(sub, "a1", "A")] + [_row(sub, f"x{n}", f"X{n}") for n in range(4)]
    rows += [_row(sub, "a2", "A")] + [_row(sub, f"x{n}", f"X{n}") for n in range(4, 8)] + [_row(sub, "a3", "A")]
    sender = TimedSender()
    dispatcher = await _deliver(engine, sender, sub, rows)

    assert sorted(i for i, _, _ in sender.spans) == sorted(r["id"] for r in rows)
    assert dispatcher.stats.delivered == len(rows)
    assert sender.most == 4
    span = {i: (start, end) for i, start, end in sender.spans}
    # An alert's later message starts only once the one before it was answered.
    assert span["a1"][1] <= span["a2"][0] and span["a2"][1] <= span["a3"][0]


async def test_a_chat_lane_sends_one_message_at_a_time_in_order(engine: AsyncEngine) -> None:
    sub = _sub("chat")
    rows = [_row(sub, f"c{n}", f"C{n}") for n in range(6)]
    sender = TimedSender(delay_s=0.02)
    await _deliver(engine, sender, sub, rows)

    assert sender.most == 1
    assert [i for i, _, _ in sender.spans] == [r["id"] for r in rows]


async def test_after_a_failure_a_lane_starts_no_more_rows(engine: AsyncEngine) -> None:
    sub = _sub("webhook")
    rows = [_row(sub, f"r{n}", f"R{n}") for n in range(12)]
    sender = TimedSender(fail={"r0"})
    dispatcher = await _deliver(engine, sender, sub, rows, in_flight=3)

    # r0 fails in the first window of three: only the two beside it were sent; the other nine wait for the retry.
    assert sorted(i for i, _, _ in sender.spans) == ["r0", "r1", "r2"]
    assert dispatcher.stats.failed_attempts == 1
    assert dispatcher.stats.deferred == 9
