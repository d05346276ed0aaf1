"""Calls-for-service records (one row per unit response) read into one closed call per incident (pure).

The format is DataSF's "Fire Department Calls for Service" (`Call Number`, `Unit ID`, `Received DtTm`,
`Dispatch DtTm`, `Response DtTm`, `On Scene DtTm`, `Available DtTm`, local times `%m/%d/%Y %I:%M:%S %p`), which many
computer-aided dispatch exports share. A call's stage times are its first unit's: first dispatch, first en route,
first on scene; it closes when its last unit is available again. A bad row is reported with its line number and the
rest are read.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from safecity.dispatch.kpi import StageTimes

TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
REQUIRED = ("Call Number", "Unit ID", "Call Type", "Received DtTm", "Dispatch DtTm")


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be read, by its line number in the file (the header is line 1)."""

    line: int
    reason: str


@dataclass(slots=True)
class Call:
    """One call for service and the units that responded to it."""

    call_number: str
    call_type: str
    priority: str | None
    station: str | None
    point: tuple[float, float] | None
    times: StageTimes
    units: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ReplayFile:
    """What a calls file held: calls in order of first appearance, and the rows refused."""

    calls: list[Call]
    bad_rows: list[BadRow]
    rows: int


def _time(row: dict[str, str], column: str, zone: ZoneInfo) -> datetime | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=zone).astimezone(UTC)
    except ValueError as err:
        raise ValueError(f"{column}: {text!r} is not {TIME_FORMAT}") from err


def _point(text: str | None) -> tuple[float, float] | None:
    """`"(lat, lon)"` -> (lon, lat); None when empty."""
    text = (text or "").strip().strip("()")
    if not text:
        return None
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError as err:
        raise ValueError(f"Location: {text!r} is not '(lat, lon)'") from err
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"Location: ({lat}, {lon}) is off the globe")
    return (lon, lat)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def read_calls(lines: Iterable[str], *, zone: str = "America/Los_Angeles") -> ReplayFile:
    """Read a calls-for-service CSV (its lines) into closed calls, keeping each bad row's line number and reason."""
    tz = ZoneInfo(zone)
    reader = csv.DictReader(lines)
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        return ReplayFile(calls=[], bad_rows=[BadRow(1, f"missing columns: {', '.join(missing)}")], rows=0)
    calls: dict[str, Call] = {}
    bad: list[BadRow] = []
    rows = 0
    line = 1
    for row in reader:
        rows += 1
        line = reader.line_num
        try:
            number = (row.get("Call Number") or "").strip()
            unit = (row.get("Unit ID") or "").strip()
            if not number or not unit:
                raise ValueError("Call Number and Unit ID are required")
            received = _time(row, "Received DtTm", tz)
            dispatched = _time(row, "Dispatch DtTm", tz)
            if received is None:
                raise ValueError("Received DtTm is required")
            times = StageTimes(
                opened_at=received,
                dispatched_at=dispatched,
                en_route_at=_time(row, "Response DtTm", tz),
                on_scene_at=_time(row, "On Scene DtTm", tz),
                closed_at=_time(row, "Available DtTm", tz),
            )
            if dispatched is not None and dispatched < received:
                raise ValueError("Dispatch DtTm is before Received DtTm")
            point = _point(row.get("Location"))
        except ValueError as err:
            bad.append(BadRow(line, str(err)))
            continue
        call = calls.get(number)
        if call is None:
            calls[number] = Call(
                call_number=number,
                call_type=(row.get("Call Type") or "").strip(),
                priority=(row.get("Original Priority") or "").strip() or None,
                station=(row.get("Station Area") or "").strip() or None,
                point=point,
                times=times,
                units=[unit],
            )
            continue
        call.units.append(unit)
        old = call.times
        call.times = StageTimes(
            opened_at=_earliest(old.opened_at, times.opened_at),
            dispatched_at=_earliest(old.dispatched_at, times.dispatched_at),
            en_route_at=_earliest(old.en_route_at, times.en_route_at),
            on_scene_at=_earliest(old.on_scene_at, times.on_scene_at),
            closed_at=_latest(old.closed_at, times.closed_at),
        )
    return ReplayFile(calls=list(calls.values()), bad_rows=bad, rows=rows)
