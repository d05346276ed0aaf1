"""store.rows.utc: the one gate every time bound passes on its way into a query or a row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from safecity.kernel.errors import InvalidInput
from safecity.store.rows import utc


def test_aware_times_become_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    assert utc(datetime(2026, 11, 29, 8, 0, tzinfo=shanghai)) == datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
    assert utc(datetime(2026, 11, 29, 8, 0, tzinfo=shanghai)).tzinfo is UTC


def test_naive_times_are_refused() -> None:
    with pytest.raises(InvalidInput, match="time zone"):
        utc(datetime(2026, 11, 29, 8, 0))  # noqa: DTZ001 - the case under test


@pytest.mark.parametrize(
    "edge",
    [
        datetime(1, 1, 1, 0, 1, 20, tzinfo=timezone(timedelta(hours=1))),  # found by schemathesis as ?since=
        datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))),
    ],
)
def test_times_without_a_utc_year_are_invalid_input_not_a_crash(edge: datetime) -> None:
    with pytest.raises(InvalidInput, match="outside the years 1-9999"):
        utc(edge)
