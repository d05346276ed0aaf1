"""store.retry: transient failures are retried with doubling delays, refused writes are raised at once."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from safecity.store.retry import RefusedWrite, commit_retrying, is_refused

LOCKED = OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))
DUPLICATE = IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE constraint failed: events.id"))


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_refused_writes_are_integrity_and_data_errors_or_their_sqlstate_classes() -> None:
    assert is_refused(DUPLICATE)
    assert is_refused(DataError("INSERT ...", {}, Exception("value too long")))
    assert is_refused(OperationalError("INSERT ...", {}, _PgError("22001")))  # string_data_right_truncation
    assert is_refused(OperationalError("INSERT ...", {}, _PgError("23505")))  # unique_violation
    assert not is_refused(LOCKED)
    assert not is_refused(OperationalError("INSERT ...", {}, _PgError("57P01")))  # admin_shutdown: transient


async def test_transient_failures_are_retried_with_doubling_delays() -> None:
    failures: list[Exception] = [LOCKED, ConnectionResetError("reset by peer"), LOCKED]
    retries: list[tuple[str, float]] = []

    async def commit() -> int:
        if failures:
            raise failures.pop(0)
        return 7

    got = await commit_retrying(
        commit, initial_s=0.001, max_s=0.002, on_retry=lambda err, delay: retries.append((type(err).__name__, delay))
    )
    assert got == 7
    assert retries == [("OperationalError", 0.001), ("ConnectionResetError", 0.002), ("OperationalError", 0.002)]


async def test_a_refused_write_is_raised_at_once_with_its_cause() -> None:
    calls = 0

    async def commit() -> None:
        nonlocal calls
        calls += 1
        raise DUPLICATE

    with pytest.raises(RefusedWrite) as err:
        await commit_retrying(commit, initial_s=0.001, max_s=0.002, on_retry=lambda *_: pytest.fail("retried"))
    assert calls == 1
    assert err.value.cause is DUPLICATE
