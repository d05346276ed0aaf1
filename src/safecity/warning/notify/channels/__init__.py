"""The delivery channels: every module of this package that defines `CHANNEL` is one (see base.py).

Everything that lists channels reads this registry: the `Channel` enum, the subscription model's `channel` field
(validated against the registry when a request arrives, so a channel registered later is accepted too), the target
checks and senders of `NotifyService`, and the channel list in docs/notify.md (`python -m safecity.docs_gen
notify-channels`).
"""

from __future__ import annotations

import importlib
import pkgutil
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from safecity.warning.notify.channels.base import ChannelComponent, ChannelContext, InvalidSubscription

__all__ = [
    "CHANNELS",
    "Channel",
    "ChannelComponent",
    "ChannelContext",
    "ChannelKey",
    "InvalidSubscription",
    "component",
    "register",
    "unregister",
]


def _discover() -> dict[str, ChannelComponent]:
    found: dict[str, ChannelComponent] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        channel = getattr(module, "CHANNEL", None)
        if isinstance(channel, ChannelComponent):
            if channel.key in found:
                raise RuntimeError(f"two channel modules use the key {channel.key!r}")
            found[channel.key] = channel
    return found


# Key -> component, built-ins in key order; `register` adds one (a plugin, a test's toy channel).
CHANNELS: dict[str, ChannelComponent] = _discover()

# The built-in channels as an enum (`Channel.WEBHOOK == "webhook"`), derived from the modules above.
Channel = StrEnum("Channel", {key.upper(): key for key in CHANNELS})  # type: ignore[misc]


def register(channel: ChannelComponent) -> None:
    """Add a channel; its key must be new."""
    if channel.key in CHANNELS:
        raise ValueError(f"a channel with the key {channel.key!r} is already registered")
    CHANNELS[channel.key] = channel


def unregister(key: str) -> None:
    """Remove a channel added by `register` (built-ins stay)."""
    if key in Channel.__members__.values() or key not in CHANNELS:
        raise ValueError(f"{key!r} is not a registered plug-in channel")
    del CHANNELS[key]


def component(key: str) -> ChannelComponent:
    """The channel with this key (KeyError when there is none)."""
    return CHANNELS[key]


def _known(value: str) -> str:
    if value not in CHANNELS:
        raise ValueError(f"unknown channel {value!r}; one of: {', '.join(CHANNELS)}")
    return str(value)


class _ChannelSchema:
    """JSON Schema of a channel key: a string enum of the channels registered when the schema is made."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        result: dict[str, Any] = handler(schema)
        result["enum"] = list(CHANNELS)
        return result


# The type of a subscription's `channel`: a registered channel key.
ChannelKey = Annotated[str, AfterValidator(_known), _ChannelSchema()]
