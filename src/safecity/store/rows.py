"""Small helpers shared by the store's repositories: UTC in, aware UTC out, plain dict rows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from safecity.kernel.errors import InvalidInput


def utc(value: datetime) -> datetime:
    """Return an aware datetime in UTC; a naive one is refused (it names no instant)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput("naive datetime: a time zone is required")
    # SQLite keeps DateTime as text without its zone: storing and comparing in UTC keeps text order = time order.
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 or 9999-12-31T23:59-01:00: no such instant in UTC's years 1-9999
        raise InvalidInput(f"{value.isoformat()} is outside the years 1-9999 in UTC") from None


def aware(value: datetime | None) -> datetime | None:
    """Attach UTC to a naive datetime read back from SQLite (we only ever store UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def to_dict(row: Row[Any], time_columns: Iterable[str]) -> dict[str, Any]:
    """Return a result row as a dict with aware UTC datetimes."""
    data = dict(row._mapping)
    for column in time_columns:
        if column in data:
            data[column] = aware(data[column])
    return data
