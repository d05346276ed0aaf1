"""Rule kind `hotlist`: a read's pseudonymized field (plate) is on a named watch list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from safecity.warning.handlers import EventView, Handler, Hit, RuleState, hit, ref
from safecity.warning.rules import EventNames, Issue, RuleBase, RuleKind, RulePackSpec, When

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

KEY = "hotlist"


class HotlistRule(RuleBase):
    """Fires when a read's pseudonymized field (plate) is on a named watch list."""

    kind: Literal["hotlist"]
    events: EventNames = Field(default_factory=lambda: ["checkpoint"])
    when: When | None = None
    watchlist: str
    field: str = "plate"


@dataclass(eq=False)
class HotlistState(RuleState):
    """Nothing per key: a read either is on the list or not (repeats update the alert through grouping)."""


class HotlistHandler(Handler[HotlistRule, HotlistState]):
    """Looks the read's pseudonym up in the watch list's set."""

    def __init__(self, rule: HotlistRule, engine: Engine, state: HotlistState) -> None:
        super().__init__(rule, engine, state)
        self.match = self.matcher(rule.events, rule.when)
        self.hashes = engine.pack.watchlists.get(rule.watchlist, frozenset())

    def names(self) -> set[str]:
        return set(self.rule.events)

    def on_event(self, ev: EventView) -> list[Hit]:
        value = ev.pseudonyms.get(self.rule.field)
        if value is None or value not in self.hashes or not self.match(ev):
            return []
        # One alert per listed vehicle: repeats of the same plate update it.
        return [hit(f"{self.rule.field}:{value[:16]}", [ref(ev)], ev)]


def check(rule: HotlistRule, at: tuple[Any, ...], spec: RulePackSpec) -> list[Issue]:
    """The watch list exists, holds pseudonyms of the field the rule reads, and is not empty."""
    listed = spec.watchlists.get(rule.watchlist)
    if listed is None:
        known = ", ".join(sorted(spec.watchlists)) or "none in this pack"
        return [((*at, "watchlist"), f"unknown watch list {rule.watchlist!r} ({known})")]
    if listed.field != rule.field:
        return [
            (
                (*at, "field"),
                f"the rule reads field {rule.field!r} but watch list {rule.watchlist!r} holds "
                f"{listed.field!r} pseudonyms: it could never match",
            )
        ]
    if not listed.hashes and not listed.values:
        return [
            (
                ("watchlists", rule.watchlist),
                f"watch list {rule.watchlist!r} is empty: rule {rule.id!r} could never fire",
            )
        ]
    return []


KIND = RuleKind(KEY, HotlistRule, HotlistHandler, HotlistState, check=check)
