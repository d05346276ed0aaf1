"""The bus protocol, subject matching, and the in-process implementation.

Subjects follow NATS rules: tokens separated by '.', '*' matches one token, '>' matches one or more trailing tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, runtime_checkable

import structlog

from safecity.kernel.envelope import Envelope

log = structlog.get_logger(__name__)

# A handler may return a future instead of None: the message then counts as handled (acknowledged, drained) only once
# that future is done, while the subscription goes on to its next message. This is how a consumer that writes in
# group commits (the alert path) acknowledges each message after the commit that made it durable, without waiting
# for that commit before reading the next message. A future that ends in an exception counts as a failed handler.
Handler = Callable[[Envelope], Awaitable["asyncio.Future[Any] | None"]]


def subject_matches(pattern: str, subject: str) -> bool:
    """Return whether a NATS-style pattern matches a subject."""
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        if token not in ("*", s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


@dataclass
class BusStats:
    """Counters every bus keeps; exported as Prometheus metrics."""

    published: int = 0
    duplicates: int = 0
    delivered: int = 0
    handler_errors: int = 0
    overflowed: int = 0
    lag: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Subscription(Protocol):
    """A live subscription; `stop()` ends it (durable state, where the bus has it, is kept)."""

    name: str

    async def stop(self) -> None:
        """Stop delivering to this subscription."""
        ...

    def pending(self) -> int:
        """Messages waiting for this subscription's handler."""
        ...


class Bus(Protocol):
    """What every bus offers: publish envelopes, subscribe handlers to subject patterns, report and drain backlog."""

    stats: BusStats
    # True when published messages live only in this process until handled (the in-process bus): then a publish is
    # not the durable step, and what is queued must be drained before stopping. False for JetStream, which holds a
    # message once it acknowledges the publish and redelivers what was not acknowledged.
    holds_in_memory: bool

    async def start(self) -> None:
        """Connect and prepare (streams, consumers)."""
        ...

    async def close(self) -> None:
        """Stop every subscription and disconnect."""
        ...

    async def publish(self, envelope: Envelope) -> bool:
        """Publish one envelope; return False when its id was already published (deduplicated)."""
        ...

    async def publish_many(self, envelopes: Iterable[Envelope]) -> int:
        """Publish many envelopes (store-and-forward catch-up); return how many were new."""
        ...

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        durable: str | None = None,
        queue_size: int = 10_000,
    ) -> Subscription:
        """Deliver matching envelopes to `handler`. Subscriptions with the same durable name share the work."""
        ...

    async def healthy(self) -> bool:
        """Return whether the bus is connected and usable."""
        ...

    async def drain(self) -> None:
        """Wait until every message this process holds only in memory has been handled (before stopping)."""
        ...

    def lag(self) -> dict[str, int]:
        """Messages waiting per subscription."""
        ...


OverflowHook = Callable[[str, Envelope], None]


class _MemorySubscription:
    """One subscriber: a bounded queue drained by its own worker tasks."""

    def __init__(self, bus: MemoryBus, pattern: str, name: str, queue_size: int) -> None:
        self.bus = bus
        self.pattern = pattern
        self.name = name
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=queue_size)
        self.handlers: list[Handler] = []
        self.tasks: list[asyncio.Task[None]] = []

    def add_worker(self, handler: Handler) -> None:
        self.handlers.append(handler)
        self.tasks.append(asyncio.create_task(self._run(handler), name=f"bus-sub-{self.name}"))

    async def _run(self, handler: Handler) -> None:
        stats = self.bus.stats
        while True:
            envelope = await self.queue.get()
            settle: asyncio.Future[Any] | None = None
            try:
                settle = await handler(envelope)
                if settle is None or settle.done():
                    self._settled(envelope, settle)
                    settle = None
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failing subscriber never kills the bus or other subscribers: count, log, go on.
                stats.handler_errors += 1
                log.exception("bus_handler_failed", subscription=self.name, key=envelope.key, id=envelope.id)
            finally:
                if settle is None:
                    self.queue.task_done()
                else:
                    # Handled once the handler's future is done (e.g. its group commit): `drain` waits for it too.
                    settle.add_done_callback(partial(self._deferred, envelope))

    def _settled(self, envelope: Envelope, settle: asyncio.Future[Any] | None) -> None:
        """Count a handled message; a settle future that failed counts as a failed handler."""
        stats = self.bus.stats
        if settle is not None and (settle.cancelled() or settle.exception() is not None):
            stats.handler_errors += 1
            log.error(
                "bus_handler_failed",
                subscription=self.name,
                key=envelope.key,
                id=envelope.id,
                error=repr(None if settle.cancelled() else settle.exception()),
            )
            return
        stats.delivered += 1

    def _deferred(self, envelope: Envelope, settle: asyncio.Future[Any]) -> None:
        try:
            self._settled(envelope, settle)
        finally:
            self.queue.task_done()

    def pending(self) -> int:
        return self.queue.qsize()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        self.bus._remove(self)


class MemoryBus:
    """In-process bus: fan-out to bounded per-subscriber queues, with back-pressure and isolation.

    A full subscriber queue makes the publisher wait (back-pressure) for at most `block_timeout` seconds; past that
    the message is handed to `on_overflow` for that subscriber only (the app records it as a dead letter), so one
    stuck subscriber cannot stall the others forever. Ids published in the recent past are deduplicated, like
    JetStream's `Nats-Msg-Id` window.
    """

    holds_in_memory = True

    def __init__(
        self,
        *,
        block_timeout: float = 2.0,
        dedupe_window: int = 200_000,
        on_overflow: OverflowHook | None = None,
    ) -> None:
        self.stats = BusStats()
        self.block_timeout = block_timeout
        self.on_overflow = on_overflow
        self._subs: list[_MemorySubscription] = []
        self._durables: dict[str, _MemorySubscription] = {}
        self._route_cache: dict[str, list[_MemorySubscription]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._dedupe_window = dedupe_window
        self._closed = False

    async def start(self) -> None:
        """Nothing to connect: the bus lives in this process."""
        self._closed = False

    async def close(self) -> None:
        """Stop every subscription."""
        self._closed = True
        for sub in list(self._subs):
            await sub.stop()

    async def healthy(self) -> bool:
        """The in-process bus is healthy while open."""
        return not self._closed

    def _routes(self, subject: str) -> list[_MemorySubscription]:
        routes = self._route_cache.get(subject)
        if routes is None:
            routes = [s for s in self._subs if subject_matches(s.pattern, subject)]
            self._route_cache[subject] = routes
        return routes

    def _remove(self, sub: _MemorySubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if self._durables.get(sub.name) is sub:
            del self._durables[sub.name]
        self._route_cache.clear()

    async def publish(self, envelope: Envelope) -> bool:
        """Fan an envelope out to every matching subscription."""
        if self._closed:
            raise RuntimeError("bus is closed")
        if envelope.id in self._recent:
            self.stats.duplicates += 1
            return False
        self._recent[envelope.id] = None
        if len(self._recent) > self._dedupe_window:
            self._recent.popitem(last=False)
        self.stats.published += 1
        for sub in self._routes(envelope.key):
            try:
                sub.queue.put_nowait(envelope)
            except asyncio.QueueFull:
                await self._put_waiting(sub, envelope)
        return True

    async def publish_many(self, envelopes: Iterable[Envelope]) -> int:
        """Publish envelopes in order; return how many were new (not deduplicated), like `NatsBus.publish_many`."""
        new = 0
        for envelope in envelopes:
            if await self.publish(envelope):
                new += 1
        return new

    async def _put_waiting(self, sub: _MemorySubscription, envelope: Envelope) -> None:
        try:
            async with asyncio.timeout(self.block_timeout):
                await sub.queue.put(envelope)
        except TimeoutError:
            self.stats.overflowed += 1
            log.warning("bus_subscriber_overflow", subscription=sub.name, key=envelope.key, id=envelope.id)
            if self.on_overflow is not None:
                self.on_overflow(sub.name, envelope)

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        durable: str | None = None,
        queue_size: int = 10_000,
    ) -> _MemorySubscription:
        """Subscribe a handler; a repeated durable name adds a competing worker on the same queue."""
        if durable is not None and durable in self._durables:
            sub = self._durables[durable]
            if sub.pattern != pattern:
                raise ValueError(f"durable {durable!r} is bound to {sub.pattern!r}, not {pattern!r}")
            sub.add_worker(handler)
            return sub
        name = durable or f"{pattern}#{len(self._subs)}"
        sub = _MemorySubscription(self, pattern, name, queue_size)
        sub.add_worker(handler)
        self._subs.append(sub)
        if durable is not None:
            self._durables[durable] = sub
        self._route_cache.clear()
        return sub

    async def drain(self) -> None:
        """Wait until every subscriber queue is empty and its handlers have finished."""
        for sub in list(self._subs):
            await sub.queue.join()

    def lag(self) -> dict[str, int]:
        """Pending messages per subscription."""
        return {s.name: s.pending() for s in self._subs}
