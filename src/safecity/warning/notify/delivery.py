"""What a channel's sender works with: the message it gets (`Delivery`), how it fails (`DeliveryError`), its protocol
(`Sender`) and the delivered-hop stamp. Store-free, so channels and the API can import it without the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from safecity.kernel import clock
from safecity.kernel.errors import SafeCityError
from safecity.warning.notify.subscriptions import Subscription


class DeliveryError(SafeCityError):
    """A channel could not deliver a message; `permanent` ones go straight to the dead letters."""

    code: ClassVar[str] = "notify.delivery_failed"
    status: ClassVar[int] = 502
    title_en = "Delivery failed"
    title_zh = "投递失败"
    message_en = "Delivery failed: {reason}"
    message_zh = "投递失败：{reason}"

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(reason=reason)


@dataclass(frozen=True)
class Delivery:
    """One outbox row handed to a channel."""

    id: str
    subscription_id: str
    alert_id: str
    kind: str
    body: dict[str, Any]
    attempt: int  # 1 for the first try


class Sender(Protocol):
    """A channel: deliver one message to one subscription's endpoint or raise."""

    async def send(self, sub: Subscription, delivery: Delivery) -> None:
        """Deliver or raise (DeliveryError, TimeoutError, OSError ...)."""
        ...


def stamp_delivered(body: dict[str, Any], at: datetime | None = None) -> dict[str, Any]:
    """Return a copy of a message body with the alert's `delivered` hop set (each channel stamps its own); a body
    that carries no alert (a task message) is returned as it is."""
    if "alert" not in body:
        return body
    alert = dict(body.get("alert") or {})
    hops = dict(alert.get("hops") or {})
    hops["delivered"] = (at or clock.now()).isoformat()
    alert["hops"] = hops
    return {**body, "alert": alert}
