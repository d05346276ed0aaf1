"""One contract, two buses: the in-process MemoryBus and the NATS JetStream bus behave the same to their callers.

Each NATS test gets its own stream and subject namespace on the shared server. "Nothing else arrived" is shown with
a barrier: after the messages under test, one more message the subscription matches is published; delivery per
subscription is in publish order on both buses, so once the barrier is in, everything before it has been handled.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.msg import Msg

from safecity.kernel.bus import MemoryBus
from safecity.kernel.bus_nats import NatsBus, NatsSubscription
from safecity.kernel.envelope import Context, Envelope, make_envelope
from safecity.kernel.errors import ServiceUnavailable
from safecity.sensing.model import DEVICE_OFFLINE, DeviceKind, DeviceOffline, EventKind, SensorEvent, Tags

WAIT_S = 15.0  # a deadline so a broken bus fails the test instead of hanging; never a timing assertion

AnyBus = MemoryBus | NatsBus
BusFactory = Callable[..., Awaitable[AnyBus]]


def event(key: str = "event.smoke", n: int = 0, **kw: Any) -> Envelope:
    """A sensed event envelope whose payload carries a sequence number in `value`."""
    payload = SensorEvent(
        device_id=f"dev-{n}",
        kind=EventKind.SMOKE,
        tags=Tags(town="anting", community="c-1", building=None, device_kind="smoke"),
        value=float(n),
        **kw,
    )
    return make_envelope(key, payload, source="contract-test")


async def drop_stream(bus: NatsBus) -> None:
    """Delete a closed bus's stream through a fresh connection (tests leave nothing on the shared server)."""
    cleaner = NatsBus(bus.url, stream=bus.stream, subject_prefix=bus.subject_prefix)
    await cleaner.start()
    await cleaner.delete_stream()
    await cleaner.close()


@dataclass
class Collector:
    """Records envelopes a handler receives and lets a test wait for a condition on them."""

    got: list[Envelope] = field(default_factory=list)
    delay: float = 0.0
    fail_on: set[float] = field(default_factory=set)
    gate: asyncio.Event | None = None
    calls: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, envelope: Envelope) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        else:
            await asyncio.sleep(0)  # yield, so competing workers interleave as real handlers do
        if getattr(envelope.payload, "value", None) in self.fail_on:
            self.changed.set()
            raise RuntimeError("handler failed on purpose")
        self.got.append(envelope)
        self.changed.set()

    def values(self) -> list[float]:
        return [e.payload.value for e in self.got if e.key != "event.barrier"]

    def ids(self) -> list[str]:
        return [e.id for e in self.got]

    async def wait(self, predicate: Callable[[Collector], bool]) -> None:
        async def loop() -> None:
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), WAIT_S)

    async def wait_count(self, n: int) -> None:
        await self.wait(lambda c: len(c.got) >= n)

    async def wait_key(self, key: str) -> None:
        await self.wait(lambda c: any(e.key == key for e in c.got))


@pytest.fixture(params=["memory", "nats"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    """A factory of started buses of one kind (NATS: own stream and subject namespace); all closed afterwards."""
    made: list[AnyBus] = []
    kind = request.param

    async def factory(**kw: Any) -> AnyBus:
        bus: AnyBus
        if kind == "memory":
            bus = MemoryBus(block_timeout=kw.pop("block_timeout", 2.0), on_overflow=kw.pop("on_dead_letter", None))
        else:
            url = request.getfixturevalue("nats_url")
            token = request.getfixturevalue("unique_name")
            kw.pop("block_timeout", None)
            defaults: dict[str, Any] = {
                "stream": f"T{token}{len(made)}",
                "subject_prefix": f"t{token}{len(made)}",
                "redelivery_delay_s": 0.05,
                "max_deliver": 3,
                "pull_expires_s": 0.5,  # short pulls: stop() waits for the open one to end
            }
            bus = NatsBus(url, **{**defaults, **kw})
        await bus.start()
        made.append(bus)
        return bus

    yield factory
    for bus in made:
        await bus.close()
        if isinstance(bus, NatsBus):
            await drop_stream(bus)


async def test_publish_receive_payload_types_intact(make_bus: BusFactory) -> None:
    bus = await make_bus()
    got = Collector()
    await bus.subscribe("event.>", got)
    await bus.subscribe("device.>", got)
    sensed = event(
        "event.smoke",
        7,
        lon=121.25,
        lat=31.38,
        state="alarm",
        data={"ppm": 12.5, "ok": True, "list": [1, "a", None], "nested": {"k": 1}},
        pseudonyms={"plate": "ab" * 32},
        message_id="m-1",
    )
    sensed.stamp("tagged", datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    offline = make_envelope(
        DEVICE_OFFLINE,
        DeviceOffline(
            device_id="door-9",
            kind=DeviceKind.DOOR,
            tags=Tags(town="anting"),
            last_seen=None,
            deadline=datetime(2025, 1, 2, 3, 0, tzinfo=UTC),
        ),
        source="health",
        tier="community",
        context=Context(correlation_id="corr-1", actor="op-7", parent_id="p-1"),
    )
    assert await bus.publish(sensed)
    assert await bus.publish(offline)
    await got.wait_count(2)

    by_key = {e.key: e for e in got.got}
    assert by_key["event.smoke"] == sensed
    assert by_key["device.offline"] == offline
    smoke = by_key["event.smoke"].payload
    assert isinstance(smoke, SensorEvent)
    assert smoke.kind is EventKind.SMOKE
    assert smoke.data["nested"] == {"k": 1}
    assert isinstance(by_key["device.offline"].payload, DeviceOffline)
    assert by_key["device.offline"].payload.deadline.tzinfo is not None
    assert by_key["device.offline"].context.actor == "op-7"
    assert by_key["event.smoke"].hops["tagged"] == datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert bus.stats.published == 2


async def test_wildcards_star_and_tail(make_bus: BusFactory) -> None:
    bus = await make_bus()
    star, tail, exact = Collector(), Collector(), Collector()
    await bus.subscribe("event.*", star)
    await bus.subscribe("event.>", tail)
    await bus.subscribe("event.door", exact)
    await bus.publish(event("event.smoke", 1))
    await bus.publish(event("event.smoke.extra", 2))
    await bus.publish(event("event.door", 3))
    await bus.publish(event("event.door", 5))
    await bus.publish(event("event.barrier", 99))
    await star.wait_key("event.barrier")
    await tail.wait_key("event.barrier")
    await exact.wait(lambda c: 5.0 in c.values())

    assert star.values() == [1.0, 3.0, 5.0]
    assert tail.values() == [1.0, 2.0, 3.0, 5.0]
    assert exact.values() == [3.0, 5.0]  # nothing matching it was published after 5
    assert [e.key for e in tail.got] == [
        "event.smoke",
        "event.smoke.extra",
        "event.door",
        "event.door",
        "event.barrier",
    ]


async def test_fan_out_to_every_subscriber(make_bus: BusFactory) -> None:
    bus = await make_bus()
    a, b = Collector(), Collector()
    await bus.subscribe("event.>", a)
    await bus.subscribe("event.smoke", b)
    sent = [event("event.smoke", i) for i in range(20)]
    for env in sent:
        await bus.publish(env)
    await a.wait_count(20)
    await b.wait_count(20)
    assert a.ids() == [e.id for e in sent]
    assert b.ids() == [e.id for e in sent]


async def test_competing_consumers_share_the_work(make_bus: BusFactory) -> None:
    bus = await make_bus(fetch_batch=5)
    a = Collector(delay=0.001)
    b = Collector(delay=0.001, changed=a.changed)  # one event wakes a wait on either
    await bus.subscribe("event.>", a, durable="workers")
    await bus.subscribe("event.>", b, durable="workers")
    sent = [event("event.smoke", i) for i in range(200)]
    assert await bus.publish_many(sent) == 200
    await a.wait(lambda _: len(a.got) + len(b.got) >= 200)

    assert a.got and b.got, "both workers get a share"
    assert sorted(a.ids() + b.ids()) == sorted(e.id for e in sent), "together exactly all, none twice"


async def test_competing_durable_must_keep_its_pattern(make_bus: BusFactory) -> None:
    bus = await make_bus()
    await bus.subscribe("event.>", Collector(), durable="bound")
    with pytest.raises(ValueError, match="bound"):
        await bus.subscribe("device.>", Collector(), durable="bound")


async def test_duplicate_id_delivered_once(make_bus: BusFactory) -> None:
    bus = await make_bus()
    got = Collector()
    await bus.subscribe("event.>", got)
    first = event("event.smoke", 1)
    again = event("event.smoke", 2)
    again.id = first.id  # same id, even with a different body: the id decides
    assert await bus.publish(first) is True
    assert await bus.publish(first) is False
    assert await bus.publish(again) is False
    assert await bus.publish_many([first, event("event.smoke", 3)]) == 1
    await bus.publish(event("event.barrier", 99))
    await got.wait_key("event.barrier")

    assert got.values() == [1.0, 3.0]
    assert bus.stats.duplicates == 3
    assert bus.stats.published == 3


async def test_failing_handler_blocks_neither_later_messages_nor_others(make_bus: BusFactory) -> None:
    bus = await make_bus()
    flaky, healthy = Collector(fail_on={3.0}), Collector()
    await bus.subscribe("event.>", flaky)
    await bus.subscribe("event.>", healthy)
    for i in range(10):
        await bus.publish(event("event.smoke", i))
    await bus.publish(event("event.barrier", 99))
    await flaky.wait_key("event.barrier")
    await healthy.wait_key("event.barrier")

    assert flaky.values() == [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert healthy.values() == [float(i) for i in range(10)]
    assert bus.stats.handler_errors >= 1


async def test_slow_subscriber_does_not_stall_a_fast_one(make_bus: BusFactory) -> None:
    bus = await make_bus(block_timeout=0.01)
    gate = asyncio.Event()
    slow, fast = Collector(gate=gate), Collector()
    await bus.subscribe("event.>", slow, queue_size=2)
    await bus.subscribe("event.>", fast)
    sent = [event("event.smoke", i) for i in range(30)]
    for env in sent:
        await bus.publish(env)
    await fast.wait_count(30)
    assert fast.ids() == [e.id for e in sent]
    assert slow.got == []

    gate.set()
    # The in-process bus hands what a full queue could not take to on_overflow (a dead letter); JetStream keeps it.
    await slow.wait(lambda c: len(c.got) + bus.stats.overflowed >= 30)
    assert len(slow.got) + bus.stats.overflowed == 30
    assert set(slow.ids()) <= {e.id for e in sent}
    if isinstance(bus, NatsBus):
        assert slow.ids() == [e.id for e in sent]


async def test_lag_reports_each_subscription(make_bus: BusFactory) -> None:
    bus = await make_bus()
    gate = asyncio.Event()
    stuck = Collector(gate=gate)
    sub = await bus.subscribe("event.>", stuck, durable="laggard", queue_size=10)
    for i in range(8):  # fewer than queue_size: the in-process bus keeps them all queued
        await bus.publish(event("event.smoke", i))
    await stuck.wait(lambda c: c.calls >= 1)
    if isinstance(bus, NatsBus):
        await bus.refresh_lag()
    lag = bus.lag()
    assert set(lag) == {"laggard"}
    assert lag["laggard"] > 0
    assert sub.pending() == lag["laggard"]
    gate.set()
    await stuck.wait_count(8)
    assert stuck.values() == [float(i) for i in range(8)]


async def test_publish_many_matches_publish(make_bus: BusFactory) -> None:
    bus = await make_bus()
    got = Collector()
    await bus.subscribe("event.>", got)
    sent = [event("event.smoke", i) for i in range(500)]
    assert await bus.publish_many(sent) == 500
    assert await bus.publish_many(sent[:100]) == 0
    await got.wait_count(500)
    assert sorted(got.ids()) == sorted(e.id for e in sent)
    assert bus.stats.published == 500
    assert bus.stats.duplicates == 100


# --- NATS only --------------------------------------------------------------------------------------------------


@pytest.fixture
async def nats_bus(nats_url: str, unique_name: str) -> AsyncIterator[NatsBus]:
    """A NatsBus on its own stream and subject namespace."""
    bus = NatsBus(
        nats_url,
        stream=f"T{unique_name}",
        subject_prefix=f"t{unique_name}",
        redelivery_delay_s=0.05,
        max_deliver=3,
        pull_expires_s=0.5,
    )
    await bus.start()
    yield bus
    await bus.close()
    await drop_stream(bus)


async def test_nats_durable_resumes_after_stop(nats_bus: NatsBus) -> None:
    first = Collector()
    sub = await nats_bus.subscribe("event.>", first, durable="resumer")
    before = [event("event.smoke", i) for i in range(10)]
    for env in before:
        await nats_bus.publish(env)
    await first.wait_count(10)
    await sub.stop()

    missed = [event("event.smoke", 100 + i) for i in range(15)]
    await nats_bus.publish_many(missed)
    second = Collector()
    await nats_bus.subscribe("event.>", second, durable="resumer")
    await nats_bus.publish(event("event.barrier", 999))
    await second.wait_key("event.barrier")

    assert first.ids() == [e.id for e in before]
    assert second.ids()[:-1] == [e.id for e in missed]


async def test_nats_durable_resume_after_stop_mid_handler(nats_bus: NatsBus) -> None:
    gate = asyncio.Event()
    first = Collector(gate=gate)
    sub = await nats_bus.subscribe("event.>", first, durable="interrupted")
    sent = [event("event.smoke", i) for i in range(5)]
    for env in sent:
        await nats_bus.publish(env)
    await first.wait(lambda c: c.calls >= 1)
    await sub.stop()  # cancels the handler mid-message: nothing was acked

    second = Collector()
    await nats_bus.subscribe("event.>", second, durable="interrupted")
    await second.wait_count(5)
    assert first.got == []
    # Handed-back messages come again, though not necessarily in their first order.
    assert sorted(second.ids()) == sorted(e.id for e in sent)


async def test_nats_worker_stops_when_cancelled_as_a_message_lands(nats_bus: NatsBus) -> None:
    """A worker cancelled in the tick its inbox is filled still stops (asyncio.wait_for on 3.11 swallowed that
    cancellation, cpython#86296: the worker ran on and the runtime's stop hung, once in 15-30 stops)."""
    nc = nats_bus._conn()
    for ticks in range(8):
        sub = await nats_bus.subscribe("event.>", Collector())
        assert isinstance(sub, NatsSubscription)
        task = sub._task
        assert task is not None
        await asyncio.sleep(0.05)  # the worker waits on its inbox
        # A status message (an idle heartbeat): handled without a handler or a new pull request.
        sub._inbox.put_nowait(Msg(nc, subject="_INBOX.x", headers={"Status": "100"}))
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3)
        assert task in done, f"the worker ran on after its cancellation ({ticks} ticks after the message)"
        sub._task = None
        await sub.stop()


async def test_nats_poison_message_is_given_up_after_max_deliver(nats_url: str, unique_name: str) -> None:
    given_up: list[tuple[str, Envelope]] = []
    bus = NatsBus(
        nats_url,
        stream=f"T{unique_name}",
        subject_prefix=f"t{unique_name}",
        redelivery_delay_s=0.02,
        max_deliver=3,
        pull_expires_s=0.5,
        on_dead_letter=lambda name, env: given_up.append((name, env)),
    )
    await bus.start()
    try:
        poison = Collector(fail_on={1.0})
        await bus.subscribe("event.>", poison, durable="poisoned")
        await bus.publish(event("event.smoke", 1))
        await bus.publish(event("event.smoke", 2))
        await poison.wait(lambda _: bool(given_up))
        assert poison.calls == 4  # three tries of the poison message, one of the good one
        assert bus.stats.handler_errors == 3
        assert [env.payload.value for _, env in given_up] == [1.0]
        # Terminated: nothing left to redeliver. The TERM is a message of its own, which the server may not have
        # applied yet when the dead-letter hook runs; without it the message stays pending for ack_wait (30 s).
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while (info := await bus.consumer_info("poisoned")).num_ack_pending and (  # noqa: ASYNC110 (server state)
            asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.02)
        assert info.num_ack_pending == 0
        assert poison.values() == [2.0]
    finally:
        await bus.close()
        await drop_stream(bus)


async def test_nats_buses_on_one_server_are_isolated(nats_url: str, unique_name: str) -> None:
    buses = [
        NatsBus(nats_url, stream=f"T{unique_name}{i}", subject_prefix=f"t{unique_name}{i}", pull_expires_s=0.5)
        for i in range(2)
    ]
    for bus in buses:
        await bus.start()
    try:
        got = [Collector(), Collector()]
        for bus, c in zip(buses, got, strict=True):
            await bus.subscribe("event.>", c)
        await buses[0].publish(event("event.smoke", 1))
        await buses[1].publish(event("event.smoke", 2))
        await buses[0].publish(event("event.barrier", 99))
        await buses[1].publish(event("event.barrier", 99))
        for c in got:
            await c.wait_key("event.barrier")
        assert got[0].values() == [1.0]
        assert got[1].values() == [2.0]
        assert got[0].got[0].key == "event.smoke"  # the namespace never leaks into the envelope
    finally:
        for bus in buses:
            await bus.close()
            await drop_stream(bus)


async def test_nats_restart_keeps_stream_and_health(nats_bus: NatsBus) -> None:
    assert await nats_bus.healthy()
    again = NatsBus(nats_bus.url, stream=nats_bus.stream, subject_prefix=nats_bus.subject_prefix, pull_expires_s=0.5)
    await again.start()  # the stream exists: updated in place, messages kept
    try:
        await nats_bus.publish(event("event.smoke", 1))
        got = Collector()
        await again.subscribe("event.>", got)
        await nats_bus.publish(event("event.smoke", 2))
        await got.wait_count(1)
        assert got.values() == [2.0]  # a new subscription starts at new messages, like the in-process bus
    finally:
        await again.close()
    assert not await again.healthy()


def test_nats_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="stream"):
        NatsBus(stream="a.b")
    with pytest.raises(ValueError, match="prefix"):
        NatsBus(subject_prefix="a.*")


async def test_nats_unreachable_server_is_service_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bus = NatsBus(f"nats://127.0.0.1:{port}", connect_timeout_s=0.5)
    with pytest.raises(ServiceUnavailable) as caught:
        await bus.start()
    assert caught.value.code == "service.unavailable"
    assert not await bus.healthy()


async def test_nats_durable_names_must_be_valid(nats_bus: NatsBus) -> None:
    with pytest.raises(ValueError, match="durable"):
        await nats_bus.subscribe("event.>", Collector(), durable="store.writer")


async def test_nats_publish_outside_the_stream_subjects_is_refused(nats_bus: NatsBus) -> None:
    stray = make_envelope("event.smoke", event().payload, source="t")
    stray.key = "nowhere.smoke"  # no stream subject covers it: nothing would store it
    with pytest.raises(ServiceUnavailable):
        await nats_bus.publish(stray)
    with pytest.raises(ServiceUnavailable, match="rejected"):
        await nats_bus.publish_many([event("event.smoke", 1), stray])
    assert nats_bus.stats.published == 1  # the good one of the batch was stored and counted
