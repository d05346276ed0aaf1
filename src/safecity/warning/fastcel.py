"""A fast path for the common subset of CEL conditions: compiled once into Python closures.

CEL (the `common-expression-language` package) stays the language and the fallback: `compile_fast` returns None for
anything outside the subset, and a compiled closure returns None for a value it does not model (an int outside
int64, bytes, tuples ...), so the caller asks the CEL library instead. Within the subset the closure reproduces what
that library does, errors included (checked by property tests against it):

- a missing map key, a field of a non-map, `!` of a non-bool, ordering of mixed or unordered types (null, lists,
  NaN) are errors; `&&` / `||` absorb an error when the other side decides (false && error = false).
- `==` / `in` between different types is false, never an error; int and double compare as doubles
  (9007199254740993 == 9007199254740992.0 is true).
- `double()` / `int()` parse strings as Rust does; `int()` of a double truncates and errors outside (-2^63, 2^63);
  `string()` of a double prints it as Rust does ("1", "0.0000001", "NaN"); `double()`, `int()`, `string()` of a
  bool are errors; `size()` of a string counts UTF-8 bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = ["ERROR", "MISSING", "Error", "FastCondition", "Guard", "compile_fast", "guard"]

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_F_LIMIT = 2.0**63
# Rust's f64 / i64 `from_str` grammars (no spaces, no underscores, ASCII digits only).
_RUST_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?i:inf|infinity|nan)")
_RUST_INT = re.compile(r"[+-]?[0-9]+")
_MODELED = frozenset({type(None), bool, int, float, str, list, dict})
_FUNCTIONS = frozenset({"has", "double", "int", "string", "size"})


class Error:
    """The result of a condition CEL could not evaluate (missing key, wrong types): the engine counts it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ERROR"


ERROR = Error()
_ERR: Any = ERROR  # the same object, typed loosely for the inner closures

FastCondition = Callable[[dict[str, Any]], "bool | Error | None"]
_Fn = Callable[[dict[str, Any]], Any]


class _Fallback(Exception):
    """A value outside what the fast path models: the caller evaluates with the CEL library instead."""


class _Unsupported(Exception):
    """Syntax outside the fast subset."""


# --- value semantics --------------------------------------------------------------------------------------------


def _check(v: Any) -> None:
    t = type(v)
    if t not in _MODELED or (t is int and not _I64_MIN <= v <= _I64_MAX):
        raise _Fallback


def _eq(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is str or ta is bool or ta is float:
            return bool(a == b)
        if ta is int:
            _check(a)
            _check(b)
            return bool(a == b)
        if a is None:
            return True
        if ta is list:
            return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            if len(a) != len(b):
                return False
            for k, v in a.items():
                if type(k) is not str:
                    raise _Fallback
                if k not in b or not _eq(v, b[k]):
                    return False
            return True
        raise _Fallback
    if (ta is int or ta is float) and (tb is int or tb is float):
        _check(a)
        _check(b)
        return float(a) == float(b)
    _check(a)
    _check(b)
    return False


def _cmp(a: Any, b: Any) -> int | None:
    """-1/0/1, or None where CEL has no ordering (an error)."""
    ta, tb = type(a), type(b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        _check(a)
        _check(b)
        if ta is float or tb is float:
            a, b = float(a), float(b)
            if math.isnan(a) or math.isnan(b):
                return None
        return -1 if a < b else (1 if a > b else 0)
    if ta is tb and (ta is str or ta is bool):
        return -1 if a < b else (1 if a > b else 0)
    _check(a)
    _check(b)
    return None


def _to_double(v: Any) -> Any:
    t = type(v)
    if t is float:
        return v
    if t is int:
        _check(v)
        return float(v)
    if t is str:
        return float(v) if _RUST_FLOAT.fullmatch(v) else _ERR
    _check(v)
    return _ERR


def _to_int(v: Any) -> Any:
    t = type(v)
    if t is int:
        _check(v)
        return v
    if t is float:
        return int(v) if -_F_LIMIT < v < _F_LIMIT else _ERR
    if t is str:
        if not _RUST_INT.fullmatch(v):
            return _ERR
        n = int(v)
        return n if _I64_MIN <= n <= _I64_MAX else _ERR
    _check(v)
    return _ERR


def _rust_float_str(f: float) -> str:
    if math.isnan(f):
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "inf" if f > 0 else "-inf"
    s = format(Decimal(repr(f)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def _to_string(v: Any) -> Any:
    t = type(v)
    if t is str:
        return v
    if t is int:
        _check(v)
        return str(v)
    if t is float:
        return _rust_float_str(v)
    _check(v)
    return _ERR


def _size(v: Any) -> Any:
    t = type(v)
    if t is str:
        return len(v.encode("utf-8", "surrogatepass"))
    if t is list or t is dict:
        return len(v)
    _check(v)
    return _ERR


_CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "double": _to_double,
    "int": _to_int,
    "string": _to_string,
    "size": _size,
}

# --- parser -----------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|0[xX][0-9a-fA-F]+|[0-9]+)
    |(?P<str>"[^"\\\n\r]*"|'[^'\\\n\r]*')
    |(?P<id>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>\|\||&&|==|!=|<=|>=|<|>|!|\(|\)|\[|\]|,|\.|-)
    )""",
    re.VERBOSE,
)
_RELOPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_NO_CONST = object()


def _tokenize(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return out
        m = _TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:
            raise _Unsupported
        kind = m.lastgroup
        value = m.group(kind)
        pos = m.end()
        # `1u`, `1.5x`, `r"..."`, `b'..'`: a literal glued to letters or quotes is syntax outside the subset.
        if kind in ("num", "id") and pos < end and (text[pos].isalnum() or text[pos] in "_\"'"):
            raise _Unsupported
        out.append((kind, value))


class _Node:
    """A parsed sub-expression: a constant, a field path, or a closure."""

    __slots__ = ("const", "fn", "path")

    def __init__(self, fn: _Fn | None = None, const: Any = _NO_CONST, path: tuple[str, ...] | None = None) -> None:
        self.const = const
        self.path = path
        if fn is None:
            fn = _path_fn(path) if path is not None else _const_fn(const)
        self.fn = fn


def _const_fn(value: Any) -> _Fn:
    return lambda ctx: value


def _path_fn(path: tuple[str, ...]) -> _Fn:
    root, fields = path[0], path[1:]
    if not fields:
        return lambda ctx: ctx.get(root, _ERR)
    if len(fields) == 1:
        (f,) = fields

        def one(ctx: dict[str, Any]) -> Any:
            d = ctx.get(root, _ERR)
            if type(d) is dict:
                return d.get(f, _ERR)
            if d is _ERR:
                return _ERR
            _check(d)
            return _ERR

        return one

    def many(ctx: dict[str, Any]) -> Any:
        v = ctx.get(root, _ERR)
        for f in fields:
            if type(v) is dict:
                v = v.get(f, _ERR)
            else:
                if v is not _ERR:
                    _check(v)
                return _ERR
        return v

    return many


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end" or (value is not None and tok[1] != value):
            raise _Unsupported
        self.i += 1
        return tok

    def parse(self) -> _Node:
        node = self.or_()
        if self.peek()[0] != "end":
            raise _Unsupported
        return node

    def or_(self) -> _Node:
        node = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            node = _or(node.fn, self.and_().fn)
        return node

    def and_(self) -> _Node:
        node = self.rel()
        while self.peek() == ("op", "&&"):
            self.take()
            node = _and(node.fn, self.rel().fn)
        return node

    def rel(self) -> _Node:
        node = self.unary()
        while True:
            kind, value = self.peek()
            if value not in _RELOPS or kind == "str":
                return node
            self.take()
            right = self.unary()
            node = _relation(value, node, right)

    def unary(self) -> _Node:
        kind, value = self.peek()
        if (kind, value) == ("op", "!"):
            self.take()
            return _not(self.unary().fn)
        if (kind, value) == ("op", "-"):
            sign = 1
            while self.peek() == ("op", "-"):
                self.take()
                sign = -sign
            kind, text = self.take()
            if kind != "num" or self.peek() in (("op", "."), ("op", "[")):
                raise _Unsupported
            return _Node(const=_number(text, sign))
        return self.member()

    def member(self) -> _Node:
        node = self.primary()
        while self.peek() == ("op", "."):
            self.take()
            kind, name = self.take()
            if kind != "id" or node.path is None or self.peek() in (("op", "("), ("op", "[")):
                raise _Unsupported
            node = _Node(path=(*node.path, name))
        if self.peek() == ("op", "["):
            raise _Unsupported
        return node

    def primary(self) -> _Node:
        kind, value = self.take()
        if kind == "num":
            return _Node(const=_number(value, 1))
        if kind == "str":
            return _Node(const=value[1:-1])
        if kind == "id":
            if value in ("true", "false", "null"):
                return _Node(const={"true": True, "false": False, "null": None}[value])
            if self.peek() == ("op", "("):
                return self.call(value)
            if value == "in":
                raise _Unsupported
            return _Node(path=(value,))
        if value == "(":
            node = self.or_()
            self.take(")")
            # A parenthesised path is no longer a path for `has()`, but stays a value.
            return _Node(fn=node.fn, const=node.const)
        if value == "[":
            items: list[Any] = []
            while self.peek() != ("op", "]"):
                item = self.unary()
                if item.const is _NO_CONST:
                    raise _Unsupported
                items.append(item.const)
                if self.peek() == ("op", ","):
                    self.take()
                elif self.peek() != ("op", "]"):
                    raise _Unsupported
            self.take("]")
            return _Node(const=items)
        raise _Unsupported

    def call(self, name: str) -> _Node:
        if name not in _FUNCTIONS:
            raise _Unsupported
        self.take("(")
        arg = self.or_()
        self.take(")")
        if name == "has":
            if arg.path is None or len(arg.path) < 2:
                raise _Unsupported
            return _Node(fn=_has(arg.path))
        convert = _CONVERSIONS[name]
        inner = arg.fn

        def call(ctx: dict[str, Any]) -> Any:
            v = inner(ctx)
            return _ERR if v is _ERR else convert(v)

        return _Node(fn=call)


def _number(text: str, sign: int) -> int | float:
    if "." in text or (("e" in text or "E" in text) and not text.startswith(("0x", "0X"))):
        return sign * float(text)
    n = sign * int(text, 0 if text.startswith(("0x", "0X")) else 10)
    if not _I64_MIN <= n <= _I64_MAX:
        raise _Unsupported
    return n


# --- combinators ------------------------------------------------------------------------------------------------


def _or(left: _Fn, right: _Fn) -> _Node:
    def f(ctx: dict[str, Any]) -> Any:
        a = left(ctx)
        if a is True:
            return True
        b = right(ctx)
        if b is True:
            return True
        return False if a is False and b is False else _ERR

    return _Node(fn=f)


def _and(left: _Fn, right: _Fn) -> _Node:
    def f(ctx: dict[str, Any]) -> Any:
        a = left(ctx)
        if a is False:
            return False
        b = right(ctx)
        if b is False:
            return False
        return True if a is True and b is True else _ERR

    return _Node(fn=f)


def _not(inner: _Fn) -> _Node:
    def f(ctx: dict[str, Any]) -> Any:
        a = inner(ctx)
        return False if a is True else (True if a is False else _ERR)

    return _Node(fn=f)


def _has(path: tuple[str, ...]) -> _Fn:
    parent, name = _path_fn(path[:-1]), path[-1]

    def f(ctx: dict[str, Any]) -> Any:
        d = parent(ctx)
        if type(d) is dict:
            return name in d
        if d is not _ERR:
            _check(d)
        return _ERR

    return f


_ORDER: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def _relation(op: str, left: _Node, right: _Node) -> _Node:
    lf, rf = left.fn, right.fn
    if op == "in":
        items = right.const
        if type(items) is not list:
            raise _Unsupported

        def is_in(ctx: dict[str, Any]) -> Any:
            v = lf(ctx)
            if v is _ERR:
                return _ERR
            found = False
            for item in items:
                if _eq(v, item):
                    found = True
            return found

        return _Node(fn=is_in)
    if op in ("==", "!="):
        want = op == "=="
        c = right.const
        if type(c) is str or type(c) is bool:
            # The common `state == "open"` / `data.alarm == true`: same type compares directly, others are unequal.
            tc = type(c)

            def eq_const(ctx: dict[str, Any]) -> Any:
                v = lf(ctx)
                if type(v) is tc:
                    return (v == c) is want
                if v is _ERR:
                    return _ERR
                _check(v)
                return not want

            return _Node(fn=eq_const)

        def eq(ctx: dict[str, Any]) -> Any:
            a = lf(ctx)
            if a is _ERR:
                return _ERR
            b = rf(ctx)
            if b is _ERR:
                return _ERR
            return _eq(a, b) is want

        return _Node(fn=eq)
    test = _ORDER[op]
    c = right.const
    if type(c) is float and not math.isnan(c):
        # The common `double(data.temp) > 70.0` / `value >= 450.0`.
        def cmp_float(ctx: dict[str, Any]) -> Any:
            v = lf(ctx)
            if type(v) is float:
                return _ERR if math.isnan(v) else test(-1 if v < c else (1 if v > c else 0))
            if v is _ERR:
                return _ERR
            r = _cmp(v, c)
            return _ERR if r is None else test(r)

        return _Node(fn=cmp_float)

    def order(ctx: dict[str, Any]) -> Any:
        a = lf(ctx)
        if a is _ERR:
            return _ERR
        b = rf(ctx)
        if b is _ERR:
            return _ERR
        r = _cmp(a, b)
        return _ERR if r is None else test(r)

    return _Node(fn=order)


def compile_fast(expression: str) -> FastCondition | None:
    """Compile a CEL condition of the common subset into a closure; None if it uses anything else.

    The closure returns True / False (False also for a non-bool result, as the engine reads it), `ERROR` where CEL
    raises, or None where the context holds a value the fast path does not model (evaluate with CEL then).
    """
    try:
        node = _Parser(_tokenize(expression)).parse()
    except _Unsupported:
        return None
    fn = node.fn

    def run(ctx: dict[str, Any]) -> bool | Error | None:
        try:
            r = fn(ctx)
        except _Fallback:
            return None
        if r is True:
            return True
        return ERROR if r is _ERR else False

    return run


# ---------------------------------------------------------------------------------------------------------------
# Guards: a cheap necessary condition of a whole condition, so the engine can skip rules without evaluating them.

MISSING: Any = object()  # a path the event does not have
_LITERALS = {"true": True, "false": False, "null": None}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "=="}
_CMP: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_F53 = 2.0**53


class Guard:
    """`path op const`, one conjunct of a condition: when `admits(value)` is False the condition cannot be true.

    `admits` answers False only where it is certain: a value of another type than the constant for `==` (CEL's
    `==` across types is false), a number that fails the comparison, a missing path the condition also tests with
    `has()`. Anything the condition would turn into an error or evaluate differently (strings through `double()`,
    NaN, null in an ordering, huge ints) is admitted, so the full condition decides and counts its errors.
    """

    __slots__ = ("const", "has", "key", "op", "path")

    def __init__(self, path: tuple[str, ...], op: str, const: Any, *, has: bool) -> None:
        self.path = path
        self.op = op
        self.const = const
        self.has = has
        self.key = (path, op, type(const).__name__, const, has)

    def admits(self, v: Any) -> bool:
        """False only when the condition is certainly not true for an event whose value at `path` is `v`."""
        if v is MISSING:
            return not self.has
        t = type(v)
        if t not in _MODELED:
            return True
        c = self.const
        if self.op == "==":
            ct = type(c)
            if ct is bool or t is bool:
                return t is ct and v is c
            if c is None or v is None:
                return c is None and v is None
            if ct is str:
                return v == c if t is str else False
            # c is a number
            if t is int or t is float:
                return (abs(v) >= _F53 and t is int) or float(v) == float(c)
            return False
        if (t is int and abs(v) < _F53) or (t is float and not math.isnan(v)):
            return _CMP[self.op](float(v), float(c))
        return True

    def __repr__(self) -> str:
        return f"Guard({'.'.join(self.path)} {self.op} {self.const!r}{', has' if self.has else ''})"


def _split_and(tokens: list[tuple[str, str]]) -> list[list[tuple[str, str]]] | None:
    """The top-level `&&` conjuncts; None when the expression has a top-level `||` (or unbalanced parentheses)."""
    parts: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for tok in tokens:
        if tok[1] in ("(", "["):
            depth += 1
        elif tok[1] in (")", "]"):
            depth -= 1
        if depth == 0 and tok == ("op", "||"):
            return None
        if depth == 0 and tok == ("op", "&&"):
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts if depth == 0 else None


def _path(tokens: list[tuple[str, str]]) -> tuple[str, ...] | None:
    """`a.b.c` as a path; None for anything else (a call, an index, a literal)."""
    if not tokens or len(tokens) % 2 == 0:
        return None
    names = tokens[0::2]
    dots = tokens[1::2]
    if any(k != "id" or v in _LITERALS or v in _FUNCTIONS for k, v in names):
        return None
    if any(d != ("op", ".") for d in dots):
        return None
    return tuple(v for _, v in names)


def _literal(tokens: list[tuple[str, str]]) -> tuple[bool, Any]:
    """(True, value) for a bool / null / string / number literal (with a leading minus)."""
    sign = 1
    if len(tokens) == 2 and tokens[0] == ("op", "-"):
        sign, tokens = -1, tokens[1:]
    if len(tokens) != 1:
        return False, None
    kind, text = tokens[0]
    if kind == "id" and text in _LITERALS and sign == 1:
        return True, _LITERALS[text]
    if kind == "str" and sign == 1:
        return True, text[1:-1]
    if kind == "num":
        try:
            value = _number(text, sign)
        except _Unsupported:
            return False, None
        if isinstance(value, float) and not math.isfinite(value):
            return False, None
        return True, value
    return False, None


def _atom(tokens: list[tuple[str, str]]) -> tuple[tuple[str, ...], str, Any, bool] | None:
    """`path op literal`, `literal op path` or `double(path) op number` as (path, op, literal, through_double)."""
    for i, (kind, text) in enumerate(tokens):
        if kind == "op" and text in _FLIP:
            left, op, right = tokens[:i], text, tokens[i + 1 :]
            break
    else:
        return None
    ok, const = _literal(right)
    side = left
    if not ok:
        ok, const = _literal(left)
        side, op = right, _FLIP[op]
        if not ok:
            return None
    through_double = False
    if len(side) >= 4 and side[0] == ("id", "double") and side[1] == ("op", "(") and side[-1] == ("op", ")"):
        side, through_double = side[2:-1], True
    path = _path(side)
    if path is None:
        return None
    if op != "==" and (isinstance(const, bool) or not isinstance(const, int | float)):
        return None  # an ordering against a string / bool / null: leave it to the full condition
    if through_double and op == "==":
        return None
    return path, op, const, through_double


def guard(expression: str) -> Guard | None:
    """A `Guard` of the condition (one of its top-level conjuncts), or None when no conjunct has a simple form.

    `has(p) && double(p) > 70.0` gives `p > 70.0` with `has`; `data.alarm == true && ...` gives `data.alarm ==
    true`. An equality is preferred over an ordering (it is more selective).
    """
    try:
        conjuncts = _split_and(_tokenize(expression))
    except _Unsupported:
        return None
    if conjuncts is None:
        return None
    has: set[tuple[str, ...]] = set()
    atoms: list[tuple[tuple[str, ...], str, Any, bool]] = []
    for part in conjuncts:
        if len(part) >= 4 and part[0] == ("id", "has") and part[1] == ("op", "(") and part[-1] == ("op", ")"):
            path = _path(part[2:-1])
            if path is not None and len(path) >= 2:
                has.add(path)
            continue
        found = _atom(part)
        if found is not None:
            atoms.append(found)
    if not atoms:
        return None
    path, op, const, _ = min(atoms, key=lambda a: a[1] != "==")
    return Guard(path, op, const, has=path in has)
