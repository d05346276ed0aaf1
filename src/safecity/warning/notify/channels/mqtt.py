"""The `mqtt` channel: QoS 1 publishes to `<prefix>/<severity>/<community>`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safecity.kernel.settings import NotifySettings
from safecity.warning.notify.channels.base import ChannelComponent, ChannelContext, InvalidSubscription

if TYPE_CHECKING:
    from safecity.warning.notify.delivery import Sender


def _sender(ctx: ChannelContext) -> Sender:
    from safecity.warning.notify.mqtt import MqttSender

    cfg = ctx.config
    return MqttSender(cfg.mqtt_host, cfg.mqtt_port, default_prefix=cfg.mqtt_prefix)


def _check(target: str, ctx: ChannelContext) -> None:
    if any(ch in target for ch in "+#\x00"):
        raise InvalidSubscription(reason="an MQTT topic prefix cannot contain wildcards")


def _default_target(config: NotifySettings) -> str:
    return config.mqtt_prefix


CHANNEL = ChannelComponent(
    key="mqtt",
    doc=(
        "QoS 1 publish to `<prefix>/<severity>/<community>` (e.g. `safecity/alerts/severe/c-01`; `_none`\n"
        "  without a community)."
    ),
    sender=_sender,
    check_target=_check,
    default_target=_default_target,
)
