"""The `websocket` channel: alerts pushed to connected WebSocket clients (`AlertHub`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safecity.warning.notify.channels.base import ChannelComponent, ChannelContext

if TYPE_CHECKING:
    from safecity.warning.notify.delivery import Sender


def _sender(ctx: ChannelContext) -> Sender:
    return ctx.hub


CHANNEL = ChannelComponent(
    key="websocket",
    doc=(
        "`GET /api/v1/alerts/live` (roles operator, dispatcher, responder). The key goes in a header:\n"
        '  in a browser `new WebSocket(url, ["safecity", "bearer." + key])` (the server selects `safecity`),'
        " elsewhere\n"
        "  `X-API-Key` or `Authorization: Bearer`. `?key=` still works but is deprecated (it is redacted from the logs;"
        " see\n  [deployment.md](deployment.md)). Query filters: `min_severity`, `categories`, `towns`, `communities`"
        " (comma-separated) push alerts live.\n"
        "  With `subscription=<id>` of a `websocket` subscription the socket receives that subscription's outbox"
        " deliveries\n  (durable: retried until a client for it is connected). Lifecycle changes arrive as"
        ' `{"type": "state", …}`.'
    ),
    sender=_sender,
)
