"""fastcel: the closure fast path returns exactly what the CEL library returns, errors included."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cel
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from safecity.sensing.model import Tags
from safecity.warning import engine as engine_module
from safecity.warning.engine import Engine, EventView
from safecity.warning.fastcel import ERROR, MISSING, Error, compile_fast, guard
from safecity.warning.rules import builtin_pack_path, parse_pack

ROOT = Path(__file__).resolve().parents[3]
PACKS = [builtin_pack_path("default"), builtin_pack_path("nodered_peer"), ROOT / "bench" / "rules_50.yaml"]
I64 = 2**63


def whens(node: Any) -> list[str]:
    """Every `when:` string in a parsed YAML document."""
    if isinstance(node, dict):
        out = [v for k, v in node.items() if k == "when" and isinstance(v, str)]
        return out + [w for v in node.values() for w in whens(v)]
    if isinstance(node, list):
        return [w for v in node for w in whens(v)]
    return []


CORPUS = sorted({w for p in PACKS for w in whens(yaml.safe_load(p.read_text(encoding="utf-8")))})


def by_cel(expr: str, ctx: dict[str, Any]) -> bool | Error:
    """What the CEL library says, read as the engine reads it (`is True`; any exception is an error)."""
    try:
        return cel.compile(expr).execute(ctx) is True
    except Exception:
        return ERROR


# --- generated contexts ---------------------------------------------------------------------------------------

FIELDS = ["temp", "smoke_density", "alarm", "count", "x", "y"]
NUMERIC_TEXT = st.sampled_from(
    ["1", "-0", "+3", "3.5", "1.", ".5", ".", "1e3", "1E+5", "e5", " 3", "1_0", "inf", "-Infinity", "NaN", "nan", "x"]
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1.0, 70.0, 70.5, 450.0, 2.0**63, -(2.0**63), 9.2e18, 9007199254740992.0, 1e-7, 1e30]
)


def scalars(big_ints: bool) -> st.SearchStrategy[Any]:
    ints = (
        st.integers(-3, 10)
        | st.integers(-(I64), I64 - 1)
        | st.sampled_from([0, 1, 5, 70, 450, 9007199254740993, I64 - 1, -I64])
    )
    if big_ints:
        ints = ints | st.integers(I64, 2**70)
    return st.none() | st.booleans() | ints | FLOATS | NUMERIC_TEXT | st.sampled_from(["open", "closed", "", "é"])


def json_values(big_ints: bool = False) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(big_ints),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["y", "z"]), inner, max_size=2),
        max_leaves=5,
    )


def views(big_ints: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts shaped like `EventView.cel()`, with the fields conditions read present or missing."""
    text = st.sampled_from(["smoke", "door", "open", "b1", "", "é"])
    maybe_float = st.none() | FLOATS | st.integers(-1000, 1000)
    return st.fixed_dictionaries(
        {
            "kind": text,
            "key": text,
            "device_id": text,
            "value": maybe_float,
            "state": st.none() | st.sampled_from(["open", "closed", "occupied", "", "1"]),
            "data": st.dictionaries(st.sampled_from(FIELDS), json_values(big_ints), min_size=2, max_size=6),
            "tags": st.fixed_dictionaries({k: text for k in ("town", "community", "building", "device_kind")}),
            "pseudonyms": st.dictionaries(st.just("plate"), text, max_size=1),
            "lon": maybe_float,
            "lat": maybe_float,
            "source": text,
        }
    )


# --- generated expressions (the supported grammar) -------------------------------------------------------------

PATHS = [
    "data.temp", "data.alarm", "data.count", "data.x", "data.x.y", "data.x.z", "value", "state", "kind",
    "tags.building", "lon", "pseudonyms.plate", "device_id",
]  # fmt: skip
HAS_PATHS = [p for p in PATHS if "." in p]


def float_literal(f: float) -> str:
    text = repr(f)
    return text if any(c in text for c in ".e") else text + ".0"


LITERALS = (
    st.integers(-3, 10).map(str)
    | st.integers(-(I64), I64 - 1).map(str)
    | st.sampled_from(["0", "5", "70", "450", "-30", "0x10", "9007199254740993"])
    | st.floats(allow_nan=False, allow_infinity=False).map(float_literal)
    | st.sampled_from(["70.0", "-30.0", "1e3", "2.5e-3", "1.0", "0.0", "3.5"])
    | st.sampled_from(['"open"', "'closed'", '""', '"1"', "'3.5'", '"é"', "true", "false", "null"])
)
VALUES = (
    st.sampled_from(PATHS)
    | LITERALS
    | st.builds("{}({})".format, st.sampled_from(["double", "int", "string", "size"]), st.sampled_from(PATHS))
)
RELOPS = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
ATOMS = (
    st.builds("{} {} {}".format, VALUES, RELOPS, VALUES)
    | st.builds("{} in [{}]".format, VALUES, st.lists(LITERALS, max_size=3).map(", ".join))
    | st.sampled_from(HAS_PATHS).map("has({})".format)
    | st.sampled_from(PATHS)
    | st.sampled_from(["true", "false"])
)
EXPRESSIONS = st.recursive(
    ATOMS,
    lambda inner: (
        inner.map("!({})".format)
        | st.builds("{} && {}".format, inner, inner)
        | st.builds("({}) || ({})".format, inner, inner)
        | st.builds("!{}".format, st.sampled_from(PATHS))
    ),
    max_leaves=4,
)

SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same(expr: str, ctx: dict[str, Any], *, may_fall_back: bool = False) -> None:
    fast = compile_fast(expr)
    assert fast is not None, expr
    got = fast(ctx)
    if got is None:
        assert may_fall_back, f"{expr} fell back on {ctx}"
        return
    assert got is by_cel(expr, ctx), f"{expr} on {ctx}: fast {got}, cel {by_cel(expr, ctx)}"


# --- tests ------------------------------------------------------------------------------------------------------


def test_the_corpus_is_the_shipped_conditions() -> None:
    assert len(CORPUS) >= 20
    assert 'state == "open"' in CORPUS
    assert all(compile_fast(w) is not None for w in CORPUS)


@pytest.mark.parametrize("expr", CORPUS)
@SLOW
@given(ctx=views())
@example(ctx={"data": {}, "value": None, "state": None})
@example(ctx={"data": {"temp": "71", "alarm": 1, "smoke_density": None}, "value": 450, "state": "open"})
def test_shipped_conditions_agree_with_cel(expr: str, ctx: dict[str, Any]) -> None:
    assert_same(expr, ctx)


@settings(SLOW, max_examples=1500)
@given(expr=EXPRESSIONS, ctx=views())
def test_generated_conditions_agree_with_cel(expr: str, ctx: dict[str, Any]) -> None:
    try:
        cel.compile(expr)
    except ValueError:
        # The grammar can build what CEL refuses to parse (`- -5` style edge cases); the engine never sees those.
        return
    assert_same(expr, ctx)


@settings(SLOW, max_examples=300)
@given(expr=EXPRESSIONS, ctx=views(big_ints=True))
def test_values_outside_the_model_fall_back_or_agree(expr: str, ctx: dict[str, Any]) -> None:
    try:
        cel.compile(expr)
    except ValueError:
        return
    assert_same(expr, ctx, may_fall_back=True)


INTERESTING: list[Any] = [
    MISSING, None, True, False, 0, 1, -1, 3, 2**53 + 1, I64 - 1, -I64, 0.0, -0.0, 1.0, 3.9, -3.9, 2.0**53, math.nan,
    math.inf, -math.inf, 2.0**63, -(2.0**63), 9.2e18, 1e-7, 1e30, "", "a", "b", "é", "1", "-0", " 3", "1e3", "1.",
    "nan", "inf", "9223372036854775808", [], [1], [1.0], [math.nan], ["a", 1], {"y": 1}, {"y": 1.0}, {"z": None},
]  # fmt: skip
BINARY = ["==", "!=", "<", "<=", ">", ">=", "&&", "||"]
UNARY = ["double({})", "int({})", "string({})", "size({})", "!{}", "has({}.y)", "{} in [1, 'a', null]", "{}"]


def pair_ctx(a: Any, b: Any) -> dict[str, Any]:
    data = {k: v for k, v in (("x", a), ("y", b)) if v is not MISSING}
    return {"data": data}


@pytest.mark.parametrize("op", BINARY)
def test_every_pair_of_interesting_values_agrees(op: str) -> None:
    expr = f"data.x {op} data.y"
    program, fast = cel.compile(expr), compile_fast(expr)
    assert fast is not None
    for a, b in itertools.product(INTERESTING, repeat=2):
        ctx = pair_ctx(a, b)
        try:
            want: bool | Error = program.execute(ctx) is True
        except Exception:
            want = ERROR
        assert fast(ctx) is want, f"{expr} on {ctx}"


COMPARES = [
    "{} == 0", "{} == 3", "{} == 1.0", "{} == 9223372036854775807", '{} == "1"', '{} == "0.0000001"',
    '{} == "1000000000000000000000000000000"', "{} == 2", "{} > 0", "{} == true", "{} != null",
]  # fmt: skip


@pytest.mark.parametrize("form", UNARY)
def test_every_interesting_value_agrees_under_functions(form: str) -> None:
    for compare in COMPARES:
        expr = compare.format(form.format("data.x"))
        if cel_refuses(expr):
            continue
        program, fast = cel.compile(expr), compile_fast(expr)
        assert fast is not None, expr
        for a in INTERESTING:
            ctx = pair_ctx(a, MISSING)
            try:
                want: bool | Error = program.execute(ctx) is True
            except Exception:
                want = ERROR
            assert fast(ctx) is want, f"{expr} on {ctx}"


def cel_refuses(expr: str) -> bool:
    try:
        cel.compile(expr)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(
    ("expr", "ctx", "want"),
    [
        ("value >= 450", {"value": 450.0}, True),
        ("data.count > 5", {"data": {"count": 6}}, True),
        ("data.count > 5.0", {"data": {"count": 6}}, True),
        ("data.alarm == true", {"data": {"alarm": 1}}, False),
        ("data.alarm == true", {"data": {}}, ERROR),
        ('state == "open"', {"state": None}, False),
        ("value >= 450.0", {"value": None}, ERROR),
        ("false && data.x", {"data": {}}, False),
        ("data.x && false", {"data": {}}, False),
        ("data.x || true", {"data": {}}, True),
        ("data.x && true", {"data": {"x": 1}}, ERROR),
        ("!data.x", {"data": {"x": 1}}, ERROR),
        ("data.x < 1.0", {"data": {"x": math.nan}}, ERROR),
        ("data.x != 1", {"data": {"x": math.nan}}, True),
        ("9007199254740993 == 9007199254740992.0", {}, True),
        ("size(data.x) == 6", {"data": {"x": "héllo"}}, True),
        ('string(data.x) == "0.0000001"', {"data": {"x": 1e-7}}, True),
        ('string(data.x) == "1"', {"data": {"x": 1.0}}, True),
        ("int(data.x) == 3", {"data": {"x": 3.9}}, True),
        ("int(data.x) == 0", {"data": {"x": 2.0**63}}, ERROR),
        ("double(data.x) > 1.0", {"data": {"x": " 3"}}, ERROR),
        ("double(data.x) > 1.0", {"data": {"x": "1e3"}}, True),
        ("double(data.x) > 1.0", {"data": {"x": True}}, ERROR),
        ('string(data.x) == "true"', {"data": {"x": True}}, ERROR),
        ("has(data.x)", {"data": {"x": None}}, True),
        ("has(data.x.y)", {"data": {"x": "s"}}, ERROR),
        ("data.x in [1, 2]", {"data": {"x": 1.0}}, True),
        ("data.x in [1, null]", {"data": {"x": None}}, True),
        ("!data.x == false", {"data": {"x": True}}, True),
        ("data.x", {"data": {"x": 1}}, False),
        ("-9223372036854775808 == data.x", {"data": {"x": -I64}}, True),
    ],
)
def test_cel_semantics_worth_knowing(expr: str, ctx: dict[str, Any], want: bool | Error) -> None:
    full = {"data": {}, "value": None, "state": None} | ctx
    assert by_cel(expr, full) is want, "the CEL library changed its mind"
    assert_same(expr, full)


@pytest.mark.parametrize(
    "expr",
    [
        "value + 1.0 > 2.0",
        'value > 1.0 ? true : state == "x"',
        "data.x.size() > 1",
        'data["x"] == 1',
        "data.x == 1u",
        'state == r"open"',
        "state == b'open'",
        'state.startsWith("o")',
        "state in data.x",
        "[1, 2].exists(x, x > 1)",
        '"a\\n" == state',
        "has(value)",
        "-value < 1.0",
        'state == """open"""',
        "data.x == 9223372036854775808",
        "timestamp(data.t) > timestamp('2026-01-01T00:00:00Z')",
        "data.x == {'a': 1}",
        "value > 1.0 // comment",
        "value in [data.x]",
    ],
)
def test_unsupported_syntax_falls_back(expr: str) -> None:
    assert compile_fast(expr) is None


# --- the engine ---------------------------------------------------------------------------------------------------

HEAD = "title: {zh: 测试, en: test}"
T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


def view(i: int, name: str = "smoke", **kw: Any) -> EventView:
    return EventView(f"e{i}", name, T0.timestamp() + i, f"d{i}", Tags(building="b1"), **kw)


def make_engine(conditions: list[str]) -> Engine:
    body = "rules:\n" + "".join(
        f"  - id: r{i}\n    kind: threshold\n    {HEAD}\n    events: [smoke]\n    when: '{c}'\n"
        for i, c in enumerate(conditions)
    )
    counter = itertools.count(1)
    return Engine(parse_pack(body, "test.yaml"), new_id=lambda: f"A{next(counter)}")


def test_shared_conditions_are_evaluated_once_per_event() -> None:
    e = make_engine(["data.alarm == true", "data.alarm == true", "value >= 10.0"])
    ev = view(1, data={"alarm": True}, value=3.0)
    fired = e.process(ev)
    assert sorted(f.rule.id for f in fired) == ["r0", "r1"]
    # `value >= 10.0` was never evaluated: its guard turned the event away before the rule saw it.
    assert ev._memo == {"data.alarm == true": True}


def test_missing_keys_and_overflow_count_as_errors_on_both_paths() -> None:
    # `int(...) + 0` is outside the fast subset: the CEL library raises OverflowError / KeyError there.
    e = make_engine(["data.alarm == true", "int(data.v) + 0 > 1", "data.w + 0 > 1"])
    assert e.process(view(1, data={"v": 1e30})) == []
    assert e.stats.condition_errors == 3


def test_conditions_outside_the_subset_still_match() -> None:
    e = make_engine(['value + 1.0 > 10.0 && state.startsWith("op")'])
    assert e.process(view(1, value=3.0, state="open")) == []
    assert [f.rule.id for f in e.process(view(2, value=30.0, state="open"))] == ["r0"]
    assert e.stats.condition_errors == 0


# --- guards: the cheap necessary condition the engine uses to skip rules ------------------------------------------


def at_path(ctx: dict[str, Any], path: tuple[str, ...]) -> Any:
    """What the engine's `_walk` reads (a non-map on the way is a value no guard models)."""
    value: Any = ctx
    for name in path:
        if type(value) is not dict:
            return object()
        value = value.get(name, MISSING)
        if value is MISSING:
            return MISSING
    return value


def PSEUDONYM(field: str, value: str) -> str:
    return f"{field}:{value}"


def assert_guard_sound(expr: str, ctx: dict[str, Any]) -> None:
    g = guard(expr)
    if g is None or g.admits(at_path(ctx, g.path)):
        return
    # Turned away: the condition must be plainly false there (not an error, which the engine would have counted).
    assert by_cel(expr, ctx) is False, f"{g} refused {ctx} but CEL says {by_cel(expr, ctx)} for {expr}"


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("has(data.temp) && double(data.temp) > 70.0", "Guard(data.temp > 70.0, has)"),
        ("data.alarm == true", "Guard(data.alarm == True)"),
        ("true == data.alarm", "Guard(data.alarm == True)"),
        ('state == "fault"', "Guard(state == 'fault')"),
        ("value >= 200.0 && state == 'open'", "Guard(state == 'open')"),
        ("double(data.temp) < -30.0", "Guard(data.temp < -30.0)"),
        ("70 < value", "Guard(value > 70)"),
        ("data.alarm == true || value > 3.0", None),
        ("!(data.alarm == true)", None),
        ("size(data.x) > 3", None),
        ("data.x != 1", None),
        ("state < 'b'", None),
        ("double(data.temp) == 3.0", None),
        ('state.startsWith("op")', None),
    ],
)
def test_guards_are_taken_from_simple_conjuncts(expr: str, want: str | None) -> None:
    got = guard(expr)
    assert (repr(got) if got is not None else None) == want


@pytest.mark.parametrize("expr", CORPUS)
@SLOW
@given(ctx=views(big_ints=True))
def test_shipped_guards_never_turn_away_a_condition_that_could_hold(expr: str, ctx: dict[str, Any]) -> None:
    assert_guard_sound(expr, ctx)


@settings(SLOW, max_examples=2000)
@given(expr=EXPRESSIONS, ctx=views(big_ints=True))
def test_generated_guards_never_turn_away_a_condition_that_could_hold(expr: str, ctx: dict[str, Any]) -> None:
    assert_guard_sound(expr, ctx)


def test_guards_let_most_events_skip_most_rules() -> None:
    e = Engine(parse_pack(PACKS[2].read_text(encoding="utf-8"), "rules_50.yaml", pseudonymize=PSEUDONYM))
    noise = view(1, data={"alarm": False, "temp": 30.0})
    plan = e._plans["smoke"]
    assert len(plan.handlers) >= 30
    visited = plan.select(noise)
    # Only rules whose state every event of the kind may change (sequences, trends without a condition) see noise.
    assert len(visited) <= 5 and {h.rule.kind for h in visited} <= {"sequence", "trend"}, visited
    alarm = view(2, data={"alarm": True})
    assert {h.rule.id for h in plan.select(alarm)} >= {"peer.smoke_pair", "fire.smoke_and_door_0"}


def random_events(seed: int, n: int) -> list[EventView]:
    rng = random.Random(seed)
    names = ["smoke", "door", "crowd", "parking", "checkpoint", "video", "netsec", "heartbeat"]
    out = []
    for i in range(n):
        data: dict[str, Any] = {}
        if rng.random() < 0.7:
            data["alarm"] = rng.random() < 0.2
        if rng.random() < 0.5:
            data["temp"] = rng.choice([rng.uniform(-40, 320), rng.randint(-40, 320), "75", None, float("nan")])
        if rng.random() < 0.2:
            data["smoke_density"] = rng.uniform(0, 20)
        tags = Tags(
            town="t1", community=rng.choice(["jd-t01-c000", "jd-t01-c003", "c9"]), building=f"b{rng.randint(0, 3)}"
        )
        t = T0.timestamp() + i * rng.uniform(0.1, 30)  # out of time order on purpose
        out.append(
            EventView(
                f"e{i}",
                rng.choice(names),
                t,
                f"d{rng.randint(0, 9)}",
                tags,
                lon=rng.choice([None, 121.25, 121.2501]),
                lat=rng.choice([None, 31.37, 31.3701]),
                value=rng.choice([None, rng.uniform(0, 600)]),
                state=rng.choice([None, "open", "occupied", "fault", "closed"]),
                data=data,
            )
        )
    return out


@pytest.mark.parametrize("seed", range(6))
def test_an_engine_with_guards_fires_exactly_as_one_without(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    text = PACKS[2].read_text(encoding="utf-8")

    def fresh() -> Engine:
        counter = itertools.count(1)
        return Engine(parse_pack(text, "rules_50.yaml", pseudonymize=PSEUDONYM), new_id=lambda: f"A{next(counter)}")

    guarded = fresh()
    monkeypatch.setattr(engine_module, "guard", lambda _expr: None)
    plain = fresh()
    assert all(not p.guards for p in plain._plans.values())
    for ev in random_events(seed, 3000):
        a = [(f.rule.id, f.alert_id, f.count, f.trigger_event_ids) for f in guarded.process(ev)]
        b = [(f.rule.id, f.alert_id, f.count, f.trigger_event_ids) for f in plain.process(ev)]
        assert a == b, ev
    ga, pa = vars(guarded.stats), vars(plain.stats)
    assert ga.pop("unscheduled") <= pa.pop("unscheduled")  # guards run first: fewer events reach a disarmed rule
    assert ga == pa
    assert guarded.stats.fired > 0


@pytest.mark.parametrize("seed", range(2))
def test_the_cel_library_path_fires_exactly_as_the_fast_path(seed: int) -> None:
    # What bench/conditions.py --path compares: the same engine with every condition through the CEL library.
    text = PACKS[2].read_text(encoding="utf-8")

    def fresh(fast: bool) -> Engine:
        counter = itertools.count(1)
        pack = parse_pack(text, "rules_50.yaml", pseudonymize=PSEUDONYM)
        return Engine(pack, new_id=lambda: f"A{next(counter)}", fast_cel=fast)

    fast, library = fresh(True), fresh(False)
    assert any(p.guards for p in fast._plans.values()) and not any(p.guards for p in library._plans.values())
    assert all(m.fast is None for h in library.handlers.values() for m in vars(h).values() if hasattr(m, "fast"))
    # Separate copies of the events: results are memoized on the event, and each path must compute its own.
    for a_ev, b_ev in zip(random_events(seed, 2000), random_events(seed, 2000), strict=True):
        a = [(f.rule.id, f.alert_id, f.count, f.trigger_event_ids) for f in fast.process(a_ev)]
        b = [(f.rule.id, f.alert_id, f.count, f.trigger_event_ids) for f in library.process(b_ev)]
        assert a == b, a_ev
    assert fast.stats.fired > 0 and fast.stats.condition_errors == library.stats.condition_errors
