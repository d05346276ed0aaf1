"""Rule kind `correlation`: every clause satisfied by events of one group within a window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from safecity.warning.handlers import EventView, Handler, Hit, Matcher, RuleState, hit, part_of, ref
from safecity.warning.rules import Clause, RuleBase, RuleKind, Window

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

KEY = "correlation"


class CorrelationRule(RuleBase):
    """Fires when every clause is satisfied by events of one group (building, community...) within `within`."""

    kind: Literal["correlation"]
    require: list[Clause] = Field(min_length=1)
    within: Window


@dataclass(eq=False)
class CorrelationState(RuleState):
    """Per key: one slot a clause (a deque of (time, event), or device -> (time, event) for `distinct: device`).

    `hw` is the newest matching event time seen (high water): an event older than the window behind it is late.
    """

    hw: float = float("-inf")


class CorrelationHandler(Handler[CorrelationRule, CorrelationState]):
    """Keeps each clause's recent matches per group and fires when all clauses are met around the newest event."""

    def __init__(self, rule: CorrelationRule, engine: Engine, state: CorrelationState) -> None:
        super().__init__(rule, engine, state)
        self.clauses = [(self.matcher(c.events, c.when), c) for c in rule.require]

    def names(self) -> set[str]:
        return {n for c in self.rule.require for n in c.events}

    def gates(self) -> list[Matcher] | None:
        return [m for m, _ in self.clauses]

    def on_event(self, ev: EventView) -> list[Hit]:
        within = self.rule.within
        matched = [i for i, (m, _) in enumerate(self.clauses) if m(ev)]
        if not matched:
            return []
        state = self.state
        state.hw = max(state.hw, ev.t)
        if state.hw - ev.t > within:
            # Older than the window behind the newest event seen: it can pair with nothing still held.
            self.stats.late += 1
            return []
        part = part_of(self.rule, ev)
        if part.startswith("device:") and self.rule.group_by != "device":
            return []
        st: list[Any] = state.parts.touch(part, lambda: [{} if c.distinct else self.bounded() for _, c in self.clauses])
        hw = state.hw
        for i in matched:
            slot = st[i]
            if isinstance(slot, dict):
                for dev in [d for d, (t, _) in slot.items() if hw - t > within]:
                    del slot[dev]
                seen = slot.get(ev.device_id)
                if seen is None or ev.t > seen[0]:
                    if seen is None and len(slot) >= self.engine.max_events:
                        self.stats.window_overflow += 1
                    else:
                        slot[ev.device_id] = (ev.t, ref(ev))
            else:
                while slot and hw - slot[0][0] > within:
                    slot.popleft()
                if len(slot) == slot.maxlen:
                    self.stats.window_overflow += 1
                slot.append((ev.t, ref(ev)))
        ids_: list[tuple[str, str, float]] = []
        for i, (_, clause) in enumerate(self.clauses):
            slot = st[i]
            if isinstance(slot, dict):
                near = [r for dev, (t, r) in slot.items() if dev != ev.device_id and abs(ev.t - t) <= within]
                n = len(near) + (1 if i in matched else 0)
            else:
                near = [r for t, r in slot if abs(ev.t - t) <= within and r[0] != ev.id]
                n = len(near) + (1 if i in matched else 0)
            if n < clause.count:
                return []
            ids_.extend(near)
        ids_.append(ref(ev))
        return [hit(part, ids_, ev)]


KIND = RuleKind(KEY, CorrelationRule, CorrelationHandler, CorrelationState)
