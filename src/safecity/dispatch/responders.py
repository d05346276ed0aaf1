"""Responder registry rows (pure): police units, department crews and community responders, their on-duty shifts and
their CSV / GeoJSON import format.

In CSV, list columns (`capabilities`, `service_codes`) are separated by `;` and a shift reads
`mon-fri 08:00-20:00; sat,sun 09:00-13:00` (an end before the start runs past midnight); in JSON and GeoJSON
properties they are arrays and `[{"days": [...], "start": "08:00", "end": "20:00"}]`.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from safecity.dispatch.recommend import ResponderKind, ResponderStatus
from safecity.kernel.errors import InvalidInput
from safecity.kernel.tabular import ImportFormat

RESPONDER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class UnitType(StrEnum):
    """What a responder moves as, or is."""

    CAR = "car"
    MOTORBIKE = "motorbike"
    FOOT = "foot"
    CREW = "crew"
    GUARD = "guard"
    VOLUNTEER = "volunteer"
    CHAT_GROUP = "chat_group"


# Which unit types each kind of responder may have.
UNIT_TYPES: dict[ResponderKind, frozenset[UnitType]] = {
    ResponderKind.POLICE: frozenset({UnitType.CAR, UnitType.MOTORBIKE, UnitType.FOOT}),
    ResponderKind.DEPARTMENT: frozenset({UnitType.CREW, UnitType.CAR}),
    ResponderKind.COMMUNITY: frozenset({UnitType.GUARD, UnitType.VOLUNTEER, UnitType.CHAT_GROUP}),
}


def _days(value: Any) -> Any:
    """`mon-fri` / `sat,sun` / a list of day names -> the list of day names."""
    if not isinstance(value, str):
        return value
    out: list[str] = []
    for part in value.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unknown day {part!r}: use {', '.join(DAYS)} and ranges like mon-fri")
        i, j = DAYS.index(first), DAYS.index(last or first)
        out.extend(DAYS[k % 7] for k in range(i, j + 1 if j >= i else j + 8))
    return out


class ShiftSpan(BaseModel):
    """On duty on these days from `start` to `end`, node-local time (an end before the start runs past midnight)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: Annotated[tuple[str, ...], BeforeValidator(_days)] = Field(min_length=1)
    start: time
    end: time

    @model_validator(mode="after")
    def _known_days(self) -> ShiftSpan:
        unknown = [d for d in self.days if d not in DAYS]
        if unknown:
            raise ValueError(f"unknown day {unknown[0]!r}: use {', '.join(DAYS)}")
        return self

    def covers(self, at: datetime) -> bool:
        """Whether local time `at` falls in this span (an overnight span counts from its start day)."""
        day, now = DAYS[at.weekday()], at.time()
        if self.start <= self.end:
            return day in self.days and self.start <= now < self.end
        yesterday = DAYS[(at.weekday() - 1) % 7]
        return (day in self.days and now >= self.start) or (yesterday in self.days and now < self.end)


_SPAN = re.compile(r"^\s*(?P<days>[a-z,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$", re.I)


def _shift(value: Any) -> Any:
    """CSV form `mon-fri 08:00-20:00; sat 09:00-12:00` -> spans; JSON lists pass through."""
    if not isinstance(value, str):
        return value
    spans = []
    for part in filter(None, (p.strip() for p in value.split(";"))):
        m = _SPAN.match(part)
        if m is None:
            raise ValueError(f"shift {part!r}: expected like 'mon-fri 08:00-20:00'")
        spans.append({"days": m["days"], "start": m["start"].zfill(5), "end": m["end"].zfill(5)})
    return spans


def _listed(value: Any) -> Any:
    """CSV form `a;b` -> ["a", "b"]."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()]
    return value


Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Tokens = Annotated[list[Token], BeforeValidator(_listed), Field(max_length=64)]


def on_duty(shift: list[ShiftSpan] | None, at: datetime) -> bool:
    """Whether a responder with this shift is on duty at local time `at` (no shift: always)."""
    return shift is None or any(span.covers(at) for span in shift)


class ResponderIn(BaseModel):
    """A responder to register (its live status and position arrive later, over MQTT or HTTP)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(pattern=RESPONDER_ID_PATTERN, description="Call sign or roster id (ASCII).")
    kind: ResponderKind
    name: str = Field("", max_length=200, pattern=TEXT_PATTERN, description="Display name; the id when empty.")
    unit_type: UnitType
    station: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN, description="Police station (police).")
    department: str | None = Field(
        None, max_length=64, pattern=TEXT_PATTERN, description="Owning department (department crews)."
    )
    service_codes: Tokens = Field(default_factory=list, description="Open311 service codes a crew handles.")
    capabilities: Tokens = Field(default_factory=list, description="Capabilities or skills (e.g. medical, ladder).")
    town: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN)
    community: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN, description="Area it serves.")
    shift: Annotated[list[ShiftSpan] | None, BeforeValidator(_shift)] = Field(
        None, description="On-duty schedule in the node's zone; none: always on duty."
    )
    lon: float | None = Field(None, ge=-180, le=180, description="Starting position (WGS84).")
    lat: float | None = Field(None, ge=-90, le=90)
    contact: str | None = Field(
        None,
        pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$",
        description="Id of the notify subscription (webhook, chat group, e-mail) that receives its task messages.",
    )

    @model_validator(mode="after")
    def _checks(self) -> ResponderIn:
        if (self.lon is None) != (self.lat is None):
            raise ValueError("lon and lat must be given together")
        if self.unit_type not in UNIT_TYPES[self.kind]:
            allowed = ", ".join(sorted(UNIT_TYPES[self.kind]))
            raise ValueError(f"unit_type {self.unit_type.value} is not one of a {self.kind.value}'s: {allowed}")
        if self.kind is ResponderKind.POLICE and not self.station:
            raise ValueError("a police unit needs its station")
        if self.kind is ResponderKind.DEPARTMENT and not self.department:
            raise ValueError("a department crew needs its department")
        if not self.name:
            self.name = self.id
        return self

    def row(self, now: datetime) -> dict[str, Any]:
        """The registry row of a new responder: available, positioned where the file says (if it does)."""
        values = self.model_dump(mode="json", exclude={"lon", "lat"})
        fix = self.lon is not None
        return {
            **values,
            "status": ResponderStatus.AVAILABLE.value,
            "incident_id": None,
            "lon": self.lon,
            "lat": self.lat,
            "heading": None,
            "fix_at": now if fix else None,
            "updated_at": now,
            "version": 1,
        }


CSV_COLUMNS = tuple(ResponderIn.model_fields)


class ResponderFileEmpty(InvalidInput):
    """A responder import file holds nothing at all."""

    code = "dispatch.responder_file_empty"
    title_en = "Empty import file"
    title_zh = "导入文件为空"
    message_en = "The file is empty: a CSV needs a header row naming the columns (at least id, kind and unit_type)."
    message_zh = "文件为空：CSV 第一行须为列名表头（至少包含 id、kind 和 unit_type）。"


class ResponderCsvHeaderMissing(InvalidInput):
    """The first CSV line is not a header with the required columns."""

    code = "dispatch.responder_csv_header_missing"
    title_en = "CSV header missing"
    title_zh = "缺少 CSV 表头"
    message_en = (
        "The first line must be a header naming the columns (e.g. id,kind,unit_type,station); missing: {missing}."
    )
    message_zh = "第一行须为列名表头（例如 id,kind,unit_type,station）；缺少列：{missing}。"


class ResponderCsvEncoding(InvalidInput):
    """A responder CSV is neither UTF-8 nor GB18030."""

    code = "dispatch.responder_csv_encoding"
    title_en = "Unreadable CSV encoding"
    title_zh = "无法识别 CSV 编码"
    message_en = "The CSV could not be decoded: save it as UTF-8 (with or without BOM) or GBK/GB18030."
    message_zh = "无法解码该 CSV：请保存为 UTF-8（带或不带 BOM）或 GBK/GB18030 编码。"


class ResponderGeoJsonInvalid(InvalidInput):
    """A responder GeoJSON body is not JSON or not a FeatureCollection."""

    code = "dispatch.responder_geojson_invalid"
    title_en = "Invalid GeoJSON"
    title_zh = "GeoJSON 无效"
    message_en = "The body must be JSON: a GeoJSON FeatureCollection of Point features."
    message_zh = "请求体须为 JSON：由 Point 要素组成的 GeoJSON FeatureCollection。"


RESPONDER_FORMAT: ImportFormat[ResponderIn] = ImportFormat(
    model=ResponderIn,
    columns=CSV_COLUMNS,
    required=("id", "kind", "unit_type"),
    empty=ResponderFileEmpty,
    header_missing=ResponderCsvHeaderMissing,
    encoding=ResponderCsvEncoding,
    geojson_invalid=ResponderGeoJsonInvalid,
    attributes=None,
)
