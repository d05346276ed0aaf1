"""Typed event keys end to end: a subscriber names a key and receives that key's payload type, never a guess."""

from __future__ import annotations

import asyncio

import pytest

from safecity.kernel.bus import MemoryBus
from safecity.kernel.envelope import Envelope, EventKey, Payload, decode, encode, make_envelope
from safecity.kernel.keys import KeyFamily, KeyRouter, WrongPayload, payload_of, subscribe, typed_handler


class ToyOpened(Payload):
    """A toy door opened."""

    door: str


class ToyReading(Payload):
    """A toy sensor reading."""

    value: float


TOY_OPENED: EventKey[ToyOpened] = EventKey("toy.opened", ToyOpened)
TOY_CLOSED: EventKey[ToyOpened] = EventKey("toy.closed", ToyOpened)
READINGS: KeyFamily[ToyReading] = KeyFamily("toyreading", ToyReading)


def test_payload_of_types_the_payload_of_its_key_only() -> None:
    env = make_envelope(TOY_OPENED, ToyOpened(door="d1"), source="t")
    opened = payload_of(TOY_OPENED, env)
    assert opened == ToyOpened(door="d1")
    assert payload_of(TOY_CLOSED, env) is None
    wrong = make_envelope(TOY_OPENED, ToyReading(value=1.0), source="t")
    with pytest.raises(WrongPayload) as caught:
        payload_of(TOY_OPENED, wrong)
    assert caught.value.code == "bus.wrong_payload"
    assert "ToyReading" in str(caught.value) and "ToyOpened" in str(caught.value)


def test_a_key_family_covers_keys_made_at_run_time_and_decodes_them_typed() -> None:
    assert READINGS.name == "toyreading.>"
    key = READINGS.key("smoke")
    assert key.name == "toyreading.smoke" and key.payload_type is ToyReading
    assert "toyreading.made.at.runtime" in READINGS
    assert "toyreading" not in READINGS and "toyreadings.x" not in READINGS
    # A key nobody declared, under the family's prefix, still travels typed over the wire.
    env = decode(encode(make_envelope("toyreading.brand_new", ToyReading(value=2.5), source="t")))
    assert payload_of(READINGS, env) == ToyReading(value=2.5)
    with pytest.raises(ValueError):
        KeyFamily("bad.prefix", ToyReading)


async def test_typed_handler_skips_other_keys() -> None:
    got: list[str] = []

    async def on_opened(_envelope: Envelope, opened: ToyOpened) -> None:
        got.append(opened.door)

    handle = typed_handler(TOY_OPENED, on_opened)
    await handle(make_envelope(TOY_CLOSED, ToyOpened(door="ignored"), source="t"))
    await handle(make_envelope(TOY_OPENED, ToyOpened(door="d2"), source="t"))
    assert got == ["d2"]


async def test_subscribers_on_the_bus_receive_typed_payloads_and_a_wrong_one_is_counted() -> None:
    bus = MemoryBus()
    await bus.start()
    readings: list[float] = []
    opened: list[str] = []

    async def on_reading(envelope: Envelope, reading: ToyReading) -> None:
        assert envelope.key.startswith("toyreading.")
        readings.append(reading.value)

    async def on_opened(_envelope: Envelope, event: ToyOpened) -> None:
        opened.append(event.door)

    await subscribe(bus, READINGS, on_reading)
    await subscribe(bus, TOY_OPENED, on_opened, durable="toy-opened")
    await bus.publish(make_envelope(READINGS.key("a"), ToyReading(value=1.0), source="t"))
    await bus.publish(make_envelope("toyreading.b", ToyReading(value=2.0), source="t"))
    await bus.publish(make_envelope(TOY_OPENED, ToyOpened(door="front"), source="t"))
    await bus.publish(make_envelope(TOY_OPENED, ToyReading(value=9.0), source="t"))  # a publisher's bug
    await asyncio.wait_for(bus.drain(), 2)
    assert sorted(readings) == [1.0, 2.0]
    assert opened == ["front"]
    assert bus.stats.handler_errors == 1
    assert bus.lag() == {"toyreading.>#0": 0, "toy-opened": 0}
    await bus.close()


async def test_a_router_sends_each_key_to_its_typed_handler() -> None:
    seen: list[tuple[str, str]] = []

    async def on_opened(envelope: Envelope, event: ToyOpened) -> None:
        seen.append((envelope.key, event.door))

    async def on_closed(envelope: Envelope, event: ToyOpened) -> None:
        seen.append((envelope.key, "closed " + event.door))

    router = KeyRouter().on(TOY_OPENED, on_opened).on(TOY_CLOSED, on_closed)
    assert router.keys() == ["toy.opened", "toy.closed"]
    await router(make_envelope(TOY_CLOSED, ToyOpened(door="d"), source="t"))
    await router(make_envelope(TOY_OPENED, ToyOpened(door="e"), source="t"))
    await router(make_envelope(READINGS.key("x"), ToyReading(value=0.0), source="t"))  # not routed: ignored
    assert seen == [("toy.closed", "closed d"), ("toy.opened", "e")]
    with pytest.raises(WrongPayload):
        await router(make_envelope(TOY_OPENED, ToyReading(value=0.0), source="t"))
    with pytest.raises(ValueError, match="routed already"):
        router.on(TOY_OPENED, on_opened)
