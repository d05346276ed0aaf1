"""One way to tell time: aware UTC datetimes; naive ones are rejected at the edges."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def ensure_aware(value: datetime) -> datetime:
    """Return `value` in UTC, refusing naive datetimes (they have no defined instant)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: a time zone is required")
    return value.astimezone(UTC)


def from_epoch(seconds: float) -> datetime:
    """Convert unix seconds to an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)
