"""Rule kind `absence`: an expected event does not arrive within a window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from safecity.warning.handlers import EventView, Handler, Hit, Matcher, RuleState, part_of, ref
from safecity.warning.rules import Condition, RuleBase, RuleKind, Window

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

KEY = "absence"


class AbsenceRule(RuleBase):
    """Fires when an expected event does not arrive within `within` (after `after`, or after the last one)."""

    kind: Literal["absence"]
    expect: Condition
    after: Condition | None = None
    within: Window


@dataclass(eq=False)
class AbsenceState(RuleState):
    """Per key: the armed deadline (None: disarmed) with the event that armed it, its tags and position."""


class AbsenceHandler(Handler[AbsenceRule, AbsenceState]):
    """Arms a timer on each expected (or `after`) event; an expected event disarms it; the timer fires the rule."""

    def __init__(self, rule: AbsenceRule, engine: Engine, state: AbsenceState) -> None:
        super().__init__(rule, engine, state)
        self.expect = self.matcher(rule.expect.events, rule.expect.when)
        self.after = self.matcher(rule.after.events, rule.after.when) if rule.after else None

    def names(self) -> set[str]:
        return set(self.rule.expect.events) | (set(self.rule.after.events) if self.rule.after else set())

    def gates(self) -> list[Matcher] | None:
        return [self.expect] if self.after is None else [self.expect, self.after]

    def on_event(self, ev: EventView) -> list[Hit]:
        part = part_of(self.rule, ev)
        if self.expect(ev):
            if self.after is not None:
                st = self.state.parts.get(part)
                if st is not None:
                    st["deadline"] = None
                return []
            self._arm(part, ev)
        elif self.after is not None and self.after(ev):
            st = self.state.parts.get(part)
            if st is None or st.get("deadline") is None:
                self._arm(part, ev)
        return []

    def _arm(self, part: str, ev: EventView) -> None:
        deadline = ev.t + self.rule.within
        st = self.state.parts.touch(part, dict)
        st.update(deadline=deadline, ids=[ref(ev)], tags=ev.tags, lon=ev.lon, lat=ev.lat)
        self.engine.arm(self, part, deadline)

    def on_due(self, part: str, deadline: float) -> list[Hit]:
        st = self.state.parts.get(part)
        if st is None or st.get("deadline") != deadline:
            return []
        st["deadline"] = None
        return [Hit(part, st["ids"], deadline, st["tags"], st["lon"], st["lat"], None)]


KIND = RuleKind(KEY, AbsenceRule, AbsenceHandler, AbsenceState)
