"""A sequence-numbered, resumable live feed of bus messages for browsers (the command centre's live channel).

Every matching bus message gets the next sequence number and is kept in a ring of the latest `capacity` messages.
A client connects with the last sequence number it saw (and the feed's epoch): it first receives everything it
missed, then live messages, with no gap and no duplicate. When the messages it missed are no longer in the ring, or
the feed restarted (another epoch), the client is told to resync: reload its state over HTTP, then go on live.

    feed = LiveFeed(bus, ("incident.>", "responder.>", "alert.>"))
    await feed.start()
    client = feed.connect(after=last_seq, epoch=epoch)   # client.hello, then client.queue
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from safecity.kernel.bus import Bus, Subscription
from safecity.kernel.envelope import Envelope

log = structlog.get_logger(__name__)

DEFAULT_SUBJECTS = ("incident.>", "responder.>", "alert.>", "device.>")
CLIENT_QUEUE = 5_000  # messages a slow browser may lag behind before it is dropped (it reconnects and resumes)


@dataclass(slots=True)
class LiveClient:
    """One connected browser: what it is told first (`hello`), then its queue of messages."""

    id: int
    hello: dict[str, Any]
    queue: asyncio.Queue[dict[str, Any]]
    # Set when the feed dropped this client (its queue overflowed): the socket closes and the client resumes.
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


class LiveFeed:
    """Bus messages numbered 1, 2, … per epoch, a ring of the latest, and the clients following them."""

    def __init__(self, bus: Bus, subjects: Iterable[str] = DEFAULT_SUBJECTS, *, capacity: int = 50_000) -> None:
        self.bus = bus
        self.subjects = tuple(subjects)
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        self.ring: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.clients: dict[int, LiveClient] = {}
        self._next_client = 0
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe to the bus (not durable: a browser feed starts from now)."""
        for subject in self.subjects:
            self._subs.append(await self.bus.subscribe(subject, self.handle, queue_size=20_000))

    async def stop(self) -> None:
        """Unsubscribe (all at once: a JetStream worker waits up to its pull's expiry, 2 s) and drop every client."""
        subs, self._subs = self._subs, []
        failures = [r for r in await asyncio.gather(*(s.stop() for s in subs), return_exceptions=True) if r is not None]
        for client in list(self.clients.values()):
            self._drop(client)
        if failures:
            raise failures[0]

    async def handle(self, envelope: Envelope) -> None:
        """Number one bus message, keep it, and hand it to every client."""
        self.publish(envelope.key, msgspec.to_builtins(envelope.payload), envelope.occurred_at.isoformat())

    def publish(self, key: str, data: Any, at: str) -> dict[str, Any]:
        """Number and fan out one message (what `handle` does; also for messages that do not come from the bus)."""
        self.seq += 1
        message = {"type": "event", "seq": self.seq, "key": key, "at": at, "data": data}
        self.ring.append(message)
        for client in list(self.clients.values()):
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                log.warning("live_client_dropped", client=client.id, seq=self.seq)
                self._drop(client)
        return message

    def connect(self, *, after: int | None = None, epoch: str | None = None) -> LiveClient:
        """A new client: resumed after `after` when this epoch still holds every message since, else told to
        resync (reload its state, then follow from the current sequence number)."""
        self._next_client += 1
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=CLIENT_QUEUE + len(self.ring))
        oldest = self.ring[0]["seq"] if self.ring else self.seq + 1
        resumable = after is not None and epoch == self.epoch and 0 <= after <= self.seq and after + 1 >= oldest
        if resumable:
            assert after is not None
            for message in self.ring:
                if message["seq"] > after:
                    queue.put_nowait(message)
        hello = {"type": "hello", "epoch": self.epoch, "seq": self.seq, "resync": not resumable}
        client = LiveClient(id=self._next_client, hello=hello, queue=queue)
        self.clients[client.id] = client
        return client

    def disconnect(self, client: LiveClient) -> None:
        """Forget a client that left."""
        self.clients.pop(client.id, None)

    def _drop(self, client: LiveClient) -> None:
        self.clients.pop(client.id, None)
        client.dropped.set()
