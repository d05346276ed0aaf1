"""Rule kind `sequence`: steps happen in order within a window of the first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from safecity.warning.handlers import EventView, Handler, Hit, RuleState, hit, part_of, ref
from safecity.warning.rules import Condition, RuleBase, RuleKind, Window

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

KEY = "sequence"


class SequenceRule(RuleBase):
    """Fires when the steps happen in order within `within` of the first."""

    kind: Literal["sequence"]
    steps: list[Condition] = Field(min_length=2, max_length=10)
    within: Window


@dataclass(eq=False)
class SequenceState(RuleState):
    """Per key: the stage reached (0: waiting for the first step), when the first step happened, and its events."""


class SequenceHandler(Handler[SequenceRule, SequenceState]):
    """Walks the steps in order per group; an expired sequence starts over."""

    # No gates (`Handler.gates`): every event of its kinds may reset an expired sequence (events arrive out of order).

    def __init__(self, rule: SequenceRule, engine: Engine, state: SequenceState) -> None:
        super().__init__(rule, engine, state)
        self.steps = [self.matcher(s.events, s.when) for s in rule.steps]

    def names(self) -> set[str]:
        return {n for s in self.rule.steps for n in s.events}

    def on_event(self, ev: EventView) -> list[Hit]:
        part = part_of(self.rule, ev)
        st = self.state.parts.get(part)
        if st is not None and st["stage"] > 0 and ev.t - st["start"] > self.rule.within:
            st["stage"] = 0
        stage = st["stage"] if st is not None else 0
        if st is not None and stage > 0 and self.steps[stage](ev):
            st["stage"] += 1
            st["ids"].append(ref(ev))
            if st["stage"] == len(self.steps):
                ids_ = st["ids"]
                st["stage"] = 0
                return [hit(part, ids_, ev)]
            return []
        if stage == 0 and self.steps[0](ev):
            st = self.state.parts.touch(part, dict)
            st.update(stage=1, start=ev.t, ids=[ref(ev)])
        return []


KIND = RuleKind(KEY, SequenceRule, SequenceHandler, SequenceState)
