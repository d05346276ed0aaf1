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
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import shapely
from shapely.geometry import Polygon

from safecity.kernel import clock, ids
from safecity.kernel.envelope import Envelope
from safecity.sensing.model import DeviceOffline, SensorEvent, Tags
from safecity.warning.fastcel import ERROR, MISSING, Error, Guard, compile_fast, guard
from safecity.warning.model import Area, Circle
from safecity.warning.rules import (
    AbsenceRule,
    Condition,
    CorrelationRule,
    GeofenceRule,
    HotlistRule,
    RulePack,
    SequenceRule,
    ThresholdRule,
    TrendRule,
    compile_condition,
    schedule_armed,
)

_SNAPSHOT_VERSION = 2
_MAX_TRIGGER_IDS = 20
_MAX_CONTRIBUTORS = 50  # distinct devices listed on one open alert
DEFAULT_LATENESS_S = 10.0  # how late an event may arrive behind its source's newest and still hold a timer back
_EMPTY_TAGS = Tags()


@dataclass(slots=True)
class EventView:
    """What the engine sees of one event: a bus envelope or a stored row, flattened."""

    id: str
    name: str
    t: float
    device_id: str
    tags: Tags
    lon: float | None = None
    lat: float | None = None
    value: float | None = None
    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    pseudonyms: dict[str, str] = field(default_factory=dict)
    source: str = ""
    hops: dict[str, datetime] = field(default_factory=dict)
    correlation_id: str | None = None
    arrived: float | None = None  # when it reached this node (unix seconds): the wall clock of its source's silence
    _cel: dict[str, Any] | None = None
    # Condition results of this event by expression text: rules sharing a condition evaluate it once.
    _memo: dict[str, Any] | None = None

    @classmethod
    def from_envelope(cls, env: Envelope) -> EventView:
        """View of a bus message (`event.<kind>` with a SensorEvent, or `device.offline`)."""
        p = env.payload
        name = env.key[6:] if env.key.startswith("event.") else env.key
        hops = {"occurred": env.occurred_at, "received": env.received_at, **env.hops}
        if isinstance(p, SensorEvent):
            return cls(
                env.id, name, env.occurred_at.timestamp(), p.device_id, p.tags, p.lon, p.lat, p.value, p.state,
                p.data, p.pseudonyms, env.source, hops, env.context.correlation_id, env.received_at.timestamp(),
            )  # fmt: skip
        if isinstance(p, DeviceOffline):
            return cls(
                env.id, name, env.occurred_at.timestamp(), p.device_id, p.tags, state="offline",
                data={"device_kind": str(p.kind)}, source=env.source, hops=hops,
                correlation_id=env.context.correlation_id, arrived=env.received_at.timestamp(),
            )  # fmt: skip
        raise TypeError(f"the engine does not read {env.key!r} messages")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EventView:
        """View of a row of the `events` table (for backtests and rebuilding state)."""
        tags = Tags(
            district=row.get("district"),
            town=row.get("town"),
            community=row.get("community"),
            building=row.get("building"),
            device_kind=row.get("device_kind"),
        )
        key = str(row["key"])
        occurred: datetime = row["occurred_at"]
        received: datetime | None = row.get("received_at")
        return cls(
            str(row["id"]), key[6:] if key.startswith("event.") else key, occurred.timestamp(), str(row["device_id"]),
            tags, row.get("lon"), row.get("lat"), row.get("value"), row.get("state"), row.get("data") or {},
            row.get("pseudonyms") or {}, str(row.get("source") or ""), {"occurred": occurred},
            row.get("correlation_id"), received.timestamp() if received is not None else None,
        )  # fmt: skip

    def cel(self) -> dict[str, Any]:
        """The dict CEL conditions are evaluated against (built once per event, only when a condition needs it)."""
        if self._cel is None:
            t = self.tags
            self._cel = {
                "kind": self.name,
                "key": self.name,
                "device_id": self.device_id,
                "value": self.value,
                "state": self.state,
                "data": self.data,
                "tags": {
                    "district": t.district or "",
                    "town": t.town or "",
                    "community": t.community or "",
                    "building": t.building or "",
                    "device_kind": t.device_kind or "",
                },
                "pseudonyms": self.pseudonyms,
                "lon": self.lon,
                "lat": self.lat,
                "source": self.source,
            }
        return self._cel


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


@dataclass
class EngineStats:
    """Counters of one engine (exported by the service)."""

    events: int = 0
    behind_watermark: int = 0
    late_timers: int = 0
    matched: int = 0
    fired: int = 0
    updated: int = 0
    suppressed: int = 0
    unscheduled: int = 0
    late: int = 0
    evicted_keys: int = 0
    window_overflow: int = 0
    condition_errors: int = 0
    restored_rules: int = 0
    dropped_rules: int = 0
    # rule id -> reason ("cooldown" | "suppressed_by") -> matches that raised no alert (summed in `suppressed`).
    suppressed_by_rule: dict[str, dict[str, int]] = field(default_factory=dict)

    def suppress(self, rule_id: str, reason: str) -> None:
        """Count one suppressed match of a rule."""
        self.suppressed += 1
        per_rule = self.suppressed_by_rule.setdefault(rule_id, {})
        per_rule[reason] = per_rule.get(reason, 0) + 1


@dataclass(slots=True)
class _Hit:
    part: str  # partition value (building, device ...)
    refs: list[tuple[str, str, float]]  # (event id, device id, event time) of the events behind the hit
    t: float
    tags: Tags
    lon: float | None
    lat: float | None
    event: EventView | None


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


class _Keyed(OrderedDict[str, Any]):
    """Per-key state with LRU eviction at `max_keys` (evictions counted)."""

    def __init__(self, max_keys: int, stats: EngineStats) -> None:
        super().__init__()
        self.max_keys = max_keys
        self.stats = stats

    def touch(self, key: str, make: Callable[[], Any]) -> Any:
        """Return the state of `key`, creating it, and mark it most recently used."""
        state = self.get(key)
        if state is None:
            state = self[key] = make()
            if len(self) > self.max_keys:
                self.popitem(last=False)
                self.stats.evicted_keys += 1
        else:
            self.move_to_end(key)
        return state

    def put(self, key: str, value: Any) -> None:
        """Set the state of `key` as most recently used."""
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.max_keys:
            self.popitem(last=False)
            self.stats.evicted_keys += 1

    def __reduce__(self) -> Any:
        # Pickle as a plain ordered list of items; stats are re-attached on restore.
        return (_rebuild_keyed, (self.max_keys, list(self.items())))


def _rebuild_keyed(max_keys: int, items: list[tuple[str, Any]]) -> _Keyed:
    keyed = _Keyed(max_keys, EngineStats())
    keyed.update(items)
    return keyed


class _Matcher:
    """Event names plus a compiled condition; evaluation errors (null fields, wrong types) count as no match.

    The common subset of CEL runs as Python closures (`fastcel`); anything else goes to the CEL library. CEL converts
    the whole context on every call, so it gets only the variables a condition names, and of a map (`data`, `tags`,
    `pseudonyms`) only the fields it reads when it only reads fields (8x faster than the full view). Results are
    memoized on the event by expression text, so a condition shared by several rules is evaluated once an event.
    """

    __slots__ = ("events", "fast", "program", "stats", "vars", "when")

    def __init__(self, events: Iterable[str], when: str | None, stats: EngineStats) -> None:
        self.events = frozenset(events)
        self.when = when or ""
        self.program: Any = compile_condition(when) if when else None
        self.fast = compile_fast(when) if when else None
        self.stats = stats
        self.vars: list[tuple[str, tuple[str, ...] | None]] = []
        if when and self.program is not None:
            for var in self.program.variables():
                fields = re.findall(rf"\b{var}\.([A-Za-z_][A-Za-z0-9_]*)", when)
                bare = len(re.findall(rf"\b{var}\b", when)) != len(fields)
                self.vars.append((var, None if bare or not fields else tuple(dict.fromkeys(fields))))

    def __call__(self, ev: EventView) -> bool:
        if ev.name not in self.events:
            return False
        if self.program is None:
            return True
        memo = ev._memo
        if memo is None:
            memo = ev._memo = {}
        result = memo.get(self.when)
        if result is None:
            fast = self.fast
            if fast is not None:
                result = fast(ev._cel if ev._cel is not None else ev.cel())
            if result is None:
                result = self.evaluate(ev)
            memo[self.when] = result
        if result is True:
            return True
        if result is ERROR:
            self.stats.condition_errors += 1
        return False

    def evaluate(self, ev: EventView) -> bool | Error:
        """The condition's value for `ev` (no memo): True, False, or `ERROR` where CEL cannot evaluate it."""
        if self.fast is not None:
            result = self.fast(ev.cel())
            if result is not None:
                return result
        view = ev.cel()
        ctx: dict[str, Any] = {}
        for var, fields in self.vars:
            value = view[var]
            if fields is not None and isinstance(value, dict):
                value = {f: value[f] for f in fields if f in value}
            ctx[var] = value
        try:
            return self.program.execute(ctx) is True
        except (TypeError, RuntimeError, ValueError, LookupError, ArithmeticError):
            # A missing map key raises KeyError and int() of a huge double OverflowError: both are CEL errors.
            return ERROR


class _Plan:
    """The rules one event name reaches, with the guards that let an event skip most of them unevaluated.

    A rule whose state only an event matching one of its conditions can change (`_Handler.gates`) is visited only
    when one of those conditions' guards admits the event; guards shared by several rules are tested once, and each
    field once. A rule with a condition without a guard, or with no condition, is always visited.
    """

    __slots__ = ("_chosen", "_keys", "always", "guards", "handlers", "paths", "reach")

    def __init__(self, name: str, handlers: list[_Handler]) -> None:
        self.handlers = handlers
        self.paths: list[tuple[str, ...]] = []
        self.guards: list[tuple[Guard, int]] = []  # (guard, index of its path)
        self.reach: list[list[int]] = []  # guard -> the handlers it admits
        self.always: list[int] = []  # handlers visited whatever the guards say
        self._keys: dict[Any, int] = {}
        for at, handler in enumerate(handlers):
            gated = self._gate(name, handler.gates())
            if gated is None:
                self.always.append(at)
            else:
                for i in gated:
                    self.reach[i].append(at)
        # Which guards admitted an event -> the handlers it reaches; few combinations occur, so they are kept.
        self._chosen: dict[tuple[int, ...], list[_Handler]] = {}

    def _gate(self, name: str, matchers: list[_Matcher] | None) -> list[int] | None:
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

    def select(self, ev: EventView) -> list[_Handler]:
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


def _part(rule: Any, ev: EventView) -> str:
    by = rule.group_by
    if by == "device":
        return ev.device_id
    if by == "global":
        return "*"
    value = getattr(ev.tags, by)
    return value if value is not None else f"device:{ev.device_id}"


def _ref(ev: EventView) -> tuple[str, str, float]:
    return (ev.id, ev.device_id, ev.t)


def _hit(part: str, refs: list[tuple[str, str, float]], ev: EventView) -> _Hit:
    return _Hit(part, refs[-_MAX_TRIGGER_IDS:], ev.t, ev.tags, ev.lon, ev.lat, ev)


class _Handler:
    """Window logic of one rule kind; `state` holds per-key state, `timers` asks the engine for wake-ups."""

    def __init__(self, rule: Any, engine: Engine) -> None:
        self.rule = rule
        self.engine = engine
        self.stats = engine.stats
        self.state = _Keyed(engine.max_keys, engine.stats)

    def names(self) -> set[str]:
        """Event names this rule reads."""
        raise NotImplementedError

    def gates(self) -> list[_Matcher] | None:
        """Matchers of which one must match an event for it to change this rule's state; None: every event may."""
        return None

    def on_event(self, ev: EventView) -> list[_Hit]:
        """Feed one event; return the hits it completes."""
        raise NotImplementedError

    def on_due(self, part: str, deadline: float) -> list[_Hit]:
        """A timer set by this handler came due."""
        return []

    def bounded(self, maxlen: int | None = None) -> deque[Any]:
        """A window deque bounded by the engine's per-window cap."""
        return deque(maxlen=maxlen or self.engine.max_events)


class _Threshold(_Handler):
    rule: ThresholdRule

    def __init__(self, rule: ThresholdRule, engine: Engine) -> None:
        super().__init__(rule, engine)
        self.match = _Matcher(rule.events, rule.when, engine.stats)

    def names(self) -> set[str]:
        return set(self.rule.events)

    def gates(self) -> list[_Matcher] | None:
        # A held condition is reset by every event that does not match it.
        return [self.match] if self.rule.hold is None else None

    def on_event(self, ev: EventView) -> list[_Hit]:
        rule = self.rule
        ok = self.match(ev)
        part = _part(rule, ev)
        if rule.hold is not None:
            st = self.state.get(part) if not ok else self.state.touch(part, lambda: {"since": None})
            if st is None:
                return []
            if not ok:
                st["since"] = None
                return []
            if st["since"] is None:
                st.update(since=ev.t, ids=[_ref(ev)], fired=False, tags=ev.tags, lon=ev.lon, lat=ev.lat)
                self.engine.arm(self, part, ev.t + rule.hold)
                return []
            st["ids"] = [*st["ids"][-(_MAX_TRIGGER_IDS - 1) :], _ref(ev)]
            if not st["fired"] and ev.t - st["since"] >= rule.hold:
                st["fired"] = True
                return [_hit(part, st["ids"], ev)]
            return []
        if not ok:
            return []
        if rule.count == 1:
            return [_hit(part, [_ref(ev)], ev)]
        window: deque[tuple[float, tuple[str, str, float]]] = self.state.touch(part, lambda: deque(maxlen=rule.count))
        window.append((ev.t, _ref(ev)))
        assert rule.within is not None
        if len(window) == rule.count and window[-1][0] - window[0][0] <= rule.within:
            ids_ = [r for _, r in window]
            window.clear()
            return [_hit(part, ids_, ev)]
        return []

    def on_due(self, part: str, deadline: float) -> list[_Hit]:
        st = self.state.get(part)
        if st is None or st.get("since") is None or st["fired"]:
            return []
        assert self.rule.hold is not None
        if st["since"] + self.rule.hold != deadline:
            return []
        st["fired"] = True
        return [_Hit(part, st["ids"], deadline, st["tags"], st["lon"], st["lat"], None)]


class _Correlation(_Handler):
    rule: CorrelationRule

    def __init__(self, rule: CorrelationRule, engine: Engine) -> None:
        super().__init__(rule, engine)
        self.clauses = [(_Matcher(c.events, c.when, engine.stats), c) for c in rule.require]
        self.hw = float("-inf")

    def names(self) -> set[str]:
        return {n for c in self.rule.require for n in c.events}

    def gates(self) -> list[_Matcher] | None:
        return [m for m, _ in self.clauses]

    def on_event(self, ev: EventView) -> list[_Hit]:
        within = self.rule.within
        matched = [i for i, (m, _) in enumerate(self.clauses) if m(ev)]
        if not matched:
            return []
        self.hw = max(self.hw, ev.t)
        if self.hw - ev.t > within:
            # Older than the window behind the newest event seen: it can pair with nothing still held.
            self.stats.late += 1
            return []
        part = _part(self.rule, ev)
        if part.startswith("device:") and self.rule.group_by != "device":
            return []
        st: list[Any] = self.state.touch(part, lambda: [{} if c.distinct else self.bounded() for _, c in self.clauses])
        hw = self.hw
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
                        slot[ev.device_id] = (ev.t, _ref(ev))
            else:
                while slot and hw - slot[0][0] > within:
                    slot.popleft()
                if len(slot) == slot.maxlen:
                    self.stats.window_overflow += 1
                slot.append((ev.t, _ref(ev)))
        ids_: list[tuple[str, str, float]] = []
        for i, (_, clause) in enumerate(self.clauses):
            slot = st[i]
            if isinstance(slot, dict):
                near = [ref for dev, (t, ref) in slot.items() if dev != ev.device_id and abs(ev.t - t) <= within]
                n = len(near) + (1 if i in matched else 0)
            else:
                near = [ref for t, ref in slot if abs(ev.t - t) <= within and ref[0] != ev.id]
                n = len(near) + (1 if i in matched else 0)
            if n < clause.count:
                return []
            ids_.extend(near)
        ids_.append(_ref(ev))
        return [_hit(part, ids_, ev)]


class _Absence(_Handler):
    rule: AbsenceRule

    def __init__(self, rule: AbsenceRule, engine: Engine) -> None:
        super().__init__(rule, engine)
        self.expect = _Matcher(rule.expect.events, rule.expect.when, engine.stats)
        self.after = _Matcher(rule.after.events, rule.after.when, engine.stats) if rule.after else None

    def names(self) -> set[str]:
        return set(self.rule.expect.events) | (set(self.rule.after.events) if self.rule.after else set())

    def gates(self) -> list[_Matcher] | None:
        return [self.expect] if self.after is None else [self.expect, self.after]

    def on_event(self, ev: EventView) -> list[_Hit]:
        part = _part(self.rule, ev)
        if self.expect(ev):
            if self.after is not None:
                st = self.state.get(part)
                if st is not None:
                    st["deadline"] = None
                return []
            self._arm(part, ev)
        elif self.after is not None and self.after(ev):
            st = self.state.get(part)
            if st is None or st.get("deadline") is None:
                self._arm(part, ev)
        return []

    def _arm(self, part: str, ev: EventView) -> None:
        deadline = ev.t + self.rule.within
        st = self.state.touch(part, dict)
        st.update(deadline=deadline, ids=[_ref(ev)], tags=ev.tags, lon=ev.lon, lat=ev.lat)
        self.engine.arm(self, part, deadline)

    def on_due(self, part: str, deadline: float) -> list[_Hit]:
        st = self.state.get(part)
        if st is None or st.get("deadline") != deadline:
            return []
        st["deadline"] = None
        return [_Hit(part, st["ids"], deadline, st["tags"], st["lon"], st["lat"], None)]


class _Sequence(_Handler):
    # No gates (`_Handler.gates`): every event of its kinds may reset an expired sequence (events arrive out of order).
    rule: SequenceRule

    def __init__(self, rule: SequenceRule, engine: Engine) -> None:
        super().__init__(rule, engine)
        self.steps = [_Matcher(s.events, s.when, engine.stats) for s in rule.steps]

    def names(self) -> set[str]:
        return {n for s in self.rule.steps for n in s.events}

    def on_event(self, ev: EventView) -> list[_Hit]:
        part = _part(self.rule, ev)
        st = self.state.get(part)
        if st is not None and st["stage"] > 0 and ev.t - st["start"] > self.rule.within:
            st["stage"] = 0
        stage = st["stage"] if st is not None else 0
        if stage > 0 and self.steps[stage](ev):
            st["stage"] += 1  # type: ignore[index]
            st["ids"].append(_ref(ev))  # type: ignore[index]
            if st["stage"] == len(self.steps):  # type: ignore[index]
                ids_ = st["ids"]  # type: ignore[index]
                st["stage"] = 0  # type: ignore[index]
                return [_hit(part, ids_, ev)]
            return []
        if stage == 0 and self.steps[0](ev):
            st = self.state.touch(part, dict)
            st.update(stage=1, start=ev.t, ids=[_ref(ev)])
        return []


class _Geofence(_Handler):
    rule: GeofenceRule

    def __init__(self, rule: GeofenceRule, engine: Engine) -> None:
        super().__init__(rule, engine)
        self.match = _Matcher(rule.events, rule.when, engine.stats)
        ring = list(rule.zone.polygon)
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        self.ring = ring
        self.polygon = Polygon(ring)
        shapely.prepare(self.polygon)
        self.area = Area(description=rule.zone.name, polygon=[(float(x), float(y)) for x, y in ring])

    def names(self) -> set[str]:
        return set(self.rule.events)

    def on_event(self, ev: EventView) -> list[_Hit]:
        if ev.name not in self.match.events or ev.lon is None or ev.lat is None:
            return []
        inside = bool(shapely.contains_xy(self.polygon, ev.lon, ev.lat)) and self.match(ev)
        part = _part(self.rule, ev)
        st = self.state.get(part)
        if st is None:
            if not inside:
                return []
            st = self.state.touch(part, lambda: {"inside": False})
        was = st["inside"]
        st["inside"] = inside
        trigger = self.rule.trigger
        if inside and not was:
            st.update(since=ev.t, ids=[_ref(ev)], fired=False, tags=ev.tags, lon=ev.lon, lat=ev.lat)
            if trigger == "enter":
                return [_hit(part, [_ref(ev)], ev)]
            if trigger == "dwell":
                assert self.rule.dwell is not None
                self.engine.arm(self, part, ev.t + self.rule.dwell)
            return []
        if was and not inside:
            return [_hit(part, [_ref(ev)], ev)] if trigger == "exit" else []
        if inside and trigger == "dwell" and not st["fired"]:
            assert self.rule.dwell is not None
            st["ids"] = [*st["ids"][-(_MAX_TRIGGER_IDS - 1) :], _ref(ev)]
            if ev.t - st["since"] >= self.rule.dwell:
                st["fired"] = True
                return [_hit(part, st["ids"], ev)]
        return []

    def on_due(self, part: str, deadline: float) -> list[_Hit]:
        st = self.state.get(part)
        if st is None or not st["inside"] or st["fired"]:
            return []
        assert self.rule.dwell is not None
        if st["since"] + self.rule.dwell != deadline:
            return []
        st["fired"] = True
        return [_Hit(part, st["ids"], deadline, st["tags"], st["lon"], st["lat"], None)]


class _Hotlist(_Handler):
    rule: HotlistRule

    def __init__(self, rule: HotlistRule, engine: Engine) -> None:
        super().__init__(rule, engine)
        self.match = _Matcher(rule.events, rule.when, engine.stats)
        self.hashes = engine.pack.watchlists.get(rule.watchlist, frozenset())

    def names(self) -> set[str]:
        return set(self.rule.events)

    def on_event(self, ev: EventView) -> list[_Hit]:
        value = ev.pseudonyms.get(self.rule.field)
        if value is None or value not in self.hashes or not self.match(ev):
            return []
        # One alert per listed vehicle: repeats of the same plate update it.
        return [_hit(f"{self.rule.field}:{value[:16]}", [_ref(ev)], ev)]


class _Trend(_Handler):
    rule: TrendRule

    def __init__(self, rule: TrendRule, engine: Engine) -> None:
        super().__init__(rule, engine)
        self.match = _Matcher(rule.events, rule.when, engine.stats)
        self.factor = 1.0 + rule.rise_pct / 100.0

    def names(self) -> set[str]:
        return set(self.rule.events)

    def gates(self) -> list[_Matcher] | None:
        return [self.match]

    def on_event(self, ev: EventView) -> list[_Hit]:
        if ev.value is None or not self.match(ev):
            return []
        part = _part(self.rule, ev)
        window: deque[tuple[float, float, tuple[str, str, float]]] = self.state.touch(part, self.bounded)
        over = self.rule.over
        while window and ev.t - window[0][0] > over:
            window.popleft()
        low = min(window, key=lambda item: item[1]) if window else None
        if len(window) == window.maxlen:
            self.stats.window_overflow += 1
        window.append((ev.t, ev.value, _ref(ev)))
        if low is None or low[1] <= 0 or ev.value < self.rule.min_value or ev.value < low[1] * self.factor:
            return []
        # A new rise is measured from here on.
        window.clear()
        window.append((ev.t, ev.value, _ref(ev)))
        return [_hit(part, [low[2], _ref(ev)], ev)]


_HANDLERS: dict[str, type[_Handler]] = {
    "threshold": _Threshold,
    "correlation": _Correlation,
    "absence": _Absence,
    "sequence": _Sequence,
    "geofence": _Geofence,
    "hotlist": _Hotlist,
    "trend": _Trend,
}


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
    ) -> None:
        self.pack = pack
        self.lateness = lateness
        self.now = now
        self.new_id = new_id
        self.max_keys = max_keys
        self.max_events = max_events
        self.stats = EngineStats()
        self.handlers: dict[str, _Handler] = {}
        self.groups: dict[str, _Keyed] = {}
        self._index: dict[str, list[_Handler]] = {}
        # source -> heap of (deadline, seq, rule id, part); source -> [newest event time, last arrival, watermark].
        self._timers: dict[str, list[tuple[float, int, str, str]]] = {}
        self._clocks: dict[str, list[float]] = {}
        self._source = ""  # the source of the event being processed (its timers are armed there)
        self._seq = 0
        for rule in pack.rules:
            handler = _HANDLERS[rule.kind](rule, self)
            self.handlers[rule.id] = handler
            self.groups[rule.id] = _Keyed(max_keys, self.stats)
            for name in handler.names():
                self._index.setdefault(name, []).append(handler)
        self._plans = {name: _Plan(name, handlers) for name, handlers in self._index.items()}

    @property
    def rules(self) -> list[Any]:
        """The enabled rules."""
        return self.pack.rules

    def names(self) -> set[str]:
        """Every event name some rule reads."""
        return set(self._index)

    def arm(self, handler: _Handler, part: str, deadline: float) -> None:
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

    def _group(self, handler: _Handler, hit: _Hit) -> Firing | None:
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
        area = getattr(handler, "area", None) or _circle(rule, hit)
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
                    "state": h.state,
                    "groups": self.groups[rid],
                    "hw": getattr(h, "hw", None),
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
        """Build an engine for `pack` and load a snapshot's state for every rule whose definition is unchanged."""
        engine = cls(pack, **kwargs)
        # The engine's own snapshot file, never input from outside.
        doc = pickle.loads(data)
        if doc.get("version") != _SNAPSHOT_VERSION:
            return engine
        kept: set[str] = set()
        for rid, saved in doc["rules"].items():
            handler = engine.handlers.get(rid)
            if handler is None or saved["fp"] != fingerprint(handler.rule):
                engine.stats.dropped_rules += 1
                continue
            for target, src in ((handler.state, saved["state"]), (engine.groups[rid], saved["groups"])):
                target.update(src.items())
            if saved.get("hw") is not None:
                handler.hw = saved["hw"]  # type: ignore[attr-defined]
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
        return sum(len(h.state) for h in self.handlers.values())


def _in_scope(scope: Any, tags: Tags) -> bool:
    if scope.towns is not None and tags.town not in scope.towns:
        return False
    if scope.communities is not None and tags.community not in scope.communities:
        return False
    return scope.buildings is None or tags.building in scope.buildings


def _circle(rule: Any, hit: _Hit) -> Area | None:
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


def conditions_of(rule: Any) -> Sequence[Condition]:
    """The conditions a rule holds (for tooling)."""
    if isinstance(rule, CorrelationRule):
        return rule.require
    if isinstance(rule, SequenceRule):
        return rule.steps
    if isinstance(rule, AbsenceRule):
        return [rule.expect, *([rule.after] if rule.after else [])]
    return []
