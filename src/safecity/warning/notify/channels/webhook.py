"""The `webhook` channel: signed JSON POSTs (Standard Webhooks) to allow-listed hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from safecity.warning.notify.channels.base import ChannelComponent, ChannelContext

if TYPE_CHECKING:
    from safecity.warning.notify.delivery import Sender


def _sender(ctx: ChannelContext) -> Sender:
    # Sender modules import the subscription model, which imports this registry: import them when building.
    from safecity.warning.notify.webhook import WebhookSender

    cfg = ctx.config
    # The dispatcher limits each attempt (growing after timeouts); the client's own limit is only a backstop.
    return WebhookSender(
        ctx.policy,
        timeout_s=max(cfg.attempt_timeout_s, cfg.attempt_timeout_max_s),
        connect_timeout_s=cfg.attempt_timeout_s,
    )


def _check(target: str, ctx: ChannelContext) -> None:
    ctx.policy.check(target)


def _mask(target: str) -> str:
    # A URL loses its credentials and query string (either may hold a token).
    parts = urlsplit(target)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


CHANNEL = ChannelComponent(
    key="webhook",
    doc=(
        "`POST` JSON signed per [Standard Webhooks](https://www.standardwebhooks.com/); see\n"
        "  [the webhook contract](#webhook-delivery-contract) below. Only hosts on `webhook_allow_hosts` (exact names"
        " or\n  `.suffix`) are reachable; loopback only with `allow_loopback`; redirects are not followed."
    ),
    sender=_sender,
    check_target=_check,
    mask_target=_mask,
    signed=True,
)
