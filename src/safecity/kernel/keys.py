"""Typed subscriptions: an `EventKey[P]` (or a `KeyFamily[P]`) ties a bus subject to its payload type end to end.

A publisher builds envelopes from a key (`make_envelope(ALERT_RAISED, AlertRaised(...))`); a subscriber names the
same key and its handler receives the payload already typed, so no handler compares key strings or checks payload
types by hand:

    async def on_raised(envelope: Envelope, alert: AlertRaised) -> None: ...

    await subscribe(bus, ALERT_RAISED, on_raised, durable="alert-store-raised")

    router = KeyRouter().on(ALERT_RAISED, on_raised).on(ALERT_STATE_CHANGED, on_state)
    await bus.subscribe("alert.>", router, durable="notify")

An envelope whose key matches but whose payload is of another type is a bug on the publishing side: it raises
`WrongPayload` (the bus counts and logs it, JetStream redelivers then gives up), never passes silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic

from safecity.kernel.bus import Bus, Handler, Subscription
from safecity.kernel.envelope import Envelope, EventKey, P, register_prefix
from safecity.kernel.errors import SafeCityError

# A typed handler may return a settle future (see `safecity.kernel.bus.Handler`): the message is acknowledged once
# that future is done.
TypedHandler = Callable[[Envelope, P], Awaitable["asyncio.Future[Any] | None"]]


class WrongPayload(SafeCityError):
    """A bus message's payload is not the type its key is bound to."""

    code: ClassVar[str] = "bus.wrong_payload"
    status: ClassVar[int] = 500
    title_en: ClassVar[str] = "Wrong payload type"
    title_zh: ClassVar[str] = "消息载荷类型错误"
    message_en: ClassVar[str] = "Message {key} carries a {got}, not a {expected}."
    message_zh: ClassVar[str] = "消息 {key} 的载荷是 {got}，应为 {expected}。"


class KeyFamily(Generic[P]):
    """Every key under `<prefix>.` bound to one payload type (`event.<kind>` -> `SensorEvent`), made at run time."""

    __slots__ = ("payload_type", "prefix")

    def __init__(self, prefix: str, payload_type: type[P]) -> None:
        if not prefix or any(ch in prefix for ch in " .*>"):
            raise ValueError(f"invalid key prefix {prefix!r}")
        self.prefix = prefix
        self.payload_type = payload_type
        register_prefix(prefix, payload_type)

    @property
    def name(self) -> str:
        """The subject pattern of the whole family (`event.>`)."""
        return f"{self.prefix}.>"

    def key(self, suffix: str) -> EventKey[P]:
        """The typed key `<prefix>.<suffix>` of this family."""
        return EventKey(f"{self.prefix}.{suffix}", self.payload_type)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith(self.prefix + ".") and len(key) > len(self.prefix) + 1

    def __repr__(self) -> str:
        return f"KeyFamily({self.prefix!r}, {self.payload_type.__name__})"


def _matches(key: EventKey[Any] | KeyFamily[Any], name: str) -> bool:
    return name in key if isinstance(key, KeyFamily) else name == key.name


def payload_of(key: EventKey[P] | KeyFamily[P], envelope: Envelope) -> P | None:
    """The envelope's payload typed as `key`'s, or None when the envelope is of another key.

    Raises `WrongPayload` when the key matches but the payload is of another type.
    """
    if not _matches(key, envelope.key):
        return None
    payload = envelope.payload
    if not isinstance(payload, key.payload_type):
        raise WrongPayload(key=envelope.key, got=type(payload).__name__, expected=key.payload_type.__name__)
    return payload


def typed_handler(key: EventKey[P] | KeyFamily[P], handler: TypedHandler[P]) -> Handler:
    """A bus handler passing `handler` each envelope of `key` with its typed payload (other keys are skipped)."""

    async def handle(envelope: Envelope) -> asyncio.Future[Any] | None:
        payload = payload_of(key, envelope)
        if payload is not None:
            return await handler(envelope, payload)
        return None

    return handle


async def subscribe(
    bus: Bus,
    key: EventKey[P] | KeyFamily[P],
    handler: TypedHandler[P],
    *,
    durable: str | None = None,
    queue_size: int = 10_000,
) -> Subscription:
    """Subscribe `handler` to `key` (one key, or a whole family); it receives the typed payload."""
    return await bus.subscribe(key.name, typed_handler(key, handler), durable=durable, queue_size=queue_size)


class KeyRouter:
    """One bus handler for several keys: each envelope goes to the typed handler of its exact key.

    Keys no handler is registered for are ignored (a subscription to `alert.>` sees keys others consume).
    """

    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}

    def on(self, key: EventKey[P], handler: TypedHandler[P]) -> KeyRouter:
        """Route envelopes of `key` to `handler`; returns the router, so routes chain."""
        if key.name in self._routes:
            raise ValueError(f"key {key.name!r} is routed already")
        self._routes[key.name] = typed_handler(key, handler)
        return self

    def keys(self) -> list[str]:
        """The routed key names, in the order registered."""
        return list(self._routes)

    async def __call__(self, envelope: Envelope) -> asyncio.Future[Any] | None:
        route = self._routes.get(envelope.key)
        if route is not None:
            return await route(envelope)
        return None
