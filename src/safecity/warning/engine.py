"""The rule engine: pure, synchronous, no I/O. Events in, firings out.

- Fires on the event that completes a condition; never waits for a window to close.
- One clock model (docs/rules.md, "Which clock decides what"): windows and timers (absence, dwell, hold) are in event
  time. A timer belongs to the source of the event that armed it and fires when that source's watermark passes its
  deadline: the newest event time seen from the source minus `lateness`, run on by the wall clock while nothing
  arrives from the source (silence). `process()` moves the watermark with each event, `due(now)` with the wall clock;
  `next_deadline()` tells the caller (wall time) when to call `due`. A replay fast, in real time or an hour late
  therefore fires the same timers at the same event times, live and in the backtest.
- State is partitioned by key (rule, building / community / device ...), so the engine can later run as several
  workers split by that key. Every per-key window is a bounded deque, and each rule keeps at most `max_keys` keys
  (least recently used evicted, counted).
- `snapshot()` / `Engine.restore()` carry every open window across a restart; state of a rule whose definition
  changed is dropped (counted), since its windows no longer mean the same thing.
- Times are event times (`occurred_at`), as unix seconds internally.
"""

from __future__ import annotations

import hashlib
import heapq
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safecity.kernel import clock, ids
from safecity.kernel.envelope import Envelope
from safecity.sensing.model import Tags
from safecity.warning.fastcel import MISSING, Guard, guard
from safecity.warning.handlers import EngineStats, EventView, Handler, Hit, Keyed, Matcher
from safecity.warning.model import Area, Circle
from safecity.warning.rules import RulePack, rule_kind, schedule_armed

_SNAPSHOT_VERSION = 3  # 3: each rule's state through its kind's state type (2 kept handler attributes apart)
_MAX_CONTRIBUTORS = 50  # distinct devices listed on one open alert
DEFAULT_LATENESS_S = 10.0  # how late an event may arrive behind its source's newest and still hold a timer back
_EMPTY_TAGS = Tags()

__all__ = ["DEFAULT_LATENESS_S", "Engine", "EngineStats", "EventView", "Firing", "fingerprint", "replay"]


@dataclass(slots=True)
class Firing:
    """A rule fired (new alert) or fired again within its grouping window (update of the same alert)."""

    rule: Any
    alert_id: str
    new: bool
    group_key: str
    trigger_event_ids: list[str]
    count: int
    # Every distinct device that joined the open alert, first contribution first: (device id, event id, event time).
    contributors: list[tuple[str, str, datetime]]
    first_at: datetime
    last_at: datetime
    tags: Tags
    area: Area | None
    event: EventView | None  # the completing event; None when a timer fired (absence, dwell, hold)


@dataclass(slots=True)
class _Group:
    alert_id: str
    first_t: float
    last_t: float
    count: int
    fired_t: float
    suppressed: int = 0
    # device id -> (event id, event time) of its first contribution; bounded by _MAX_CONTRIBUTORS.
    members: dict[str, tuple[str, float]] = field(default_factory=dict)


class _Plan:
    """The rules one event name reaches, with the guards that let an event skip most of them unevaluated.

    A rule whose state only an event matching one of its conditions can change (`Handler.gates`) is visited only
    when one of those conditions' guards admits the event; guards shared by several rules are tested once, and each
    field once. A rule with a condition without a guard, or with no condition, is always visited.
    """

    __slots__ = ("_chosen", "_keys", "always", "guards", "handlers", "paths", "reach")

    def __init__(self, name: str, handlers: list[Handler[Any, Any]], *, guards: bool = True) -> None:
        self.handlers = handlers
        self.paths: list[tuple[str, ...]] = []
        self.guards: list[tuple[Guard, int]] = []  # (guard, index of its path)
        self.reach: list[list[int]] = []  # guard -> the handlers it admits
        self.always: list[int] = []  # handlers visited whatever the guards say
        self._keys: dict[Any, int] = {}
        for at, handler in enumerate(handlers):
            gated = self._gate(name, handler.gates()) if guards else None
            if gated is None:
                self.always.append(at)
            else:
                for i in gated:
                    self.reach[i].append(at)
        # Which guards admitted an event -> the handlers it reaches; few combinations occur, so they are kept.
        self._chosen: dict[tuple[int, ...], list[Handler[Any, Any]]] = {}

    def _gate(self, name: str, matchers: list[Matcher] | None) -> list[int] | None:
        """The guards of a handler's gating matchers for events called `name`; None when one has no guard."""
        if not matchers:
            return None
        gated: list[int] = []
        for m in matchers:
            if name not in m.events:
                continue
            g = guard(m.when) if m.program is not None else None
            if g is None:
                return None
            if g.key not in self._keys:
                if g.path not in self.paths:
                    self.paths.append(g.path)
                self._keys[g.key] = len(self.guards)
                self.guards.append((g, self.paths.index(g.path)))
                self.reach.append([])
            gated.append(self._keys[g.key])
        return gated

    def select(self, ev: EventView) -> list[Handler[Any, Any]]:
        """The rules `ev` has to be shown to, in pack order."""
        admitted: tuple[int, ...] = ()
        if self.guards:
            view = ev.cel()
            values = [_walk(view, path) for path in self.paths]
            admitted = tuple([i for i, (g, p) in enumerate(self.guards) if g.admits(values[p])])
        chosen = self._chosen.get(admitted)
        if chosen is None:
            at = set(self.always)
            for i in admitted:
                at.update(self.reach[i])
            chosen = [self.handlers[j] for j in sorted(at)]
            if len(self._chosen) < 4096:
                self._chosen[admitted] = chosen
        return chosen


_NOT_A_MAP = object()  # a value no guard models: it admits the event


def _walk(view: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = view
    for name in path:
        if type(value) is not dict:
            return _NOT_A_MAP  # the condition decides (and counts its error)
        value = value.get(name, MISSING)
        if value is MISSING:
            return MISSING
    return value


def fingerprint(rule: Any) -> str:
    """A digest of a rule's definition: restored state is kept only for unchanged rules."""
    return hashlib.sha256(rule.model_dump_json().encode()).hexdigest()[:16]


class Engine:
    """Evaluates a rule pack over events; pure and synchronous."""

    def __init__(
        self,
        pack: RulePack,
        *,
        now: Callable[[], datetime] = clock.now,
        new_id: Callable[[], str] = ids.new_id,
        max_keys: int = 100_000,
        max_events: int = 1_000,
        lateness: float = 0.0,
        fast_cel: bool = True,
    ) -> None:
        self.pack = pack
        # False: every condition through the CEL library, no closures and no guards (the reference path).
        self.fast_cel = fast_cel
        self.lateness = lateness
        self.now = now
        self.new_id = new_id
        self.max_keys = max_keys
        self.max_events = max_events
        self.stats = EngineStats()
        self.handlers: dict[str, Handler[Any, Any]] = {}
        self.groups: dict[str, Keyed[_Group]] = {}
        self._index: dict[str, list[Handler[Any, Any]]] = {}
        # source -> heap of (deadline, seq, rule id, part); source -> [newest event time, last arrival, watermark].
        self._timers: dict[str, list[tuple[float, int, str, str]]] = {}
        self._clocks: dict[str, list[float]] = {}
        self._source = ""  # the source of the event being processed (its timers are armed there)
        self._seq = 0
        # Set by `restore`: whether the snapshot was of this format and loaded (False: the engine started clean).
        self.snapshot_loaded = False
        for rule in pack.rules:
            kind = rule_kind(rule.kind)
            handler = kind.handler(rule, self, kind.state(Keyed(max_keys, self.stats)))
            handler.seal()
            self.handlers[rule.id] = handler
            self.groups[rule.id] = Keyed(max_keys, self.stats)
            for name in handler.names():
                self._index.setdefault(name, []).append(handler)
        self._plans = {name: _Plan(name, handlers, guards=fast_cel) for name, handlers in self._index.items()}

    @property
    def rules(self) -> list[Any]:
        """The enabled rules."""
        return self.pack.rules

    def names(self) -> set[str]:
        """Every event name some rule reads."""
        return set(self._index)

    def arm(self, handler: Handler[Any, Any], part: str, deadline: float) -> None:
        """Ask for `handler.on_due(part, deadline)` once the current event's source's watermark passes `deadline`.

        A deadline the watermark has passed already (a late event) is not armed: it would fire at once, the old
        fault of delayed data raising an alert on its first event. Counted as `late_timers`.
        """
        clk = self._clocks.get(self._source)
        if clk is not None and deadline <= clk[2]:
            self.stats.late_timers += 1
            return
        self._seq += 1
        heapq.heappush(self._timers.setdefault(self._source, []), (deadline, self._seq, handler.rule.id, part))

    def watermark(self, source: str) -> datetime | None:
        """Event time up to which `source`'s timers have fired (None: nothing seen from it)."""
        clk = self._clocks.get(source)
        return clock.from_epoch(clk[2]) if clk is not None and clk[2] > float("-inf") else None

    def _next_wall(self) -> float:
        """Unix wall time at which `due()` next has something to fire (inf: no timer armed)."""
        best = float("inf")
        for source, heap in self._timers.items():
            if not heap:
                continue
            deadline = heap[0][0]
            newest, arrived, mark = self._clocks[source]
            # The watermark reaches `deadline` when newest + (now - arrived) - lateness >= deadline.
            wall = arrived if deadline <= mark else arrived + deadline + self.lateness - newest
            best = min(best, wall)
        return best

    def next_deadline(self) -> datetime | None:
        """When (wall clock) `due()` should next be called (None: no timer armed)."""
        wall = self._next_wall()
        return clock.from_epoch(wall) if wall != float("inf") else None

    def process(self, event: Envelope | EventView, arrived: float | None = None) -> list[Firing]:
        """Feed one event (arrived at unix time `arrived`, default its `received_at`); return the firings it causes.

        The event first moves its source's watermark, firing that source's timers it passes (event time before the
        event), then goes to the rules; both kinds of firing are returned, in that order.
        """
        ev = event if isinstance(event, EventView) else EventView.from_envelope(event)
        self.stats.events += 1
        source = self._source = ev.source
        at = arrived if arrived is not None else ev.arrived if ev.arrived is not None else ev.t
        clk = self._clocks.get(source)
        if clk is None:
            clk = self._clocks[source] = [ev.t, at, float("-inf")]
        elif ev.t < clk[2]:
            self.stats.behind_watermark += 1
        clk[0] = max(clk[0], ev.t)
        clk[1] = at
        out: list[Firing] = []
        if clk[0] - self.lateness > clk[2]:
            clk[2] = clk[0] - self.lateness
            heap = self._timers.get(source)
            if heap and heap[0][0] <= clk[2]:
                out.extend(self._fire(heap, clk[2]))
        plan = self._plans.get(ev.name)
        if plan is None:
            return out
        for handler in plan.select(ev):
            rule = handler.rule
            if rule.scope is not None and not _in_scope(rule.scope, ev.tags):
                continue
            if rule.schedule is not None and not self._armed(rule, ev.t):
                self.stats.unscheduled += 1
                continue
            hits = handler.on_event(ev)
            if hits:
                self.stats.matched += len(hits)
                out.extend(f for h in hits if (f := self._group(handler, h)) is not None)
        return out

    def due(self, now: datetime | None = None) -> list[Firing]:
        """Run every source's watermark on by the wall time it has been silent, and fire the timers it passes."""
        t = (now or self.now()).timestamp()
        out: list[Firing] = []
        for source, clk in self._clocks.items():
            mark = clk[0] + max(0.0, t - clk[1]) - self.lateness
            clk[2] = max(clk[2], mark)
            heap = self._timers.get(source)
            if heap and heap[0][0] <= clk[2]:
                out.extend(self._fire(heap, clk[2]))
        return out

    def feed(self, ev: EventView) -> list[Firing]:
        """Replay one stored event as the live service sees it: first the silence up to its arrival, then the event."""
        out: list[Firing] = []
        at = ev.arrived if ev.arrived is not None else ev.t
        if self._next_wall() <= at:
            out.extend(self.due(clock.from_epoch(at)))
        out.extend(self.process(ev, at))
        return out

    def _fire(self, heap: list[tuple[float, int, str, str]], mark: float) -> list[Firing]:
        out: list[Firing] = []
        while heap and heap[0][0] <= mark:
            deadline, _, rule_id, part = heapq.heappop(heap)
            handler = self.handlers.get(rule_id)
            if handler is None:
                continue
            rule = handler.rule
            if rule.schedule is not None and not self._armed(rule, deadline):
                # Disarmed at the deadline: consume the timer so it does not fire later.
                handler.on_due(part, deadline)
                self.stats.unscheduled += 1
                continue
            for hit in handler.on_due(part, deadline):
                self.stats.matched += 1
                firing = self._group(handler, hit)
                if firing is not None:
                    out.append(firing)
        return out

    def _armed(self, rule: Any, t: float) -> bool:
        schedule = rule.schedule
        holidays = self.pack.calendars.get(schedule.calendar, frozenset()) if schedule.calendar else frozenset()
        return schedule_armed(schedule, clock.from_epoch(t), holidays)

    def _group(self, handler: Handler[Any, Any], hit: Hit) -> Firing | None:
        """Raise a new alert for a hit, or update the group's open one; None when the hit is suppressed.

        An open alert (a firing of the same group within `group_window`) is always updated, and the devices that
        joined it are added to its contributors: `cooldown` only holds back a *new* alert after the last firing.
        """
        rule = handler.rule
        for other in rule.suppressed_by:
            og = self.groups.get(other)
            ohandler = self.handlers.get(other)
            if og is None or ohandler is None:
                continue
            g_other = og.get(hit.part)
            if g_other is not None and hit.t - g_other.last_t <= ohandler.rule.group_window:
                self.stats.suppress(rule.id, "suppressed_by")
                return None
        groups = self.groups[rule.id]
        g: _Group | None = groups.get(hit.part)
        if g is not None and 0 <= hit.t - g.last_t <= rule.group_window:
            g.count += 1
            g.last_t = max(g.last_t, hit.t)
            g.fired_t = hit.t
            groups.move_to_end(hit.part)
            new = False
            self.stats.updated += 1
        elif g is not None and rule.cooldown > 0 and abs(hit.t - g.fired_t) < rule.cooldown:
            g.suppressed += 1
            self.stats.suppress(rule.id, "cooldown")
            return None
        else:
            g = _Group(self.new_id(), hit.t, hit.t, 1, hit.t)
            groups.put(hit.part, g)
            new = True
            self.stats.fired += 1
        members = g.members
        for event_id, device_id, t in hit.refs:
            if device_id not in members and len(members) < _MAX_CONTRIBUTORS:
                members[device_id] = (event_id, t)
        area = handler.area or _circle(rule, hit)
        return Firing(
            rule=rule,
            alert_id=g.alert_id,
            new=new,
            group_key=f"{rule.id}:{hit.part}",
            trigger_event_ids=[ref[0] for ref in hit.refs],
            count=g.count,
            first_at=clock.from_epoch(g.first_t),
            last_at=clock.from_epoch(g.last_t),
            contributors=[(d, e, clock.from_epoch(t)) for d, (e, t) in members.items()],
            tags=hit.tags or _EMPTY_TAGS,
            area=area,
            event=hit.event,
        )

    # --- snapshot ---------------------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Serialize every open window, group and timer (the engine's own file; restore only what it wrote)."""
        doc = {
            "version": _SNAPSHOT_VERSION,
            "rules": {
                rid: {
                    "fp": fingerprint(h.rule),
                    "kind": h.rule.kind,
                    "state": h.state.dump(),
                    "groups": list(self.groups[rid].items()),
                }
                for rid, h in self.handlers.items()
            },
            "timers": self._timers,
            "clocks": self._clocks,
            "seq": self._seq,
        }
        return pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, pack: RulePack, data: bytes, **kwargs: Any) -> Engine:
        """Build an engine for `pack` and load a snapshot's state for every rule whose definition is unchanged.

        A snapshot of another format (an older version) is not loaded: the engine starts clean, and the service
        rebuilds the open windows from stored events as it does without a snapshot.
        """
        engine = cls(pack, **kwargs)
        engine.snapshot_loaded = False
        # The engine's own snapshot file, never input from outside.
        doc = pickle.loads(data)
        if doc.get("version") != _SNAPSHOT_VERSION:
            return engine
        engine.snapshot_loaded = True
        kept: set[str] = set()
        for rid, saved in doc["rules"].items():
            handler = engine.handlers.get(rid)
            if (
                handler is None
                or saved["fp"] != fingerprint(handler.rule)
                or saved["kind"] != handler.rule.kind
                or not handler.state.load(saved["state"])
            ):
                engine.stats.dropped_rules += 1
                continue
            engine.groups[rid].update(saved["groups"])
            kept.add(rid)
            engine.stats.restored_rules += 1
        for source, heap in doc["timers"].items():
            engine._timers[source] = [t for t in heap if t[2] in kept]
            heapq.heapify(engine._timers[source])
        engine._clocks = doc["clocks"]
        engine._seq = doc["seq"]
        return engine

    def open_windows(self) -> int:
        """How many keys hold window state, over all rules."""
        return sum(len(h.state.parts) for h in self.handlers.values())


def _in_scope(scope: Any, tags: Tags) -> bool:
    if scope.towns is not None and tags.town not in scope.towns:
        return False
    if scope.communities is not None and tags.community not in scope.communities:
        return False
    return scope.buildings is None or tags.building in scope.buildings


def _circle(rule: Any, hit: Hit) -> Area | None:
    if hit.lon is None or hit.lat is None:
        return None
    t = hit.tags
    where = t.building or t.community or t.town or t.district or hit.part
    return Area(description=where, circle=Circle(lon=hit.lon, lat=hit.lat, radius_m=rule.radius_m))


def replay(engine: Engine, events: Iterable[EventView]) -> list[Firing]:
    """Feed stored events in arrival order as the live service saw them (backtests, rebuilding state)."""
    out: list[Firing] = []
    for ev in events:
        out.extend(engine.feed(ev))
    return out
