"""The `chat` channel: WeCom group bot, DingTalk, Feishu or a generic `json://` endpoint, through apprise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safecity.warning.notify.channels.base import ChannelComponent, ChannelContext

if TYPE_CHECKING:
    from safecity.warning.notify.delivery import Sender


def _sender(ctx: ChannelContext) -> Sender:
    from safecity.warning.notify.chat import AppriseSender

    return AppriseSender()


def _check(target: str, ctx: ChannelContext) -> None:
    from safecity.warning.notify.chat import CHAT_SCHEMES, check_target

    check_target("chat", CHAT_SCHEMES, target, ctx.policy)


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
    sender=_sender,
    check_target=_check,
    mask_target=mask_apprise_target,
)
