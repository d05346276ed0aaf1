"""Helpers shared by the normalizers: strict decoding, coordinates, timestamps, plates."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from safecity.sensing.model import DeadLetterReason, NormalizeError, Reading

T = TypeVar("T")

# Longest detail kept from a validation message: details end up in dead letters and logs.
_DETAIL_MAX = 200
# Separators people and cameras put inside plates ("沪A·12345", "AB-123 CD").
_PLATE_SEPARATORS = str.maketrans("", "", " \t\r\n-·•・.")
PLATE_MIN_LEN = 2
PLATE_MAX_LEN = 12


def decode(decoder: msgspec.json.Decoder[T], raw: bytes, device_id: str | None) -> T:
    """Decode `raw` strictly; malformed JSON and schema violations become a NormalizeError."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as err:
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, str(err)[:_DETAIL_MAX], device_id) from err
    except msgspec.DecodeError as err:
        raise NormalizeError(DeadLetterReason.MALFORMED_JSON, str(err)[:_DETAIL_MAX], device_id) from err
    except UnicodeDecodeError as err:  # msgspec decodes strings itself and raises this for invalid UTF-8
        detail = f"invalid UTF-8 at byte {err.start}: JSON text must be UTF-8"
        raise NormalizeError(DeadLetterReason.MALFORMED_JSON, detail, device_id) from err
    except RecursionError as err:  # msgspec's nesting limit (about 1,000 levels) surfaces as RecursionError
        detail = f"nested deeper than {MAX_DEPTH} levels"
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, detail, device_id) from err


# What every store can keep, checked at the door so an accepted event is never refused by the writer (issue: a
# 2**100 integer or 300 nested objects failed in orjson, a NUL in a string failed on PostgreSQL). The same limits on
# SQLite and PostgreSQL: an event accepted by one is accepted by the other.
MAX_DEPTH = 32
"""Deepest nesting of objects and arrays kept in an event's `data`."""
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Column widths of the events table (store.tables) for the texts a sender chooses.
MAX_MESSAGE_ID = 128
MAX_STATE = 64


def _storable_problem(value: object, depth: int) -> str | None:
    """Why `value` (JSON-like data) cannot be stored, or None; `depth` counts the enclosing containers."""
    if isinstance(value, str):
        return "a text holds a NUL character (U+0000)" if "\x00" in value else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if _INT64_MIN <= value <= _INT64_MAX else "an integer is outside the 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "a number is not finite"
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                return "a field name holds a NUL character (U+0000)"
            problem = _storable_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a value of type {type(value).__name__} cannot be stored"


def _flat_problem(data: dict[str, Any]) -> str | None:
    """`_storable_problem(data, 1)`, quicker for the usual flat object of texts, numbers and flags."""
    for key, value in data.items():
        kind = type(value)
        if type(key) is str and "\x00" not in key:
            if kind is bool or value is None:
                continue
            if kind is float and math.isfinite(value):
                continue
            if kind is str and "\x00" not in value:
                continue
            if kind is int and _INT64_MIN <= value <= _INT64_MAX:
                continue
        # Nested, or a problem: the full check finds it and says what it is.
        return _storable_problem(data, 1)
    return None


def check_storable(reading: Reading) -> None:
    """Refuse a reading the event store could not keep (INVALID_PAYLOAD), with the same limits on every database."""
    device_id = reading.device_id
    problem: str | None = None
    if reading.message_id is not None and len(reading.message_id) > MAX_MESSAGE_ID:
        problem = f"id is longer than {MAX_MESSAGE_ID} characters"
    elif reading.state is not None and len(reading.state) > MAX_STATE:
        problem = f"state is longer than {MAX_STATE} characters"
    else:
        texts = [device_id, reading.message_id, reading.state, *reading.personal.values()]
        if any(t is not None and "\x00" in t for t in texts):
            problem = "a text holds a NUL character (U+0000)"
        elif reading.data:
            problem = _flat_problem(reading.data)
    if problem is not None:
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, f"cannot be stored: {problem}", device_id)


def check_coordinates(lon: float | None, lat: float | None, device_id: str | None) -> None:
    """Refuse a half position, a non-finite one or one outside WGS84 ranges (BAD_COORDINATES)."""
    if lon is None and lat is None:
        return
    if lon is None or lat is None:
        raise NormalizeError(DeadLetterReason.BAD_COORDINATES, "lon and lat must be given together", device_id)
    # NaN fails every comparison, so these checks also refuse NaN and the infinities.
    if not (-180.0 <= lon <= 180.0) or not (-90.0 <= lat <= 90.0):
        raise NormalizeError(DeadLetterReason.BAD_COORDINATES, f"lon={lon!r} lat={lat!r} out of range", device_id)


def check_finite(name: str, value: float | None, device_id: str | None) -> None:
    """Refuse NaN and infinities in a measured value (they cannot be stored or compared)."""
    if value is not None and not math.isfinite(value):
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, f"{name} is not finite", device_id)


def epoch_to_utc(seconds: float, device_id: str | None, field: str = "ts") -> datetime:
    """Convert unix seconds to aware UTC; values no calendar can hold are INVALID_PAYLOAD."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError) as err:
        raise NormalizeError(
            DeadLetterReason.INVALID_PAYLOAD, f"{field}={seconds!r} is not a valid time", device_id
        ) from err


def aware_utc(value: datetime, device_id: str | None, field: str = "ts") -> datetime:
    """Return an aware datetime in UTC; a naive one has no defined instant and is INVALID_PAYLOAD."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, f"{field} has no time zone offset", device_id)
    try:
        return value.astimezone(UTC)
    except OverflowError as err:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC equivalent
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, f"{field} is out of range", device_id) from err


def to_time(value: float | datetime | None, default: datetime, device_id: str | None, field: str = "ts") -> datetime:
    """Parse a payload time (unix seconds or RFC 3339 with offset) to aware UTC, or return `default`."""
    if value is None:
        return default
    if isinstance(value, datetime):
        return aware_utc(value, device_id, field)
    return epoch_to_utc(value, device_id, field)


def normalize_plate(plate: str) -> str | None:
    """Upper-case a plate and drop spaces and separators; None if what is left cannot be a plate."""
    cleaned = plate.translate(_PLATE_SEPARATORS).upper()
    if not (PLATE_MIN_LEN <= len(cleaned) <= PLATE_MAX_LEN) or not cleaned.isalnum():
        return None
    return cleaned
