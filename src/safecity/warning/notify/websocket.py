"""Live push to connected WebSocket clients, each filtered by its own subscription filter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from safecity.kernel import ids
from safecity.warning.model import AlertRaised
from safecity.warning.notify.delivery import Delivery, DeliveryError, stamp_delivered
from safecity.warning.notify.subscriptions import Subscription, SubscriptionFilter, matches

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class LiveClient:
    """One connected client: its filter (or a stored subscription it stands for) and its bounded queue."""

    filter: SubscriptionFilter
    subscription_id: str | None = None
    actor: str = ""
    id: str = field(default_factory=ids.new_id)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    dropped: int = 0

    def offer(self, message: dict[str, Any]) -> None:
        """Queue a message; a client too slow to keep up loses its oldest message, never blocks the hub."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)


class AlertHub:
    """Fan-out to live clients; also the `websocket` channel of the outbox for stored subscriptions."""

    def __init__(self) -> None:
        self.clients: set[LiveClient] = set()

    def connect(self, flt: SubscriptionFilter, *, subscription_id: str | None = None, actor: str = "") -> LiveClient:
        """Register a client."""
        client = LiveClient(filter=flt, subscription_id=subscription_id, actor=actor)
        self.clients.add(client)
        log.info("live_client_connected", client_id=client.id, subscription_id=subscription_id)
        return client

    def disconnect(self, client: LiveClient) -> None:
        """Forget a client."""
        self.clients.discard(client)
        log.info("live_client_disconnected", client_id=client.id, dropped=client.dropped)

    def publish_alert(self, alert: AlertRaised, body: dict[str, Any]) -> int:
        """Push an alert to ad-hoc clients (not bound to a stored subscription) whose filter it passes."""
        sent = 0
        for client in list(self.clients):
            if client.subscription_id is None and matches(client.filter, alert):
                client.offer(stamp_delivered(body))
                sent += 1
        return sent

    def publish_state(self, body: dict[str, Any]) -> int:
        """Push a lifecycle change to every ad-hoc client (small, carries no personal data)."""
        for client in list(self.clients):
            if client.subscription_id is None:
                client.offer(body)
        return sum(1 for c in self.clients if c.subscription_id is None)

    async def send(self, sub: Subscription, delivery: Delivery) -> None:
        """Outbox channel: hand the message to the clients connected for this subscription, or fail (retry later)."""
        targets = [c for c in self.clients if c.subscription_id == sub.id]
        if not targets:
            raise DeliveryError("no live client connected for this subscription")
        message = stamp_delivered(delivery.body)
        for client in targets:
            client.offer(message)
