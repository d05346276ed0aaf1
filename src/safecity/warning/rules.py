"""Rule packs: YAML rules with CEL conditions, validated with line numbers, compiled once at load.

A pack is a YAML mapping with `rules:` (a list), optional `watchlists:` (named sets of plate pseudonyms) and optional
`calendars:` (named holiday date lists). Every rule has a `kind` (one of the registered kinds, `kind_keys()`, each a
module under `warning/kinds/`), CAP fields, grouping and an optional schedule. Windows are always bounded (at most
`MAX_WINDOW`), so engine state stays bounded too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from safecity.kernel.errors import Conflict, InvalidInput, NotFound, SafeCityError
from safecity.sensing.model import DEVICE_OFFLINE, EventKind
from safecity.warning.model import Audience, Category, Certainty, Severity, Urgency

if TYPE_CHECKING:
    from safecity.warning.handlers import Handler, RuleState

MAX_WINDOW_S = 24 * 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Names a condition may use: the fields of the event view the engine builds (see engine.EventView.cel).
CEL_VARIABLES = frozenset(
    {"kind", "key", "device_id", "value", "state", "data", "tags", "pseudonyms", "lon", "lat", "source"}
)
# Event names a rule may read: what the engine is subscribed to (`event.<kind>` and `device.offline`).
EVENT_NAMES: tuple[str, ...] = (*(k.value for k in EventKind), DEVICE_OFFLINE.name)
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")


def parse_duration(value: Any) -> float:
    """Parse "60s", "5m", "2h", "1d", "500ms" (or a number of seconds) into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string like '60s' or '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use a number and a unit (ms, s, m, h, d), e.g. '60s'")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _bounded(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("windows must be bounded and positive")
    if seconds > MAX_WINDOW_S:
        raise ValueError(f"windows must be bounded (within: {seconds:g}s, max 24h)")
    return seconds


def _condition(value: str) -> str:
    # The one CEL check every `when` of every rule kind goes through (the engine compiles the same text).
    compile_condition(value)
    return value


def _event_names(value: list[str]) -> list[str]:
    for name in value:
        if name not in EVENT_NAMES:
            close = difflib.get_close_matches(name, EVENT_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown event {name!r}{hint}; known: {', '.join(EVENT_NAMES)}")
    return value


def _clock(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        # YAML 1.1 reads an unquoted 6:00 as sexagesimal 360: say so instead of "not a valid string".
        raise ValueError(
            f'{value} is not a time of day: quote it, e.g. "{value // 60:02d}:{value % 60:02d}" '
            f"(YAML reads an unquoted {value // 60}:{value % 60:02d} as the number {value})"
        )
    if not isinstance(value, str) or not _CLOCK.match(value):
        raise ValueError(f'{value!r} is not a time of day: write "HH:MM" on a 24-hour clock, e.g. "06:00"')
    return value


def _not_empty(value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
    if value is not None and not value:
        raise ValueError(
            f"an empty list matches nothing, so the rule would never be armed: leave `{info.field_name}` out"
        )
    return value


class _Marker:
    """A tag in a field's type that the registry reads (`EVENT_WINDOW`, `CEL`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# A window of event time: what a rule keeps open, and how far back a rebuild replays (`state_horizon_s`).
EVENT_WINDOW = _Marker("EVENT_WINDOW")
# A CEL condition, compiled and checked by the one validator `_condition`.
CEL = _Marker("CEL")

Duration = Annotated[float, BeforeValidator(parse_duration)]
Window = Annotated[float, BeforeValidator(lambda v: _bounded(parse_duration(v))), EVENT_WINDOW]
# Bounded like a window, but about alerts (repeats update the open one), not a window of events kept open.
GroupWindow = Annotated[float, BeforeValidator(lambda v: _bounded(parse_duration(v)))]
When = Annotated[str, AfterValidator(_condition), CEL]
EventNames = Annotated[list[str], Field(min_length=1), AfterValidator(_event_names)]
Clock = Annotated[str | None, BeforeValidator(_clock)]


class RuleError(InvalidInput):
    """A rule pack failed validation; `issues` holds (line, message) pairs."""

    code = "rules.invalid"
    message_en = "The rule pack is not valid: {summary}"
    message_zh = "规则包无效：{summary}"

    def __init__(self, source: str, issues: list[tuple[int | None, str]]) -> None:
        self.source = source
        self.issues = issues
        # Carried into the problem+json body, so API clients get every issue with its line.
        self.extensions = {"issues": [{"line": line, "message": msg} for line, msg in issues]}
        super().__init__(summary="; ".join(self.lines()[:5]))

    def lines(self) -> list[str]:
        """Return each issue as `file:line: reason`."""
        return [f"{self.source}:{line}: {msg}" if line else f"{self.source}: {msg}" for line, msg in self.issues]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextSpec(_Model):
    """A text in both UI languages."""

    zh: str
    en: str


class Condition(_Model):
    """Which events a rule (or one clause of it) looks at: event names plus an optional CEL condition."""

    events: EventNames = Field(description="Event names: smoke, door, ..., or device.offline.")
    when: When | None = Field(None, description="CEL condition over the event view.")


class Clause(Condition):
    """One part of a correlation: `count` matching events (from `distinct` devices if set)."""

    count: int = Field(1, ge=1, le=1000)
    distinct: Literal["device"] | None = None


class Schedule(_Model):
    """When a rule is armed: days of week, a daily time range (may cross midnight), holiday handling."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    from_: Clock = Field(None, alias="from")
    to: Clock = None
    tz: str = "Asia/Shanghai"
    calendar: str | None = Field(None, description="Name of a calendar in the pack's `calendars`.")
    holidays: Literal["armed", "disarmed", "as_weekday"] = "as_weekday"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _days = field_validator("days")(_not_empty)

    @model_validator(mode="after")
    def _range(self) -> Schedule:
        if self.from_ is not None and self.from_ == self.to:
            raise ValueError("`from` and `to` are the same time: the rule would never be armed")
        return self

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value


class Scope(_Model):
    """Where a rule is armed: lists of towns, communities or buildings (empty = everywhere)."""

    towns: list[str] | None = None
    communities: list[str] | None = None
    buildings: list[str] | None = None

    _lists = field_validator("towns", "communities", "buildings")(_not_empty)


GroupBy = Literal["device", "building", "community", "town", "global"]

# Alerts that are never public, whatever a pack says: hotlist hits and plate reads (personal data of police work),
# security devices and IDS (where the district is watched and how), and infrastructure health (which camera or
# detector is down).
NEVER_PUBLIC_KINDS = frozenset({"hotlist"})
NEVER_PUBLIC_CATEGORIES = frozenset({Category.SECURITY, Category.INFRA})
NEVER_PUBLIC_EVENTS = frozenset(
    {"checkpoint", "video", "video_review", "netsec", "heartbeat", "door", "device.offline", "device.online"}
)


def rule_conditions(rule: BaseModel) -> list[Condition]:
    """The conditions a rule holds in its fields (clauses, steps, `expect`, `after` ...), found by type, in order."""
    out: list[Condition] = []
    for name in type(rule).model_fields:
        value = getattr(rule, name)
        out.extend(v for v in (value if isinstance(value, list | tuple) else [value]) if isinstance(v, Condition))
    return out


def _rule_events(rule: BaseModel) -> set[str]:
    """Every event name a rule looks at (its own `events` and those of the conditions it holds)."""
    names: set[str] = set(getattr(rule, "events", None) or [])
    for condition in rule_conditions(rule):
        names.update(condition.events)
    return names


def never_public_reason(rule: BaseModel) -> str | None:
    """Why a rule's alerts may not be public (None when they may)."""
    kind = getattr(rule, "kind", None)
    if kind in NEVER_PUBLIC_KINDS:
        return f"{kind} alerts"
    category = getattr(rule, "category", None)
    if category in NEVER_PUBLIC_CATEGORIES:
        return f"category {category} alerts"
    if hidden := sorted(_rule_events(rule) & NEVER_PUBLIC_EVENTS):
        return f"alerts on {', '.join(hidden)} events"
    return None


class RuleBase(_Model):
    """Fields every rule has: identity, texts, CAP fields, grouping, scope and schedule."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    title: TextSpec
    description: TextSpec | None = None
    enabled: bool = True
    category: Category = Category.SAFETY
    severity: Severity = Severity.MODERATE
    urgency: Urgency = Urgency.EXPECTED
    certainty: Certainty = Certainty.LIKELY
    opens_incident: bool = False
    group_by: GroupBy = "device"
    group_window: GroupWindow = Field(600.0, description="Repeats within this time update the same alert.")
    cooldown: Duration = Field(0.0, description="After a firing, matches within this time are suppressed.")
    suppressed_by: list[str] = Field(default_factory=list, description="Rule ids whose open alert mutes this one.")
    scope: Scope | None = None
    schedule: Schedule | None = None
    radius_m: float = Field(50.0, gt=0, le=10_000, description="Radius of the alert circle around the event.")
    audience: Audience = Field(
        Audience.RESTRICTED,
        description="CAP scope of the rule's alerts; only Public ones are in the public CAP feed.",
    )

    @model_validator(mode="after")
    def _audience(self) -> RuleBase:
        if self.audience is Audience.PUBLIC and (reason := never_public_reason(self)) is not None:
            raise ValueError(f"audience Public is not allowed: {reason} are Restricted (never public)")
        return self


# --- rule kinds -------------------------------------------------------------------------------------------------

Issue = tuple[tuple[Any, ...], str]  # (location in the pack, e.g. ("rules", 3, "watchlist"), message)


class RuleKindConflict(Conflict):
    """A rule kind was registered twice under one key."""

    code = "rules.kind_conflict"
    message_en = "Rule kind {key!r} is registered already (by {module})."
    message_zh = "规则类型 {key!r} 已注册（{module}）。"


class RuleKindInvalid(SafeCityError):
    """A rule kind's spec does not hold together (its model's `kind`, its CEL fields)."""

    code = "rules.kind_invalid"
    message_en = "Rule kind {key!r} is not valid: {reason}"
    message_zh = "规则类型 {key!r} 无效：{reason}"


class RuleKindUnknown(NotFound):
    """No rule kind is registered under a key."""

    code = "rules.kind_unknown"
    message_en = "Unknown rule kind {key!r}."
    message_zh = "未知的规则类型 {key!r}。"


def _marked(annotation: Any, marker: _Marker) -> bool:
    """Whether a type carries `marker` in an `Annotated`, at any depth (`Window | None`, `list[When]`)."""
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        return any(m is marker for m in meta) or _marked(base, marker)
    return any(_marked(arg, marker) for arg in get_args(annotation))


def _fields_marked(model: type[BaseModel], marker: _Marker) -> tuple[str, ...]:
    return tuple(
        name
        for name, info in model.model_fields.items()
        if any(m is marker for m in info.metadata) or _marked(info.annotation, marker)
    )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field type holds (`Condition | None`, `list[Clause]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _unchecked_conditions(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> list[str]:
    """Fields named `when` (in the model or a model it holds) that are not of the one CEL type `When`."""
    seen = seen if seen is not None else set()
    seen.add(model)
    found: list[str] = []
    for name, info in model.model_fields.items():
        if name == "when" and not _marked(info.annotation, CEL) and not any(m is CEL for m in info.metadata):
            found.append(f"{model.__name__}.{name}")
        for inner in _models_in(info.annotation):
            if inner not in seen:
                found.extend(_unchecked_conditions(inner, seen))
    return found


@dataclass(frozen=True)
class RuleKind:
    """A rule kind: its key, pack model, engine handler and state type; one module under `warning/kinds/`.

    Everything that lists rule kinds is derived from the registered kinds: the pack's discriminated union, the kind
    list in messages and docs (`kind_keys`), the window fields a rebuild replays (fields typed `Window`), the
    engine's handler map and what a snapshot holds of a rule (its `state`).
    """

    key: str
    model: type[RuleBase]
    handler: type[Handler[Any, Any]]
    state: type[RuleState]
    # Checks against the rest of the pack (a hotlist's watch list): called with the rule, its location in the pack
    # (("rules", i)) and the pack; returns (location, message) for each problem.
    check: Callable[[Any, tuple[Any, ...], RulePackSpec], list[Issue]] | None = None

    @property
    def windows(self) -> tuple[str, ...]:
        """The fields of the model that hold a window of event time (typed `Window`)."""
        return _fields_marked(self.model, EVENT_WINDOW)

    @property
    def conditions(self) -> tuple[str, ...]:
        """The fields of the model that hold CEL conditions (`when`, or conditions: clauses, steps, `expect` ...)."""
        return tuple(
            name
            for name, info in self.model.model_fields.items()
            if name in _fields_marked(self.model, CEL)
            or any(issubclass(m, Condition) for m in _models_in(info.annotation))
        )

    @property
    def summary(self) -> str:
        """The first line of the model's docstring (what the kind fires on)."""
        doc = (self.model.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_KINDS: dict[str, RuleKind] = {}
_BUILTINS_LOADED = False
_PACK_MODELS: dict[tuple[type[BaseModel], ...], type[RulePackSpec]] = {}


def _load_builtins() -> None:
    global _BUILTINS_LOADED  # noqa: PLW0603 - loaded once, on first use: the kind modules import this one
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from safecity.warning import kinds

        for kind in kinds.builtin_kinds():
            register_kind(kind)


def register_kind(kind: RuleKind) -> RuleKind:
    """Add a rule kind; a second kind under the same key raises `RuleKindConflict` (code `rules.kind_conflict`)."""
    _load_builtins()
    held = _KINDS.get(kind.key)
    if held is not None:
        raise RuleKindConflict(key=kind.key, module=held.model.__module__)
    tag = kind.model.model_fields.get("kind")
    if tag is None or get_args(tag.annotation) != (kind.key,):
        raise RuleKindInvalid(key=kind.key, reason=f"{kind.model.__name__}.kind must be Literal[{kind.key!r}]")
    if unchecked := _unchecked_conditions(kind.model):
        raise RuleKindInvalid(key=kind.key, reason=f"conditions must be typed `When`: {', '.join(unchecked)}")
    _KINDS[kind.key] = kind
    return kind


def unregister_kind(key: str) -> None:
    """Remove a rule kind (tests that add one take it out again)."""
    _load_builtins()
    if _KINDS.pop(key, None) is None:
        raise RuleKindUnknown(key=key)


def rule_kinds() -> tuple[RuleKind, ...]:
    """Every registered rule kind, in registration order (the built-ins first)."""
    _load_builtins()
    return tuple(_KINDS.values())


def rule_kind(key: str) -> RuleKind:
    """The rule kind registered under `key`."""
    _load_builtins()
    kind = _KINDS.get(key)
    if kind is None:
        raise RuleKindUnknown(key=key)
    return kind


def kind_keys() -> tuple[str, ...]:
    """The keys of every registered rule kind (what `kind:` may say)."""
    return tuple(k.key for k in rule_kinds())


def pack_model() -> type[RulePackSpec]:
    """The pack document model whose `rules` is the discriminated union of the registered kinds' models."""
    models = tuple(k.model for k in rule_kinds())
    model = _PACK_MODELS.get(models)
    if model is None:
        union: Any = Union[models] if len(models) > 1 else models[0]  # noqa: UP007 - built from a tuple of models
        rule = Annotated[union, Field(discriminator="kind")]
        model = _PACK_MODELS[models] = create_model(
            "RulePackSpec",
            __base__=RulePackSpec,
            __doc__=RulePackSpec.__doc__,
            rules=(list[rule], Field(default_factory=list)),
        )
    return model


class Watchlist(_Model):
    """A named watch list: pseudonyms (hex HMACs) only; clear `values` are hashed at load and then dropped."""

    field: str = "plate"
    description: str | None = None
    hashes: list[str] = Field(default_factory=list)
    values: list[str] = Field(default_factory=list, description="Clear values: hashed at load, never kept.")

    @field_validator("hashes")
    @classmethod
    def _hex(cls, value: list[str]) -> list[str]:
        for h in value:
            if not re.fullmatch(r"[0-9a-f]{64}", h):
                raise ValueError("watch list hashes are 64 lowercase hex characters (HMAC-SHA256)")
        return value


class RulePackSpec(_Model):
    """The document of a rule pack (what YAML files and the API carry)."""

    version: Literal[1] = 1
    # Validated as the union of the registered kinds (`pack_model()`); here any rule, for packs already validated.
    rules: list[Any] = Field(default_factory=list)
    watchlists: dict[str, Watchlist] = Field(default_factory=dict)
    calendars: dict[str, list[date]] = Field(default_factory=dict)


class RulePack:
    """A validated pack ready for the engine: enabled rules, watch lists as pseudonym sets, calendars."""

    def __init__(self, spec: RulePackSpec, watchlists: dict[str, frozenset[str]], source: str = "<rules>") -> None:
        self.spec = spec
        self.source = source
        self.rules: list[Any] = [r for r in spec.rules if r.enabled]
        self.watchlists = watchlists
        self.calendars = {name: frozenset(days) for name, days in spec.calendars.items()}

    def __len__(self) -> int:
        return len(self.rules)

    def merged(self, other: RulePack) -> RulePack:
        """Return a pack holding this pack's rules and another's (ids must stay unique)."""
        spec = pack_model()(
            rules=[*self.spec.rules, *other.spec.rules],
            watchlists={**self.spec.watchlists, **other.spec.watchlists},
            calendars={**self.spec.calendars, **other.spec.calendars},
        )
        issues: list[tuple[int | None, str]] = []
        _check_references(spec, lambda _loc: None, issues)
        if issues:
            raise RuleError(f"{self.source}+{other.source}", issues)
        return RulePack(spec, {**self.watchlists, **other.watchlists}, f"{self.source}+{other.source}")


_CEL_CACHE: dict[str, Any] = {}


def compile_condition(expression: str) -> Any:
    """Compile a CEL condition once (cached); refuse syntax errors and names the event view does not have."""
    program = _CEL_CACHE.get(expression)
    if program is not None:
        return program
    try:
        program = cel.compile(expression)
    except ValueError as err:
        text = " ".join(str(err).splitlines()[:2])
        # The parser says "... <input>:1:20: Syntax error: mismatched input '<EOF>' expecting {'[', ...} | expr":
        # keep the column and the reason, drop the token set.
        found = re.search(r"<input>:\d+:(\d+): (?:Syntax error: )?(.*?)(?: expecting \{.*?\})?(?: \|.*)?$", text)
        if found is None:
            raise ValueError("CEL syntax error: " + text) from err
        reason = found.group(2).replace("mismatched input '<EOF>'", "the condition ends too early")
        raise ValueError(f"CEL syntax error at column {found.group(1)}: {reason}") from err
    unknown = set(program.variables()) - CEL_VARIABLES
    if unknown:
        raise ValueError(
            f"CEL condition uses unknown names {sorted(unknown)}; known: {', '.join(sorted(CEL_VARIABLES))}"
        )
    _CEL_CACHE[expression] = program
    return program


# --- YAML with line numbers -------------------------------------------------------------------------------------


class _Lines:
    """Maps a path of keys and indexes in the YAML document to the line where it starts."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, loc: Iterable[int | str]) -> int | None:
        node = self.root
        if node is None:
            return None
        best: int = int(node.start_mark.line) + 1
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == part or (part == "from_" and key.value == "from"):
                        child = value
                        # Point at the key line: a wrong value is reported where its key is.
                        best = int(key.start_mark.line) + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                child = node.value[part]
                best = int(child.start_mark.line) + 1
            if child is None:
                # Discriminator tags and union members appear in pydantic's loc but not in the document.
                continue
            node = child
        return best


def _message(err: dict[str, Any]) -> str:
    parts = [p for p in err["loc"] if isinstance(p, str) and p not in kind_keys()]
    loc = [("from" if p == "from_" else p) for p in (parts[1:] if parts[:1] == ["rules"] else parts)]
    where = ".".join(loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown field {loc[-1]!r}" if loc else "unknown field"
    elif err["type"] == "union_tag_invalid":
        msg = f"unknown rule kind; expected one of {', '.join(kind_keys())}"
    elif err["type"] == "union_tag_not_found":
        msg = "a rule needs `kind`"
    return f"{where}: {msg}" if where else msg


def _check_references(spec: RulePackSpec, line_of: Callable[[tuple[Any, ...]], int | None], issues: list[Any]) -> None:
    seen: set[str] = set()
    ids = {r.id for r in spec.rules}
    for i, rule in enumerate(spec.rules):
        if rule.id in seen:
            issues.append((line_of(("rules", i, "id")), f"duplicate rule id {rule.id!r}"))
        seen.add(rule.id)
        for other in rule.suppressed_by:
            if other not in ids:
                issues.append((line_of(("rules", i, "suppressed_by")), f"suppressed_by names unknown rule {other!r}"))
            elif other == rule.id:
                issues.append((line_of(("rules", i, "suppressed_by")), "suppressed_by names the rule itself"))
        check = rule_kind(rule.kind).check
        if check is not None:
            issues.extend((line_of(loc), message) for loc, message in check(rule, ("rules", i), spec))
        calendar = rule.schedule.calendar if rule.schedule is not None else None
        if calendar is not None and calendar not in spec.calendars:
            issues.append((line_of(("rules", i, "schedule", "calendar")), f"unknown calendar {calendar!r}"))


def parse_pack(
    text: str, source: str = "<rules>", *, pseudonymize: Callable[[str, str], str] | None = None
) -> RulePack:
    """Parse and validate a YAML rule pack; raise `RuleError` with `file:line: reason` for every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(err, "problem", None) or str(err)
        raise RuleError(source, [(line, f"YAML syntax error: {reason}")]) from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RuleError(source, [(1, "a rule pack is a mapping with a `rules:` list")])
    lines = _Lines(root)
    try:
        spec = pack_model().model_validate(data)
    except ValidationError as err:
        found = [
            (lines.line((*e["loc"], "kind") if e["type"].startswith("union_tag") else e["loc"]), _message(dict(e)))
            for e in err.errors()
        ]
        found.sort(key=lambda item: item[0] or 0)
        raise RuleError(source, found) from err
    issues: list[tuple[int | None, str]] = []
    _check_references(spec, lines.line, issues)
    watchlists: dict[str, frozenset[str]] = {}
    for name, wl in spec.watchlists.items():
        hashes = set(wl.hashes)
        if wl.values:
            if pseudonymize is None:
                issues.append((lines.line(("watchlists", name, "values")), "clear values need the pseudonym key"))
            else:
                hashes.update(pseudonymize(wl.field, v) for v in wl.values)
        watchlists[name] = frozenset(hashes)
    if issues:
        raise RuleError(source, issues)
    # The clear values are not kept: the spec keeps only hashes.
    spec = spec.model_copy(
        update={
            "watchlists": {
                n: wl.model_copy(update={"values": [], "hashes": sorted(watchlists[n])})
                for n, wl in spec.watchlists.items()
            }
        }
    )
    return RulePack(spec, watchlists, source)


def load_pack(path: str | Path, *, pseudonymize: Callable[[str, str], str] | None = None) -> RulePack:
    """Read and validate a rule pack file."""
    p = Path(path)
    return parse_pack(p.read_text(encoding="utf-8"), str(p), pseudonymize=pseudonymize)


def builtin_pack_path(name: str = "default") -> Path:
    """Path of a rule pack shipped in the package (`default`, `nodered_peer`)."""
    return Path(__file__).resolve().parent / "rulepacks" / f"{name}.yaml"


def load_builtin(name: str = "default", *, pseudonymize: Callable[[str, str], str] | None = None) -> RulePack:
    """Load a rule pack shipped in the package."""
    return load_pack(builtin_pack_path(name), pseudonymize=pseudonymize)


# --- schedules ----------------------------------------------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def schedule_armed(schedule: Schedule, at: datetime, holidays: frozenset[date] = frozenset()) -> bool:
    """Tell whether a schedule is armed at an instant (local time of the schedule's zone)."""
    local = at.astimezone(ZoneInfo(schedule.tz))
    start = time.fromisoformat(schedule.from_) if schedule.from_ else None
    end = time.fromisoformat(schedule.to) if schedule.to else None
    clock = local.time().replace(tzinfo=None)
    day = local.date()
    # A range that crosses midnight (22:00-06:00) belongs, after midnight, to the day it started on.
    if start is not None and end is not None and start > end and clock < end:
        day = day - timedelta(days=1)
    if start is not None and end is not None:
        in_range = (start <= clock < end) if start <= end else (clock >= start or clock < end)
    elif start is not None:
        in_range = clock >= start
    elif end is not None:
        in_range = clock < end
    else:
        in_range = True
    if not in_range:
        return False
    if day in holidays:
        if schedule.holidays == "armed":
            return True
        if schedule.holidays == "disarmed":
            return False
    return schedule.days is None or _DAYS[day.weekday()] in schedule.days


def state_horizon_s(pack: RulePack) -> float:
    """The longest window any rule keeps open: how far back stored events must be replayed to rebuild state."""
    longest = 0.0
    for rule in pack.rules:
        for name in rule_kind(rule.kind).windows:
            value = getattr(rule, name, None)
            if isinstance(value, int | float):
                longest = max(longest, float(value))
    return min(longest, MAX_WINDOW_S)
