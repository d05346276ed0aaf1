"""The `email` channel: localized text by e-mail through apprise (`mailto://`, `mailtos://`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safecity.warning.notify.channels.base import ChannelComponent, ChannelContext
from safecity.warning.notify.channels.chat import mask_apprise_target

if TYPE_CHECKING:
    from safecity.warning.notify.delivery import Sender


def _sender(ctx: ChannelContext) -> Sender:
    from safecity.warning.notify.chat import AppriseSender

    return AppriseSender()


def _check(target: str, ctx: ChannelContext) -> None:
    from safecity.warning.notify.chat import EMAIL_SCHEMES, check_target

    check_target("email", EMAIL_SCHEMES, target, ctx.policy)


CHANNEL = ChannelComponent(
    key="email",
    doc=(
        "Localized text through apprise: `mailto://…`, `mailtos://…`\n"
        "  (`mailto://smtp.host:25?mode=insecure&from=a@x&to=b@y` for a plain SMTP relay)."
    ),
    sender=_sender,
    check_target=_check,
    mask_target=mask_apprise_target,
)
