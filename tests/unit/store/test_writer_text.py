"""The SQLite writer's hand-made parameter text must be exactly what SQLAlchemy itself writes and reads back."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from safecity.store.driver_thread import sqlite_time

BIND = sqlite.DATETIME().bind_processor(sqlite.dialect())
RESULT = sqlite.DATETIME().result_processor(sqlite.dialect(), None)


# Hypothesis takes naive bounds and adds the zone itself.
NAIVE_MIN, NAIVE_MAX = datetime(1970, 1, 1), datetime(2200, 1, 1)  # noqa: DTZ001


@given(st.datetimes(min_value=NAIVE_MIN, max_value=NAIVE_MAX, timezones=st.just(UTC)))
@example(datetime(2026, 11, 29, 3, 49, 58, 0, tzinfo=UTC))
@example(datetime(2026, 11, 29, 3, 49, 58, 1, tzinfo=UTC))
def test_time_text_is_sqlalchemys_own(value: datetime) -> None:
    assert BIND is not None and RESULT is not None
    text = sqlite_time(value)
    assert text == BIND(value.replace(tzinfo=None))
    assert RESULT(text) == value.replace(tzinfo=None)
