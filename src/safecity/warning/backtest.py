"""Backtest: run a rule pack over stored events and report what would have fired, and how often."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from safecity.kernel import clock
from safecity.kernel.settings import DEV_PSEUDONYM_KEY
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.store.events import EventRepo
from safecity.warning.engine import DEFAULT_LATENESS_S, Engine, EventView, Firing
from safecity.warning.kinds.hotlist import HotlistRule
from safecity.warning.rules import RulePack

# Any value does: the development key's pseudonym of it tells whether a pseudonymizer uses that key.
_PROBE = ("plate", "key-probe")
_DEV_PROBE = Pseudonymizer(DEV_PSEUDONYM_KEY.encode())(*_PROBE)


@dataclass
class Example:
    """One alert a rule would have raised: its group, when, and the events that triggered it."""

    group_key: str
    at: datetime
    trigger_event_ids: list[str]


@dataclass
class RuleOutcome:
    """What one rule would have done."""

    rule_id: str
    raised: int = 0
    updated: int = 0
    # Matches that raised no alert: {"cooldown": n, "suppressed_by": n}.
    suppressed: dict[str, int] = field(default_factory=dict)
    first_at: datetime | None = None
    last_at: datetime | None = None
    examples: list[Example] = field(default_factory=list)


@dataclass
class KeyCheck:
    """Whether the watch lists could match the stored reads: a backtest under another pseudonym key matches none."""

    dev_key: bool = False
    reads: int = 0  # replayed events that carry the pseudonym a hotlist rule reads
    listed: int = 0  # of those, the ones on the rule's watch list (under the key in use)

    @property
    def warning(self) -> str | None:
        """A loud explanation when the development key is in use and no stored read matched a watch list."""
        if not self.dev_key or self.reads == 0 or self.listed > 0:
            return None
        return (
            f"This backtest pseudonymizes watch lists with the DEVELOPMENT pseudonym key, and none of the "
            f"{self.reads} stored reads matched a watch list. If the node runs with its own key (it should), its "
            "stored pseudonyms cannot match: hotlist results here are meaningless. Run with the node's settings "
            "(its SAFECITY_SECURITY__PSEUDONYM_KEY)."
        )


@dataclass
class BacktestReport:
    """The outcome of a backtest."""

    since: datetime
    until: datetime
    events: int = 0
    rules: dict[str, RuleOutcome] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    key: KeyCheck = field(default_factory=KeyCheck)

    @property
    def raised(self) -> int:
        """New alerts over all rules."""
        return sum(r.raised for r in self.rules.values())

    @property
    def updated(self) -> int:
        """Updates of open alerts over all rules."""
        return sum(r.updated for r in self.rules.values())


async def stored_events(
    repo: EventRepo, since: datetime, until: datetime, *, batch: int = 5_000
) -> AsyncIterator[EventView]:
    """Yield stored events with since <= occurred_at < until, in id (arrival) order, page by page."""
    after: str | None = None
    while True:
        rows = await repo.list(since=since, until=until, limit=batch, after_id=after, order="asc")
        for row in rows:
            yield EventView.from_row(row)
        if len(rows) < batch:
            return
        after = str(rows[-1]["id"])


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """Turn "24h", "90m", "7d" (ago) or an ISO 8601 instant into an aware datetime."""
    from safecity.warning.rules import parse_duration

    try:
        return (now or clock.now()) - timedelta(seconds=parse_duration(text))
    except ValueError:
        return clock.ensure_aware(datetime.fromisoformat(text))


def _record(report: BacktestReport, firings: list[Firing]) -> None:
    for f in firings:
        out = report.rules[f.rule.id]
        if f.new:
            out.raised += 1
            if len(out.examples) < 5:
                out.examples.append(Example(f.group_key, f.last_at, list(f.trigger_event_ids)))
        else:
            out.updated += 1
        out.first_at = out.first_at or f.last_at
        out.last_at = f.last_at


def _hotlists(pack: RulePack) -> dict[str, list[tuple[str, frozenset[str]]]]:
    """By event name: the (field, watch list pseudonyms) of each hotlist rule reading it."""
    out: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for rule in pack.rules:
        if isinstance(rule, HotlistRule):
            for name in rule.events:
                out.setdefault(name, []).append((rule.field, pack.watchlists.get(rule.watchlist, frozenset())))
    return out


def _check_read(key: KeyCheck, hotlists: dict[str, list[tuple[str, frozenset[str]]]], ev: EventView) -> None:
    for name, hashes in hotlists.get(ev.name, ()):
        value = ev.pseudonyms.get(name)
        if value is not None:
            key.reads += 1
            key.listed += value in hashes


async def backtest_firings(
    pack: RulePack,
    repo: EventRepo,
    since: datetime,
    until: datetime,
    *,
    batch: int = 5_000,
    lateness_s: float = DEFAULT_LATENESS_S,
    engine: Engine | None = None,
    on_event: Callable[[EventView], None] | None = None,
) -> AsyncIterator[Firing]:
    """Every firing a fresh engine makes over the stored events, with the live service's clock model.

    Events go in arrival order, each at its stored `received_at` (`Engine.feed`): timers fire when their source's
    watermark passes them, by newer events or by the silence that followed, as they did live; at the end the
    silence runs on to `until`. `on_event` sees each event before the engine does.
    """
    counter = iter(range(1, 1 << 62))
    engine = engine or Engine(pack, now=lambda: until, new_id=lambda: f"backtest-{next(counter)}", lateness=lateness_s)
    async for ev in stored_events(repo, since, until, batch=batch):
        if on_event is not None:
            on_event(ev)
        for firing in engine.feed(ev):
            yield firing
    for firing in engine.due(until):
        yield firing


async def backtest(
    pack: RulePack,
    repo: EventRepo,
    since: datetime,
    until: datetime | None = None,
    *,
    pseudonymize: Callable[[str, str], str] | None = None,
    batch: int = 5_000,
    lateness_s: float = DEFAULT_LATENESS_S,
) -> BacktestReport:
    """Replay stored events through a fresh engine and count what each rule would have done.

    `pseudonymize` is the one the pack's watch lists were hashed with (the settings' key): a backtest under the
    development key whose watch lists match no stored read says so in `report.key.warning`.
    """
    until = until or clock.now()
    counter = iter(range(1, 1 << 62))
    engine = Engine(pack, now=lambda: until, new_id=lambda: f"backtest-{next(counter)}", lateness=lateness_s)
    report = BacktestReport(since=since, until=until, rules={r.id: RuleOutcome(r.id) for r in pack.rules})
    report.key.dev_key = pseudonymize is not None and pseudonymize(*_PROBE) == _DEV_PROBE
    hotlists = _hotlists(pack)
    check = (lambda ev: _check_read(report.key, hotlists, ev)) if hotlists else None
    async for firing in backtest_firings(pack, repo, since, until, batch=batch, engine=engine, on_event=check):
        _record(report, [firing])
    report.events = engine.stats.events
    report.engine = dict(engine.stats.__dict__)
    for rule_id, reasons in engine.stats.suppressed_by_rule.items():
        if rule_id in report.rules:
            report.rules[rule_id].suppressed = dict(reasons)
    return report
