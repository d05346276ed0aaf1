"""The live feed: numbered messages, resume after a reconnect with no gap and no duplicate, resync when too old."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import pytest

from safecity.kernel import livefeed
from safecity.kernel.bus import MemoryBus
from safecity.kernel.envelope import Context, Envelope
from safecity.kernel.livefeed import LiveFeed

AT = "2026-01-01T00:00:00+00:00"


def drain(queue: asyncio.Queue[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def test_a_client_resumes_after_its_last_sequence_number() -> None:
    feed = LiveFeed(MemoryBus(), capacity=100)
    first = feed.connect()
    assert first.hello["resync"] is True  # a first connection loads its state
    for i in range(5):
        feed.publish("incident.changed", {"n": i}, AT)
    got = drain(first.queue)
    assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
    feed.disconnect(first)
    for i in range(5, 8):
        feed.publish("incident.changed", {"n": i}, AT)
    again = feed.connect(after=5, epoch=feed.epoch)
    assert again.hello == {"type": "hello", "epoch": feed.epoch, "seq": 8, "resync": False}
    assert [m["seq"] for m in drain(again.queue)] == [6, 7, 8]


def test_too_old_or_another_epoch_means_resync() -> None:
    feed = LiveFeed(MemoryBus(), capacity=3)
    for i in range(10):
        feed.publish("responder.moved", {"n": i}, AT)
    stale = feed.connect(after=2, epoch=feed.epoch)  # 3..7 fell out of the ring
    assert stale.hello["resync"] is True
    assert drain(stale.queue) == []
    other = feed.connect(after=9, epoch="0000")
    assert other.hello["resync"] is True
    ahead = feed.connect(after=99, epoch=feed.epoch)
    assert ahead.hello["resync"] is True
    edge = feed.connect(after=7, epoch=feed.epoch)  # 8, 9, 10 are all still held
    assert edge.hello["resync"] is False
    assert [m["seq"] for m in drain(edge.queue)] == [8, 9, 10]


def test_a_slow_client_is_dropped_not_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(livefeed, "CLIENT_QUEUE", 3)
    feed = LiveFeed(MemoryBus(), capacity=2)
    slow = feed.connect()
    for i in range(10):
        feed.publish("alert.raised", {"n": i}, AT)
    assert slow.dropped.is_set()
    assert slow.id not in feed.clients


class Payload(msgspec.Struct):
    incident_id: str


async def test_bus_messages_reach_the_feed() -> None:
    bus = MemoryBus()
    await bus.start()
    feed = LiveFeed(bus, ("incident.>",))
    await feed.start()
    client = feed.connect()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    envelope = Envelope(
        id="01J0000000000000000000000A",
        key="incident.changed",
        occurred_at=now,
        received_at=now,
        source="test",
        tier="district",
        context=Context(correlation_id="c"),
        payload=Payload(incident_id="X"),
    )
    await bus.publish(envelope)
    message = await asyncio.wait_for(client.queue.get(), 2)
    assert message["seq"] == 1
    assert message["key"] == "incident.changed"
    assert message["data"] == {"incident_id": "X"}
    await feed.stop()
    await bus.close()


async def test_stop_stops_its_subscriptions_at_once_and_drops_clients() -> None:
    """Each JetStream worker's stop waits for its pull request to expire: the feed's four wait together."""
    feed = LiveFeed(MemoryBus())
    await feed.start()
    client = feed.connect()
    started: list[int] = []
    release = asyncio.Event()

    class Stopping:
        def __init__(self, n: int) -> None:
            self.n = n

        async def stop(self) -> None:
            started.append(self.n)
            await release.wait()

    real = feed._subs
    feed._subs = [Stopping(n) for n in range(len(real))]
    stopping = asyncio.create_task(feed.stop())
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(started) == list(range(len(real)))  # every one under way before any has finished
    release.set()
    await stopping
    assert client.dropped.is_set()
    for sub in real:
        await sub.stop()
