"""The `chat` channel: WeCom group bot, DingTalk, Feishu or a generic `json://` endpoint, through apprise.

The e-mail channel is apprise too: the helpers here serve both, each with its own schemes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from safecity.warning.notify.channels.base import ChannelComponent, ChannelContext

if TYPE_CHECKING:
    from safecity.warning.notify.delivery import Sender

# Apprise schemes this channel accepts. `json`/`jsons` post to any host, so they pass the webhook allow-list too.
CHAT_SCHEMES = frozenset({"wecombot", "dingtalk", "feishu", "lark", "json", "jsons"})


def apprise_sender(ctx: ChannelContext) -> Sender:
    """An apprise sender (its module loads apprise's plugins, and imports this registry: imported when built)."""
    from safecity.warning.notify.chat import AppriseSender

    return AppriseSender()


def apprise_target_check(key: str, schemes: frozenset[str]) -> Callable[[str, ChannelContext], None]:
    """The target check of an apprise channel: an apprise URL of one of `schemes` that apprise can parse."""

    def check(target: str, ctx: ChannelContext) -> None:
        from safecity.warning.notify.chat import check_target

        check_target(key, schemes, target, ctx.policy)

    return check


def mask_apprise_target(target: str) -> str:
    """An apprise URL carries its tokens in any part: show its scheme only."""
    scheme = target.split("://", 1)[0] if "://" in target else ""
    return f"{scheme}://***"


CHANNEL = ChannelComponent(
    key="chat",
    doc=(
        "Localized text through apprise: WeCom group bot (`wecombot://KEY`), DingTalk (`dingtalk://TOKEN`),\n"
        "  Feishu (`feishu://TOKEN`), generic `json://host/path` (host allow-listed)."
    ),
    sender=apprise_sender,
    check_target=apprise_target_check("chat", CHAT_SCHEMES),
    mask_target=mask_apprise_target,
    in_order=True,
)
