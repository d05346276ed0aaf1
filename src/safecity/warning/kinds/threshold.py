"""Rule kind `threshold`: a matching event fires; or the N-th within a window; or a condition held for a time."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from safecity.warning.handlers import (
    MAX_TRIGGER_IDS,
    EventView,
    Handler,
    Hit,
    Matcher,
    RuleState,
    hit,
    part_of,
    ref,
)
from safecity.warning.rules import EventNames, RuleBase, RuleKind, When, Window

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

KEY = "threshold"


class ThresholdRule(RuleBase):
    """Fires when matching events repeat `count` times within `within`, or keep matching for `hold`."""

    kind: Literal["threshold"]
    events: EventNames
    when: When | None = None
    count: int = Field(1, ge=1, le=10_000)
    within: Window | None = None
    hold: Window | None = None

    @model_validator(mode="after")
    def _window(self) -> ThresholdRule:
        if self.count > 1 and self.within is None:
            raise ValueError("windows must be bounded: a repeat count needs `within`")
        return self


@dataclass(eq=False)
class ThresholdState(RuleState):
    """Per key: a deque of (time, event) of the last `count` matches, or, with `hold`, since when it has held."""


class ThresholdHandler(Handler[ThresholdRule, ThresholdState]):
    """Counts matches in a window, or times how long the condition has held (a timer fires at `hold`)."""

    def __init__(self, rule: ThresholdRule, engine: Engine, state: ThresholdState) -> None:
        super().__init__(rule, engine, state)
        self.match = self.matcher(rule.events, rule.when)

    def names(self) -> set[str]:
        return set(self.rule.events)

    def gates(self) -> list[Matcher] | None:
        # A held condition is reset by every event that does not match it.
        return [self.match] if self.rule.hold is None else None

    def on_event(self, ev: EventView) -> list[Hit]:
        rule = self.rule
        ok = self.match(ev)
        part = part_of(rule, ev)
        parts = self.state.parts
        if rule.hold is not None:
            st = parts.get(part) if not ok else parts.touch(part, lambda: {"since": None})
            if st is None:
                return []
            if not ok:
                st["since"] = None
                return []
            if st["since"] is None:
                st.update(since=ev.t, ids=[ref(ev)], fired=False, tags=ev.tags, lon=ev.lon, lat=ev.lat)
                self.engine.arm(self, part, ev.t + rule.hold)
                return []
            st["ids"] = [*st["ids"][-(MAX_TRIGGER_IDS - 1) :], ref(ev)]
            if not st["fired"] and ev.t - st["since"] >= rule.hold:
                st["fired"] = True
                return [hit(part, st["ids"], ev)]
            return []
        if not ok:
            return []
        if rule.count == 1:
            return [hit(part, [ref(ev)], ev)]
        window: deque[tuple[float, tuple[str, str, float]]] = parts.touch(part, lambda: deque(maxlen=rule.count))
        window.append((ev.t, ref(ev)))
        assert rule.within is not None
        if len(window) == rule.count and window[-1][0] - window[0][0] <= rule.within:
            ids_ = [r for _, r in window]
            window.clear()
            return [hit(part, ids_, ev)]
        return []

    def on_due(self, part: str, deadline: float) -> list[Hit]:
        st = self.state.parts.get(part)
        if st is None or st.get("since") is None or st["fired"]:
            return []
        assert self.rule.hold is not None
        if st["since"] + self.rule.hold != deadline:
            return []
        st["fired"] = True
        return [Hit(part, st["ids"], deadline, st["tags"], st["lon"], st["lat"], None)]


KIND = RuleKind(KEY, ThresholdRule, ThresholdHandler, ThresholdState)
