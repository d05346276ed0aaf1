"""The `email` channel: localized text by e-mail through apprise (`mailto://`, `mailtos://`)."""

from __future__ import annotations

from safecity.warning.notify.channels.base import ChannelComponent
from safecity.warning.notify.channels.chat import apprise_sender, apprise_target_check, mask_apprise_target

EMAIL_SCHEMES = frozenset({"mailto", "mailtos"})

CHANNEL = ChannelComponent(
    key="email",
    doc=(
        "Localized text through apprise: `mailto://…`, `mailtos://…`\n"
        "  (`mailto://smtp.host:25?mode=insecure&from=a@x&to=b@y` for a plain SMTP relay)."
    ),
    sender=apprise_sender,
    check_target=apprise_target_check("email", EMAIL_SCHEMES),
    mask_target=mask_apprise_target,
    in_order=True,
)
