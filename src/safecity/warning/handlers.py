"""What rule-kind handlers are built from: the event view, per-key state, matchers and the handler base.

A rule kind (a module under `warning/kinds/`) subclasses `Handler` with its window logic and `RuleState` with
everything that logic changes as events arrive. The engine snapshots and restores a rule through its state alone, and a
handler's own attributes are sealed once it is built, so nothing a handler holds can be left out of a snapshot.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from safecity.kernel.envelope import Envelope
from safecity.kernel.errors import InvalidInput
from safecity.sensing.model import DeviceOffline, SensorEvent, Tags
from safecity.warning.fastcel import ERROR, Error, compile_fast
from safecity.warning.model import Area
from safecity.warning.rules import compile_condition

if TYPE_CHECKING:
    from safecity.warning.engine import Engine

MAX_TRIGGER_IDS = 20
V = TypeVar("V")
R = TypeVar("R")
S = TypeVar("S", bound="RuleState")
Ref = tuple[str, str, float]  # (event id, device id, event time) of an event behind a hit


class UnreadableEvent(InvalidInput):
    """A bus message the engine cannot read (neither a sensor event nor `device.offline`): refused at the boundary."""

    code = "warning.unreadable_event"
    message_en = "The rule engine does not read {key!r} messages (message {id})."
    message_zh = "规则引擎不读取 {key!r} 消息（消息 {id}）。"


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
        raise UnreadableEvent(key=env.key, id=env.id)

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
class Hit:
    """A rule's condition completed for one partition: the events behind it, and where and when."""

    part: str  # partition value (building, device ...)
    refs: list[Ref]  # the events behind the hit
    t: float
    tags: Tags
    lon: float | None
    lat: float | None
    event: EventView | None  # the completing event; None when a timer fired


class Keyed(OrderedDict[str, V]):
    """Per-key state with LRU eviction at `max_keys` (evictions counted)."""

    def __init__(self, max_keys: int, stats: EngineStats) -> None:
        super().__init__()
        self.max_keys = max_keys
        self.stats = stats

    def touch(self, key: str, make: Callable[[], V]) -> V:
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

    def put(self, key: str, value: V) -> None:
        """Set the state of `key` as most recently used."""
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.max_keys:
            self.popitem(last=False)
            self.stats.evicted_keys += 1


class Matcher:
    """Event names plus a compiled condition; evaluation errors (null fields, wrong types) count as no match.

    The common subset of CEL runs as Python closures (`fastcel`); anything else goes to the CEL library. CEL converts
    the whole context on every call, so it gets only the variables a condition names, and of a map (`data`, `tags`,
    `pseudonyms`) only the fields it reads when it only reads fields (8x faster than the full view). Results are
    memoized on the event by expression text, so a condition shared by several rules is evaluated once an event.
    """

    __slots__ = ("events", "fast", "program", "stats", "vars", "when")

    def __init__(self, events: Iterable[str], when: str | None, stats: EngineStats, *, fast: bool = True) -> None:
        self.events = frozenset(events)
        self.when = when or ""
        self.program: Any = compile_condition(when) if when else None
        # `fast=False`: every condition through the CEL library (the reference path, compared in bench/conditions.py).
        self.fast = compile_fast(when) if when and fast else None
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


@dataclass(eq=False)
class RuleState:
    """Everything one rule's handler changes as events arrive: per-key entries (`parts`) plus the kind's own fields.

    A kind that keeps more than per-key entries (correlation's newest event time) subclasses this dataclass with
    fields that have defaults; `dump` and `load` carry every field, so a snapshot holds all of it.
    """

    parts: Keyed[Any]

    def dump(self) -> dict[str, Any]:
        """Every field, `parts` as an ordered list of (key, entry) (what a snapshot holds)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["parts"] = list(self.parts.items())
        return out

    def load(self, saved: dict[str, Any]) -> bool:
        """Take the fields of a `dump`; False (nothing taken) when it holds other fields than this type has."""
        if set(saved) != {f.name for f in dataclasses.fields(self)}:
            return False
        for name, value in saved.items():
            if name == "parts":
                self.parts.update(value)
            else:
                setattr(self, name, value)
        return True


class Handler(Generic[R, S]):
    """Window logic of one rule kind over one rule; all it changes lives in `state` (a `RuleState`).

    Attributes set in `__init__` are configuration derived from the rule; once the engine has built a handler it is
    sealed, and setting an attribute raises: a value that changes as events arrive belongs in the state.
    """

    area: Area | None = None  # a fixed alert area (geofence zone); None: a circle around the event

    def __init__(self, rule: R, engine: Engine, state: S) -> None:
        self.rule = rule
        self.engine = engine
        self.stats = engine.stats
        self.state = state

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_sealed"):
            raise AttributeError(
                f"{type(self).__name__}.{name}: a handler is sealed once built; keep what changes in its state"
            )
        super().__setattr__(name, value)

    def seal(self) -> None:
        """Refuse further attribute changes (the engine calls this once the handler is built)."""
        self._sealed = True

    @property
    def parts(self) -> Keyed[Any]:
        """The per-key entries of the state."""
        return self.state.parts

    def matcher(self, events: Iterable[str], when: str | None) -> Matcher:
        """A matcher for one condition of the rule, on the engine's CEL path."""
        return Matcher(events, when, self.engine.stats, fast=self.engine.fast_cel)

    def names(self) -> set[str]:
        """Event names this rule reads."""
        raise NotImplementedError

    def gates(self) -> list[Matcher] | None:
        """Matchers of which one must match an event for it to change this rule's state; None: every event may."""
        return None

    def on_event(self, ev: EventView) -> list[Hit]:
        """Feed one event; return the hits it completes."""
        raise NotImplementedError

    def on_due(self, part: str, deadline: float) -> list[Hit]:
        """A timer set by this handler came due."""
        return []

    def bounded(self, maxlen: int | None = None) -> deque[Any]:
        """A window deque bounded by the engine's per-window cap."""
        return deque(maxlen=maxlen or self.engine.max_events)


def part_of(rule: Any, ev: EventView) -> str:
    """The partition of `ev` under the rule's `group_by` (a device's own key where the tag is missing)."""
    by = rule.group_by
    if by == "device":
        return ev.device_id
    if by == "global":
        return "*"
    value = getattr(ev.tags, by)
    return value if value is not None else f"device:{ev.device_id}"


def ref(ev: EventView) -> Ref:
    """The reference a hit keeps of an event."""
    return (ev.id, ev.device_id, ev.t)


def hit(part: str, refs: list[Ref], ev: EventView) -> Hit:
    """A hit completed by `ev` (the newest `MAX_TRIGGER_IDS` references kept)."""
    return Hit(part, refs[-MAX_TRIGGER_IDS:], ev.t, ev.tags, ev.lon, ev.lat, ev)
