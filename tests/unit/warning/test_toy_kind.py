"""A rule kind defined here only (model, handler, state type) works end to end: check, load, fire, snapshot, restore,
docs listing; registered for the test and taken out again, without editing any other file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pytest

from safecity import docs_gen
from safecity.sensing.model import Tags
from safecity.warning.engine import Engine, EventView
from safecity.warning.handlers import Handler, Hit, Matcher, RuleState, hit, part_of, ref
from safecity.warning.rules import (
    EventNames,
    RuleBase,
    RuleError,
    RuleKind,
    RuleKindConflict,
    RuleKindInvalid,
    When,
    Window,
    kind_keys,
    parse_pack,
    register_kind,
    rule_kind,
    state_horizon_s,
    unregister_kind,
)

if TYPE_CHECKING:
    from safecity.warning.engine import Engine as EngineType


class ToyRule(RuleBase):
    """Fires on every `nth` matching event of a group within `span`."""

    kind: Literal["toy"]
    events: EventNames
    when: When | None = None
    nth: int = 2
    span: Window


@dataclass(eq=False)
class ToyState(RuleState):
    """Per key: matching event refs within the span; `seen` counts every match of the rule (a rule-wide field)."""

    seen: int = 0


class ToyHandler(Handler[ToyRule, ToyState]):
    """Counts matches a group within the span."""

    def __init__(self, rule: ToyRule, engine: EngineType, state: ToyState) -> None:
        super().__init__(rule, engine, state)
        self.match = self.matcher(rule.events, rule.when)

    def names(self) -> set[str]:
        return set(self.rule.events)

    def gates(self) -> list[Matcher] | None:
        return [self.match]

    def on_event(self, ev: EventView) -> list[Hit]:
        if not self.match(ev):
            return []
        self.state.seen += 1
        part = part_of(self.rule, ev)
        refs: list[tuple[str, str, float]] = self.state.parts.touch(part, list)
        refs[:] = [r for r in refs if ev.t - r[2] <= self.rule.span]
        refs.append(ref(ev))
        if len(refs) < self.rule.nth:
            return []
        done = list(refs)
        refs.clear()
        return [hit(part, done, ev)]


TOY = RuleKind("toy", ToyRule, ToyHandler, ToyState)

PACK = """rules:
  - id: toy.smoke
    kind: toy
    title: {zh: 玩具, en: Toy}
    events: [smoke]
    when: data.alarm == true
    group_by: building
    nth: 3
    span: 90s
"""


@pytest.fixture
def toy() -> Iterator[RuleKind]:
    register_kind(TOY)
    try:
        yield TOY
    finally:
        unregister_kind("toy")


def alarm(i: int, t: float, building: str = "b1") -> EventView:
    tags = Tags(town="t1", community="c1", building=building, device_kind="smoke")
    return EventView(f"e{i}", "smoke", 1e9 + t, f"d{i}", tags, data={"alarm": True}, source="s")


def test_the_toy_kind_checks_loads_fires_snapshots_restores_and_is_listed(toy: RuleKind) -> None:
    # check: the pack's union now holds the toy model; its window and CEL condition are validated like any other.
    assert "toy" in kind_keys() and rule_kind("toy") is toy
    assert toy.windows == ("span",) and toy.conditions == ("when",)
    with pytest.raises(RuleError, match="windows must be bounded"):
        parse_pack(PACK.replace("90s", "2d"))
    with pytest.raises(RuleError, match="CEL"):
        parse_pack(PACK.replace("data.alarm == true", "data.alarm =="))
    pack = parse_pack(PACK)
    assert state_horizon_s(pack) == 90.0  # the typed window is replayed on a rebuild, no list to update

    # load and fire
    engine = Engine(pack)
    assert engine.process(alarm(1, 0)) == [] and engine.process(alarm(2, 10)) == []

    # snapshot and restore: the open window and the rule-wide field come back through the state type
    restored = Engine.restore(parse_pack(PACK), engine.snapshot())
    assert restored.snapshot_loaded and restored.stats.restored_rules == 1
    assert restored.handlers["toy.smoke"].state.seen == 2
    (firing,) = restored.process(alarm(3, 20))
    assert firing.rule.id == "toy.smoke" and firing.trigger_event_ids == ["e1", "e2", "e3"]
    assert firing.group_key == "toy.smoke:b1"

    # docs: the generated kinds table lists it, from the registry
    assert "| [`toy`](#toy) | Fires on every `nth` matching event of a group within `span`. | `span` |" in (
        docs_gen.rule_kinds_reference()
    )


def test_without_the_toy_kind_its_pack_is_refused_and_the_docs_do_not_list_it(toy: RuleKind) -> None:
    unregister_kind("toy")
    try:
        with pytest.raises(RuleError, match="unknown rule kind"):
            parse_pack(PACK)
        assert "`toy`" not in docs_gen.rule_kinds_reference()
    finally:
        register_kind(TOY)


def test_a_second_kind_under_one_key_is_a_coded_conflict(toy: RuleKind) -> None:
    with pytest.raises(RuleKindConflict) as info:
        register_kind(TOY)
    assert info.value.code == "rules.kind_conflict"
    with pytest.raises(RuleKindConflict):
        register_kind(RuleKind("threshold", ToyRule, ToyHandler, ToyState))


def test_a_kind_whose_model_says_another_key_or_whose_condition_is_a_plain_str_is_refused() -> None:
    with pytest.raises(RuleKindInvalid, match="Literal"):
        register_kind(RuleKind("toy2", ToyRule, ToyHandler, ToyState))

    class LooseRule(RuleBase):
        """A condition typed as a plain string: it would skip the one CEL check."""

        kind: Literal["loose"]
        events: EventNames
        when: str | None = None

    with pytest.raises(RuleKindInvalid, match=r"LooseRule\.when"):
        register_kind(RuleKind("loose", LooseRule, ToyHandler, ToyState))
    assert "loose" not in kind_keys()


def test_a_handler_is_sealed_so_what_changes_lives_in_its_state(toy: RuleKind) -> None:
    handler = Engine(parse_pack(PACK)).handlers["toy.smoke"]
    with pytest.raises(AttributeError, match="keep what changes in its state"):
        handler.seen = 1  # type: ignore[attr-defined]


def test_a_snapshot_whose_state_has_other_fields_drops_the_rule(toy: RuleKind) -> None:
    engine = Engine(parse_pack(PACK))
    engine.process(alarm(1, 0))
    blob = engine.snapshot()

    @dataclass(eq=False)
    class ToyStateV2(ToyState):
        """A later version of the toy state with one more field."""

        last: float = 0.0

    unregister_kind("toy")
    register_kind(RuleKind("toy", ToyRule, ToyHandler, ToyStateV2))
    restored = Engine.restore(parse_pack(PACK), blob)
    assert restored.stats.dropped_rules == 1 and restored.open_windows() == 0
    unregister_kind("toy")
    register_kind(TOY)
