"""Rule kind `trend`: an event's value rose by a share over the lowest value of a window."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from safecity.warning.handlers import EventView, Handler, Hit, Matcher, RuleState, hit, part_of, ref
from safecity.warning.rules import EventNames, RuleBase, RuleKind, When, Window

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

KEY = "trend"


class TrendRule(RuleBase):
    """Fires when an event's value has risen `rise_pct` % over the lowest value of the last `over`."""

    kind: Literal["trend"]
    events: EventNames
    when: When | None = None
    rise_pct: float = Field(gt=0, le=100_000)
    over: Window
    min_value: float = 0.0


@dataclass(eq=False)
class TrendState(RuleState):
    """Per key: a deque of (time, value, event) within `over`."""


class TrendHandler(Handler[TrendRule, TrendState]):
    """Compares each value with the lowest of its window; a rise is measured afresh after it fires."""

    def __init__(self, rule: TrendRule, engine: Engine, state: TrendState) -> None:
        super().__init__(rule, engine, state)
        self.match = self.matcher(rule.events, rule.when)
        self.factor = 1.0 + rule.rise_pct / 100.0

    def names(self) -> set[str]:
        return set(self.rule.events)

    def gates(self) -> list[Matcher] | None:
        return [self.match]

    def on_event(self, ev: EventView) -> list[Hit]:
        if ev.value is None or not self.match(ev):
            return []
        part = part_of(self.rule, ev)
        window: deque[tuple[float, float, tuple[str, str, float]]] = self.state.parts.touch(part, self.bounded)
        over = self.rule.over
        while window and ev.t - window[0][0] > over:
            window.popleft()
        low = min(window, key=lambda item: item[1]) if window else None
        if len(window) == window.maxlen:
            self.stats.window_overflow += 1
        window.append((ev.t, ev.value, ref(ev)))
        if low is None or low[1] <= 0 or ev.value < self.rule.min_value or ev.value < low[1] * self.factor:
            return []
        # A new rise is measured from here on.
        window.clear()
        window.append((ev.t, ev.value, ref(ev)))
        return [hit(part, [low[2], ref(ev)], ev)]


KIND = RuleKind(KEY, TrendRule, TrendHandler, TrendState)
