"""What a delivery channel is: a component with a key, its documentation, its target check and its sender.

A channel module in this package holds one `CHANNEL = ChannelComponent(...)`; the registry (`channels/__init__.py`)
finds it, and the subscription model, the subscription checks, the senders and docs/notify.md follow from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from safecity.kernel.errors import InvalidInput
from safecity.kernel.settings import NotifySettings

if TYPE_CHECKING:
    from safecity.warning.notify.delivery import Sender
    from safecity.warning.notify.webhook import HostPolicy
    from safecity.warning.notify.websocket import AlertHub


class InvalidSubscription(InvalidInput):
    """A subscription's fields do not fit together."""

    code = "subscription.invalid"
    message_en = "Invalid subscription: {reason}"
    message_zh = "订阅无效：{reason}"


@dataclass(frozen=True)
class ChannelContext:
    """What a channel may use to check targets and build its sender: the notify settings, the host allow-list and
    the live WebSocket hub."""

    config: NotifySettings
    policy: HostPolicy
    hub: AlertHub


def accept_any_target(target: str, ctx: ChannelContext) -> None:
    """A channel whose target needs no check."""


def no_default_target(config: NotifySettings) -> str:
    """A channel whose target has no default."""
    return ""


def show_target(target: str) -> str:
    """A channel whose target holds nothing secret: it is shown as it is."""
    return target


@dataclass(frozen=True, kw_only=True)
class ChannelComponent:
    """One delivery channel."""

    key: str
    # One Markdown paragraph for docs/notify.md: how the channel delivers and what its target is.
    doc: str
    sender: Callable[[ChannelContext], Sender]
    check_target: Callable[[str, ChannelContext], None] = accept_any_target
    default_target: Callable[[NotifySettings], str] = no_default_target
    mask_target: Callable[[str], str] = show_target
    # A signed channel gets a generated secret when a subscription gives none (returned once on create).
    signed: bool = False
    # Its readers go by the order messages arrive in (a chat group, a mailbox): its lanes send one at a time, not
    # `lane_in_flight` at once.
    in_order: bool = False
