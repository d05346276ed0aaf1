"""Signed webhooks (Standard Webhooks): POST JSON to allow-listed hosts only (ARCHITECTURE §7)."""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Sequence
from urllib.parse import urlsplit

import orjson
from standardwebhooks import Webhook

from safecity.kernel import clock
from safecity.kernel.errors import InvalidInput
from safecity.warning.notify.delivery import Delivery, DeliveryError, stamp_delivered
from safecity.warning.notify.http11 import Http11Client, InvalidRequest
from safecity.warning.notify.subscriptions import Subscription

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
# 410 Gone: the receiver says this endpoint will never come back (Standard Webhooks: disable it).
PERMANENT_STATUSES = frozenset({410})


class HostNotAllowed(InvalidInput):
    """A webhook or HTTP target is not on the allow-list."""

    code = "notify.host_not_allowed"
    message_en = "Host {host!r} is not on the webhook allow-list."
    message_zh = "主机 {host!r} 不在 Webhook 白名单中。"


def new_secret() -> str:
    """Return a fresh Standard Webhooks signing secret (`whsec_` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Which hosts outbound HTTP may reach: exact names, `.suffix` entries, and loopback only when allowed."""

    def __init__(self, allow_hosts: Sequence[str] = (), *, allow_loopback: bool = False) -> None:
        self.allow_hosts = [h.lower().strip() for h in allow_hosts if h.strip()]
        self.allow_loopback = allow_loopback

    def check(self, url: str) -> None:
        """Raise HostNotAllowed unless `url` is http(s) to an allowed host."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise HostNotAllowed(host=host or url)
        if _is_loopback(host):
            if self.allow_loopback:
                return
            raise HostNotAllowed(host=host)
        for entry in self.allow_hosts:
            if host == entry or (entry.startswith(".") and host.endswith(entry)):
                return
        raise HostNotAllowed(host=host)


class WebhookSender:
    """The `webhook` channel: one signed POST per outbox row; `webhook-id` is the row id (receivers dedupe on it)."""

    def __init__(
        self,
        policy: HostPolicy,
        *,
        timeout_s: float = 10.0,
        connect_timeout_s: float | None = None,
        client: Http11Client | None = None,
    ) -> None:
        self.policy = policy
        # Keep-alive HTTP/1.1 parsed by llhttp (a tenth of httpx's CPU a POST); no redirects: one could lead off the
        # allow-list.
        self.client = client or Http11Client(timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        self._signers: dict[str, Webhook] = {}

    async def close(self) -> None:
        """Close the kept-alive connections."""
        await self.client.aclose()

    async def send(self, sub: Subscription, delivery: Delivery) -> None:
        """Sign and POST the message; 2xx is success, 410 is permanent, anything else is retried."""
        try:
            self.policy.check(sub.target)
        except HostNotAllowed as err:
            raise DeliveryError(str(err), permanent=True) from err
        if not sub.secret:
            raise DeliveryError("webhook subscription has no signing secret", permanent=True)
        payload = orjson.dumps(stamp_delivered(delivery.body)).decode()
        now = clock.now()
        signer = self._signers.get(sub.secret)
        if signer is None:
            if len(self._signers) > 1_000:
                self._signers.clear()
            signer = self._signers[sub.secret] = Webhook(sub.secret)
        signature = signer.sign(delivery.id, now, payload)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        # A timeout raises TimeoutError: sent (maybe in part) but not answered in time; the receiver may have it.
        try:
            response = await self.client.post(sub.target, payload.encode(), headers)
        except InvalidRequest as err:
            raise DeliveryError(str(err), permanent=True) from err
        if 200 <= response.status_code < 300:
            return
        raise DeliveryError(f"HTTP {response.status_code}", permanent=response.status_code in PERMANENT_STATUSES)
