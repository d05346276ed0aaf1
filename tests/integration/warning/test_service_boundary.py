"""The warning service's boundary: a message the engine cannot read is refused with a code and counted; an error
inside the engine is not taken for an unreadable message, it surfaces."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest

from safecity.kernel import envelope as envelope_module
from safecity.kernel.bus import MemoryBus
from safecity.kernel.envelope import EventKey, Payload, make_envelope
from safecity.sensing.model import EventKind, SensorEvent, Tags, event_key
from safecity.warning.engine import EventView
from safecity.warning.handlers import Handler, Hit, RuleState, UnreadableEvent
from safecity.warning.rules import (
    EventNames,
    RuleBase,
    RuleKind,
    load_builtin,
    parse_pack,
    register_kind,
    unregister_kind,
)
from safecity.warning.service import WarningService

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


class Scratch(Payload, frozen=True):
    """A payload the rule engine does not read."""

    n: int


def smoke() -> SensorEvent:
    return SensorEvent(
        device_id="d1",
        kind=EventKind.SMOKE,
        tags=Tags(town="t1", community="c1", building="b1", device_kind="smoke"),
        data={"alarm": True},
    )


@pytest.fixture
def scratch_key(monkeypatch: pytest.MonkeyPatch) -> EventKey[Scratch]:
    # A copy of the registry, so the scratch key does not outlive this test.
    monkeypatch.setattr(envelope_module, "_REGISTRY", dict(envelope_module._REGISTRY))
    return EventKey("event.scratch", Scratch)


async def test_an_unreadable_message_is_refused_with_its_code_and_counted(scratch_key: EventKey[Scratch]) -> None:
    env = make_envelope(scratch_key, Scratch(n=1), source="test", occurred_at=T0, received_at=T0)
    with pytest.raises(UnreadableEvent) as info:
        EventView.from_envelope(env)
    assert info.value.code == "warning.unreadable_event" and "event.scratch" in str(info.value)

    bus = MemoryBus()
    service = WarningService(bus, load_builtin("nodered_peer"))
    await service.start()
    try:
        await bus.publish(env)
        await bus.publish(make_envelope(event_key(EventKind.SMOKE), smoke(), source="t", occurred_at=T0))
        await bus.drain()
    finally:
        await service.stop()
    assert (service.stats.errors, service.stats.handled) == (1, 1)


@dataclass(eq=False)
class BrokenState(RuleState):
    """Nothing kept."""


class BrokenRule(RuleBase):
    """A kind whose handler has a bug (raises TypeError on every event)."""

    kind: Literal["broken"]
    events: EventNames


class BrokenHandler(Handler[BrokenRule, BrokenState]):
    """Raises TypeError, as a bug in a handler would."""

    def __init__(self, rule: BrokenRule, engine: Engine, state: BrokenState) -> None:
        super().__init__(rule, engine, state)

    def names(self) -> set[str]:
        return set(self.rule.events)

    def on_event(self, ev: EventView) -> list[Hit]:
        return [None + 1]  # type: ignore[operator]


@pytest.fixture
def broken() -> Iterator[None]:
    register_kind(RuleKind("broken", BrokenRule, BrokenHandler, BrokenState))
    try:
        yield
    finally:
        unregister_kind("broken")


async def test_an_engine_bug_surfaces_instead_of_counting_as_unreadable(broken: None) -> None:
    pack = parse_pack("rules:\n  - {id: b, kind: broken, title: {zh: 坏, en: broken}, events: [smoke]}\n")
    service = WarningService(MemoryBus(), pack)
    env = make_envelope(event_key(EventKind.SMOKE), smoke(), source="t", occurred_at=T0)
    with pytest.raises(TypeError):
        await service.handle(env)
    assert service.stats.errors == 0


def test_a_snapshot_of_an_older_format_is_not_loaded_so_the_windows_are_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "warning.snapshot"
    service = WarningService(MemoryBus(), load_builtin("nodered_peer"), snapshot_path=path)
    service.save_snapshot()
    assert WarningService(MemoryBus(), load_builtin("nodered_peer"), snapshot_path=path).restored
    old = pickle.dumps({"version": 2, "rules": {}, "timers": {}, "clocks": {}, "seq": 0})
    path.write_bytes(service._seal(old) + old)  # sealed by this node, but format 2
    again = WarningService(MemoryBus(), load_builtin("nodered_peer"), snapshot_path=path)
    assert not again.restored  # so `rebuild` replays the stored events instead of starting with empty windows
