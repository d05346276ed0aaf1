"""Time is aware UTC; naive datetimes are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import time_machine

from safecity.kernel import clock


def test_now_is_aware_utc() -> None:
    now = clock.now()
    assert now.tzinfo is UTC


def test_now_follows_a_frozen_clock() -> None:
    with time_machine.travel(datetime(2025, 6, 1, 12, 0, tzinfo=UTC), tick=False):
        assert clock.now() == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_ensure_aware_rejects_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        clock.ensure_aware(datetime(2025, 1, 1, 8, 0))  # noqa: DTZ001 - the point of the test


def test_ensure_aware_converts_to_utc() -> None:
    shanghai = datetime(2025, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    result = clock.ensure_aware(shanghai)
    assert result == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
    assert result.tzinfo is UTC


def test_from_epoch() -> None:
    assert clock.from_epoch(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert clock.from_epoch(1_700_000_000.5).microsecond == 500_000
