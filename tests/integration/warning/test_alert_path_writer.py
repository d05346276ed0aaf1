"""The alert path's group commit: alert rows, outbox rows, delivered marks and stamps share one writer's transactions;
every alert is stored once and delivered once, with every hop time, also across a crash between commit and send."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel.bus import MemoryBus
from safecity.kernel.envelope import Envelope, make_envelope
from safecity.store.engine import create_engine, upgrade
from safecity.warning.alerts import AlertService
from safecity.warning.model import ALERT_RAISED
from safecity.warning.notify import outbox as outbox_module
from safecity.warning.notify.service import NotifyConfig, NotifyService
from safecity.warning.notify.subscriptions import Channel, SubscriptionCreate
from tests.integration.warning.notify_helpers import free_port, http_receiver, make_alert, wait_for

FAST = {"allow_loopback": True, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "poll_interval_s": 0.1}


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(sqlite_url)
    eng = create_engine(sqlite_url)
    yield eng
    await eng.dispose()


class Node:
    """The alert path of one node: notify (its writer) and the alert store sharing it, on an in-process bus."""

    def __init__(self, engine: AsyncEngine, **config: Any) -> None:
        self.bus = MemoryBus()
        self.notify = NotifyService(
            engine, self.bus, NotifyConfig(**{**FAST, **config}), stamp_alerts=True, writer_interval_s=0.05
        )
        self.alerts = AlertService(engine, self.bus, node_id="n1", writer=self.notify.writer)

    async def start(self) -> None:
        await self.bus.start()
        await self.notify.start()
        await self.alerts.start()

    async def stop(self) -> None:
        await self.bus.drain()
        await self.alerts.stop()
        await self.notify.stop()
        await self.bus.close()


def _ids(requests: list[tuple[dict[str, str], bytes]]) -> Counter[str]:
    return Counter(orjson.loads(body)["alert"]["alert_id"] for _, body in requests)


async def test_a_batch_of_alerts_is_stored_and_delivered_once_each_in_shared_commits(engine: AsyncEngine) -> None:
    node = Node(engine)
    await node.start()
    try:
        async with http_receiver(free_port()) as receiver:
            await node.notify.create(SubscriptionCreate(name="desk", channel=Channel.WEBHOOK, target=receiver.url))
            alerts = [make_alert() for _ in range(40)]
            for alert in alerts:
                await node.bus.publish(make_envelope(ALERT_RAISED, alert, source="test"))
            await node.bus.drain()  # every message acknowledged: its rows are committed
            assert node.notify.writer.stats.alerts == 40  # stored by the writer, not one transaction each
            await wait_for(lambda: len(receiver.requests) == 40)

            async def stamped() -> bool:
                page = await node.alerts.list(limit=100)
                return page.total == 40 and all("delivered" in a.hops for a in page.items)

            await wait_for(stamped)
        assert _ids(receiver.requests) == Counter({a.alert_id: 1 for a in alerts})
        page = await node.alerts.list(limit=100)
        for alert in page.items:
            assert {"fired", "stored", "delivered"} <= set(alert.hops)
            assert alert.hops["fired"] <= alert.hops["stored"] <= alert.hops["delivered"]
        stats = node.notify.writer.stats
        assert stats.commits < 40  # alert rows, outbox rows, marks and stamps share transactions
        # Every row went to its lane from memory (the dispatcher's claims are only its periodic look for retries).
        assert stats.handed == 40 and stats.marked_delivered == 40
        rows = await node.notify.deliveries(limit=100)
        assert Counter(r["state"] for r in rows) == Counter({"delivered": 40})
    finally:
        await node.stop()


async def test_a_crash_between_commit_and_send_delivers_each_alert_once_after_restart(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are committed leased to the node that wrote them; it dies before sending. The next node delivers them once
    their lease has run out, once each, even though the bus redelivers the unacknowledged messages to it."""
    monkeypatch.setattr(outbox_module, "_LEASE_MARGIN_S", 0.3)
    short = {"attempt_timeout_s": 0.2, "attempt_timeout_max_s": 0.2, "lane_batch": 2}  # lease: 2 x 0.2 + 0.3 s
    alerts = [make_alert() for _ in range(10)]
    envelopes: list[Envelope] = [make_envelope(ALERT_RAISED, a, source="test") for a in alerts]
    async with http_receiver(free_port()) as receiver:
        first = Node(engine, **short)
        await first.start()
        await first.notify.create(SubscriptionCreate(name="desk", channel=Channel.WEBHOOK, target=receiver.url))
        lost: list[dict[str, Any]] = []
        # The process dies right after the commit: nothing it committed is sent, and it hands no lease back.
        monkeypatch.setattr(first.notify.dispatcher, "hand", lost.extend)
        for env in envelopes:
            await first.bus.publish(env)
        await first.bus.drain()
        await first.stop()
        assert len(lost) == 10
        assert receiver.requests == []

        second = Node(engine, **short)
        await second.start()
        try:
            for env in envelopes:  # the bus redelivers what the dead node had not acknowledged
                await second.bus.publish(env)
            await second.bus.drain()
            await wait_for(lambda: len(receiver.requests) >= 10)

            async def stamped() -> bool:
                page = await second.alerts.list(limit=100)
                return page.total == 10 and all("delivered" in a.hops for a in page.items)

            await wait_for(stamped)
            assert _ids(receiver.requests) == Counter({a.alert_id: 1 for a in alerts})
            rows = await second.notify.deliveries(limit=100)
            assert Counter(r["state"] for r in rows) == Counter({"delivered": 10})
        finally:
            await second.stop()


async def test_a_task_message_is_delivered_and_marked_without_an_alert_stamp(engine: AsyncEngine) -> None:
    """Task messages share the outbox (their alert column names the incident): marked delivered in the group commit,
    no `delivered` stamp looked for on an alert that does not exist."""
    from datetime import timedelta

    from safecity.kernel import clock, ids
    from safecity.warning.notify.tasks import TaskMessage

    node = Node(engine)
    await node.start()
    try:
        async with http_receiver(free_port()) as receiver:
            sub, _ = await node.notify.create(
                SubscriptionCreate(name="responder", channel=Channel.WEBHOOK, target=receiver.url)
            )
            task = TaskMessage(
                id=ids.new_id(),
                subscription_id=sub.id,
                incident_id="inc-1",
                responder_id="r-1",
                incident_type="fire",
                priority=1,
                summary="smoke",
                address=None,
                lon=None,
                lat=None,
                link="https://example.invalid/task",
                actions=("accept",),
                expires_at=clock.now() + timedelta(hours=1),
                sent_by="test",
            )
            await node.notify.send_task(task)
            await wait_for(lambda: len(receiver.requests) == 1)
            await wait_for(lambda: node.notify.writer.stats.marked_delivered == 1)
        assert node.notify.writer.stats.stamped == 0
        assert node.notify.writer.stats.stamps_dropped == 0
        rows = await node.notify.deliveries(limit=10)
        assert [r["state"] for r in rows] == ["delivered"]
    finally:
        await node.stop()


async def test_rows_past_the_in_memory_bound_wait_in_the_table_and_are_delivered_once(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow endpoint in a storm: at most `HANDED_MAX` rows wait in memory; the others are written due at once and
    claimed from the table. Every alert is still delivered once."""
    monkeypatch.setattr(outbox_module, "HANDED_MAX", 3)
    node = Node(engine)
    await node.start()
    try:
        async with http_receiver(free_port(), delay_s=0.05) as receiver:
            await node.notify.create(SubscriptionCreate(name="slow", channel=Channel.WEBHOOK, target=receiver.url))
            alerts = [make_alert() for _ in range(30)]
            for alert in alerts:
                await node.bus.publish(make_envelope(ALERT_RAISED, alert, source="test"))
            await node.bus.drain()
            await wait_for(lambda: len(receiver.requests) >= 30)
            await wait_for(lambda: node.notify.dispatcher.stats.delivered == 30)
        assert _ids(receiver.requests) == Counter({a.alert_id: 1 for a in alerts})
        assert node.notify.writer.stats.handed < 30  # the rest went through the table
    finally:
        await node.stop()
