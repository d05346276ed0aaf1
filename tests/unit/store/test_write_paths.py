"""Every write transaction of the node goes through `store.engine.write_transaction` (SQLite's fair write gate).

A plain `engine.begin()` beside the gate waits in SQLite's busy handler instead, where a writer committing back to
back can starve it past its busy timeout (`tests/integration/store/test_store_engine.py` shows both).
"""

from __future__ import annotations

import ast
from pathlib import Path

import safecity

SRC = Path(safecity.__file__).resolve().parent
# The gate itself and Alembic's migrations (run before the node starts, alone) may begin transactions directly.
ALLOWED = {SRC / "store" / "engine.py"}
ALLOWED_DIRS = (SRC / "store" / "migrations",)


def begin_calls(source: str) -> list[int]:
    """Lines of the calls `<something>.begin()` with no arguments (an engine's or a connection's transaction)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "begin"
        and not node.args
        and not node.keywords
    ]


def test_begin_calls_are_found() -> None:
    assert begin_calls("async def f(e):\n    async with e.engine.begin() as c:\n        pass\n") == [2]
    assert begin_calls("async def f(e):\n    async with write_transaction(e.engine) as c:\n        pass\n") == []


def test_no_module_begins_a_transaction_past_the_write_gate() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        if path not in ALLOWED and not any(d in path.parents for d in ALLOWED_DIRS)
        for line in begin_calls(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"use safecity.store.engine.write_transaction(engine) instead of .begin(): {offenders}"
