"""Subscriptions changed while the delivery service reloads them, and subscriptions another node created, on real
SQLite and PostgreSQL with a loopback webhook receiver."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from safecity.kernel import clock
from safecity.kernel.bus import MemoryBus
from safecity.store.engine import create_engine, upgrade
from safecity.warning.model import Severity
from safecity.warning.notify.repo import OutboxRepo, SubscriptionRepo
from safecity.warning.notify.service import NotifyConfig, NotifyService
from safecity.warning.notify.subscriptions import (
    Channel,
    Subscription,
    SubscriptionCreate,
    SubscriptionFilter,
    SubscriptionPatch,
)
from tests.integration.warning.notify_helpers import free_port, http_receiver, make_alert, raise_alert, wait_for

FAST = {"allow_loopback": True, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "poll_interval_s": 0.1}


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[dict[str, Any]]:
    """A migrated database, its engine, a bus and a started notify service."""
    await upgrade(db_url)
    engine = create_engine(db_url)
    bus = MemoryBus()
    await bus.start()
    svc = NotifyService(engine, bus, NotifyConfig(**FAST))
    await svc.start()
    yield {"engine": engine, "bus": bus, "svc": svc}
    await svc.stop()
    await bus.close()
    await engine.dispose()


def _by_subscription(requests: list[tuple[dict[str, str], bytes]]) -> Counter[str]:
    return Counter(str(orjson.loads(body)["subscription_id"]) for _headers, body in requests)


async def test_subscriptions_changed_during_a_reload_are_kept(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc: NotifyService = env["svc"]
    reading = asyncio.Event()
    release = asyncio.Event()
    read_all = SubscriptionRepo.all

    async def slow_all(repo: SubscriptionRepo) -> list[Subscription]:
        # The reload has its snapshot; hold it there while the API changes subscriptions.
        subs = await read_all(repo)
        reading.set()
        await release.wait()
        return subs

    async with http_receiver(free_port()) as receiver:

        async def webhook(name: str) -> str:
            sub, _ = await svc.create(SubscriptionCreate(name=name, channel=Channel.WEBHOOK, target=receiver.url))
            return sub.id

        witness = await webhook("before the reload")
        narrowed = await webhook("narrowed during the reload")
        deleted = await webhook("deleted during the reload")
        monkeypatch.setattr(SubscriptionRepo, "all", slow_all)
        reload = asyncio.create_task(svc.reload())
        await reading.wait()
        created = await webhook("created during the reload")
        await svc.update(narrowed, SubscriptionPatch(filter=SubscriptionFilter(min_severity=Severity.EXTREME)))
        await svc.delete(deleted)
        release.set()
        await reload

        assert {s.id for s in svc.subscriptions()} == {witness, narrowed, created}
        assert svc.get(narrowed).filter.min_severity == Severity.EXTREME
        alerts = [make_alert(severity=Severity.SEVERE) for _ in range(10)]
        for alert in alerts:
            await raise_alert(env["bus"], alert)
        # The witness's rows are committed with the others of the same alert: once it has all ten, every row exists.
        await wait_for(lambda: _by_subscription(receiver.requests)[witness] == 10)
        created_rows = await svc.deliveries(subscription_id=created)
        assert sorted(r["alert_id"] for r in created_rows) == sorted(a.alert_id for a in alerts)
        await wait_for(lambda: _by_subscription(receiver.requests)[created] == 10)
        got = _by_subscription(receiver.requests)
        assert got[narrowed] == 0  # the narrowed filter held: severe alerts are below its minimum
        assert got[deleted] == 0
        assert await svc.deliveries(subscription_id=deleted) == []


async def test_rows_of_a_subscription_created_on_another_node_are_delivered(env: dict[str, Any]) -> None:
    svc: NotifyService = env["svc"]
    # Another node on the same database (its own bus, not started: it only serves the API here).
    other = NotifyService(env["engine"], MemoryBus(), NotifyConfig(**FAST))
    async with http_receiver(free_port()) as receiver:
        made = SubscriptionCreate(name="made elsewhere", channel=Channel.WEBHOOK, target=receiver.url)
        sub, _ = await other.create(made)
        # The other node matched an alert to it and wrote the row; this node's dispatcher claims it before any reload.
        alert = make_alert()
        now = clock.now()
        row = NotifyService._row(alert.alert_id, sub.id, "alert.raised", alert.alert_id, {"alert": {}}, now, now)
        async with env["engine"].begin() as conn:
            await OutboxRepo(conn).enqueue([row])
        svc.dispatcher.wake()
        await wait_for(lambda: len(receiver.requests) == 1)
        await wait_for(lambda: svc.dispatcher.stats.delivered == 1)
        [stored] = await svc.deliveries(subscription_id=sub.id)
        assert stored["state"] == "delivered"
        # This node knows the subscription now: its own alerts reach it too, without waiting for a reload.
        assert svc.get(sub.id).id == sub.id
        await raise_alert(env["bus"], make_alert())
        await wait_for(lambda: len(receiver.requests) == 2)
    await other.webhooks.close()
    await other.mqtt.close()
