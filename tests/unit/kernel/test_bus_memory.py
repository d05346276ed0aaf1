"""The in-process bus: back-pressure, overflow to a hook, dedupe window, durable workers, close; both buses' API."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from safecity.kernel.bus import Bus, MemoryBus, Subscription
from safecity.kernel.bus_nats import NatsBus
from safecity.kernel.envelope import Envelope, EventKey, Payload, make_envelope

WAIT_S = 10.0


class Ping(Payload):
    """A tiny payload."""

    n: int


PING: EventKey[Ping] = EventKey("test.membus.ping", Ping)


def ping(n: int) -> Envelope:
    return make_envelope(PING, Ping(n=n), source="unit")


@pytest.mark.parametrize("impl", [MemoryBus, NatsBus])
@pytest.mark.parametrize("member", ["start", "close", "publish", "publish_many", "subscribe", "healthy", "lag"])
def test_both_buses_offer_the_same_calls(impl: type, member: str) -> None:
    reference = getattr(Bus, member, None) or getattr(MemoryBus, member)
    ours = getattr(impl, member)
    assert list(inspect.signature(ours).parameters) == list(inspect.signature(reference).parameters)
    assert inspect.iscoroutinefunction(ours) is inspect.iscoroutinefunction(reference)
    for name, param in inspect.signature(reference).parameters.items():
        assert inspect.signature(ours).parameters[name].kind == param.kind
        assert inspect.signature(ours).parameters[name].default == param.default


async def test_overflow_goes_to_the_hook_for_that_subscriber_only() -> None:
    overflowed: list[tuple[str, int]] = []
    bus = MemoryBus(block_timeout=0.01, on_overflow=lambda name, env: overflowed.append((name, env.payload.n)))
    gate = asyncio.Event()
    fast: list[int] = []

    async def stuck(env: Envelope) -> None:
        await gate.wait()

    async def quick(env: Envelope) -> None:
        fast.append(env.payload.n)

    sub = await bus.subscribe("test.>", stuck, durable="stuck", queue_size=2)
    await bus.subscribe("test.>", quick)
    for i in range(6):
        await bus.publish(ping(i))
    gate.set()
    await asyncio.wait_for(bus.drain(), WAIT_S)
    # The stuck worker took #0 off its queue, #1 and #2 filled it; #3..#5 overflowed.
    assert overflowed == [("stuck", 3), ("stuck", 4), ("stuck", 5)]
    assert bus.stats.overflowed == 3
    assert fast == list(range(6))
    assert isinstance(sub, Subscription)
    await bus.close()


async def test_dedupe_window_forgets_the_oldest() -> None:
    bus = MemoryBus(dedupe_window=2)
    a, b, c = ping(1), ping(2), ping(3)
    assert await bus.publish(a)
    assert await bus.publish(b)
    assert not await bus.publish(a)
    assert await bus.publish(c)  # pushes `a` out of the window
    assert await bus.publish(a)
    assert bus.stats.duplicates == 1


async def test_same_durable_adds_workers_on_one_queue() -> None:
    bus = MemoryBus()
    seen: list[tuple[str, int]] = []

    def worker(tag: str):  # type: ignore[no-untyped-def]
        async def handle(env: Envelope) -> None:
            await asyncio.sleep(0)
            seen.append((tag, env.payload.n))

        return handle

    first = await bus.subscribe("test.>", worker("a"), durable="pool")
    second = await bus.subscribe("test.>", worker("b"), durable="pool")
    assert first is second
    assert await bus.publish_many([ping(i) for i in range(50)]) == 50
    await asyncio.wait_for(bus.drain(), WAIT_S)
    assert sorted(n for _, n in seen) == list(range(50))
    assert {tag for tag, _ in seen} == {"a", "b"}
    assert bus.lag() == {"pool": 0}
    with pytest.raises(ValueError, match="bound"):
        await bus.subscribe("other.>", worker("c"), durable="pool")
    await bus.close()


async def test_failing_handler_is_counted_and_the_worker_lives_on() -> None:
    bus = MemoryBus()
    got: list[int] = []

    async def handler(env: Envelope) -> None:
        if env.payload.n == 1:
            raise RuntimeError("boom")
        got.append(env.payload.n)

    await bus.subscribe("test.>", handler)
    await bus.publish_many([ping(i) for i in range(3)])
    await asyncio.wait_for(bus.drain(), WAIT_S)
    assert got == [0, 2]
    assert bus.stats.handler_errors == 1
    assert bus.stats.delivered == 2
    await bus.close()


async def test_closed_bus_refuses_publish_and_reports_unhealthy() -> None:
    bus = MemoryBus()
    await bus.start()
    assert await bus.healthy()
    await bus.subscribe("test.>", lambda env: asyncio.sleep(0))
    await bus.close()
    assert not await bus.healthy()
    assert bus.lag() == {}
    with pytest.raises(RuntimeError, match="closed"):
        await bus.publish(ping(1))
    await bus.start()
    assert await bus.publish(ping(2))


async def test_stop_removes_the_route() -> None:
    bus = MemoryBus()
    got: list[int] = []

    async def handler(env: Envelope) -> None:
        got.append(env.payload.n)

    sub = await bus.subscribe("test.membus.*", handler)
    await bus.publish(ping(1))
    await asyncio.wait_for(bus.drain(), WAIT_S)
    await sub.stop()
    await bus.publish(ping(2))
    assert got == [1]
    assert bus.lag() == {}


async def test_a_handler_returning_a_future_is_handled_once_it_is_done() -> None:
    """A handler may hand back a future (its group commit): the worker reads on meanwhile, and the message counts as
    delivered, and `drain` returns, only once that future is done; a failed future counts as a handler error."""
    bus = MemoryBus()
    commits: list[asyncio.Future[None]] = []
    seen: list[str] = []

    async def handler(env: Envelope) -> asyncio.Future[None]:
        seen.append(env.id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        commits.append(future)
        return future

    await bus.subscribe(PING.name, handler, durable="deferred")
    for n in range(3):
        await bus.publish(ping(n))
    drained = asyncio.create_task(bus.drain())
    for _ in range(50):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(seen) == 3  # not one at a time behind the first commit
    assert bus.stats.delivered == 0
    assert not drained.done()
    commits[0].set_result(None)
    commits[1].set_exception(RuntimeError("commit refused"))
    await asyncio.sleep(0.01)
    assert not drained.done()
    commits[2].set_result(None)
    await asyncio.wait_for(drained, 1)
    assert bus.stats.delivered == 2
    assert bus.stats.handler_errors == 1
    await bus.close()
