"""The envelope every message on the bus travels in, and typed event keys.

An envelope carries a time-sortable id (also the bus's dedupe id, `Nats-Msg-Id`), the event key, when the thing
happened and when we received it, who sent it, which tier it came from, a context that flows into logs and the audit
trail, and a timestamp per hop so perceive -> warn latency can be shown on every alert.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from safecity.kernel import clock, ids


class Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every bus payload: frozen, unknown fields rejected."""


P = TypeVar("P", bound=Payload)

_REGISTRY: dict[str, type[Payload]] = {}
_PREFIX_REGISTRY: dict[str, type[Payload]] = {}


class EventKey(Generic[P]):
    """A typed event key: a bus subject (`noun.past_tense` or `event.<kind>`) bound to its payload type."""

    __slots__ = ("name", "payload_type")

    def __init__(self, name: str, payload_type: type[P]) -> None:
        if not name or any(ch in name for ch in " *>"):
            raise ValueError(f"invalid event key {name!r}")
        self.name = name
        self.payload_type = payload_type
        _REGISTRY[name] = payload_type

    def __repr__(self) -> str:
        return f"EventKey({self.name!r}, {self.payload_type.__name__})"


def register_prefix(prefix: str, payload_type: type[Payload]) -> None:
    """Bind every key under `prefix.` (e.g. `event.`) to one payload type, for keys made at run time."""
    _PREFIX_REGISTRY[prefix] = payload_type


def payload_type_for(key: str) -> type[Payload]:
    """Return the payload type registered for a key (exact key first, then its prefix)."""
    found = _REGISTRY.get(key)
    if found is not None:
        return found
    prefix = key.split(".", 1)[0]
    found = _PREFIX_REGISTRY.get(prefix)
    if found is None:
        raise KeyError(f"no payload type registered for event key {key!r}")
    return found


def registered_keys() -> dict[str, type[Payload]]:
    """Return a copy of every registered exact key and its payload type."""
    return dict(_REGISTRY)


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """Who and what caused a message: flows into logs and the audit trail."""

    correlation_id: str
    actor: str | None = None
    parent_id: str | None = None


class Envelope(msgspec.Struct, kw_only=True):
    """A message on the bus."""

    id: str
    key: str
    occurred_at: datetime
    received_at: datetime
    source: str
    tier: str
    context: Context
    payload: Any
    hops: dict[str, datetime] = msgspec.field(default_factory=dict)

    def stamp(self, hop: str, at: datetime | None = None) -> None:
        """Record the time this message passed a hop (e.g. `tagged`, `published`, `stored`)."""
        self.hops[hop] = at or clock.now()

    def latency_ms(self, start: str, end: str) -> float | None:
        """Return milliseconds between two hops ('occurred' and 'received' are always known)."""
        times = {"occurred": self.occurred_at, "received": self.received_at, **self.hops}
        if start not in times or end not in times:
            return None
        return (times[end] - times[start]).total_seconds() * 1000.0


class _WireEnvelope(msgspec.Struct, kw_only=True):
    id: str
    key: str
    occurred_at: datetime
    received_at: datetime
    source: str
    tier: str
    context: Context
    payload: msgspec.Raw
    hops: dict[str, datetime] = msgspec.field(default_factory=dict)


def make_envelope(
    key: EventKey[P] | str,
    payload: Payload,
    *,
    source: str,
    tier: str = "district",
    occurred_at: datetime | None = None,
    received_at: datetime | None = None,
    context: Context | None = None,
    envelope_id: str | None = None,
) -> Envelope:
    """Build an envelope with a fresh id; the correlation id defaults to the envelope's own id."""
    key_name = key if isinstance(key, str) else key.name
    env_id = envelope_id or ids.new_id()
    now = received_at if received_at is not None and occurred_at is not None else clock.now()
    return Envelope(
        id=env_id,
        key=key_name,
        occurred_at=occurred_at or now,
        received_at=received_at or now,
        source=source,
        tier=tier,
        context=context or Context(correlation_id=env_id),
        payload=payload,
    )


_encoder = msgspec.json.Encoder()
_wire_decoder = msgspec.json.Decoder(_WireEnvelope)
_payload_decoders: dict[type[Payload], msgspec.json.Decoder[Any]] = {}


def encode(envelope: Envelope) -> bytes:
    """Serialize an envelope to JSON bytes."""
    return _encoder.encode(envelope)


def decode(data: bytes, payload_type: Callable[[str], type[Payload]] = payload_type_for) -> Envelope:
    """Parse JSON bytes into an envelope whose payload has its registered type."""
    wire = _wire_decoder.decode(data)
    ptype = payload_type(wire.key)
    decoder = _payload_decoders.get(ptype)
    if decoder is None:
        decoder = _payload_decoders[ptype] = msgspec.json.Decoder(ptype)
    return Envelope(
        id=wire.id,
        key=wire.key,
        occurred_at=wire.occurred_at,
        received_at=wire.received_at,
        source=wire.source,
        tier=wire.tier,
        context=wire.context,
        payload=decoder.decode(wire.payload),
        hops=wire.hops,
    )
