"""Device registry types (pydantic v2) and pure CSV / GeoJSON parsers for bulk import."""

from __future__ import annotations

import codecs
import csv
import io
import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safecity.kernel.errors import Conflict, InvalidInput, NotFound
from safecity.kernel.messages import field_message
from safecity.sensing.model import DeviceKind, DeviceStatus

# ASCII only: the id is a token of MQTT topics `safecity/<community>/<kind>/<device>`.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

# Columns of the CSV format (any other column goes into `attributes`).
# Printable text only: control characters (NUL above all) are refused by PostgreSQL and have no place in names.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"

CSV_COLUMNS = (
    "id",
    "kind",
    "name",
    "town",
    "community",
    "building",
    "lon",
    "lat",
    "owner",
    "status",
    "offline_after_s",
)
# Deprecated column names still read: old name -> current name.
CSV_ALIASES = {"heartbeat_s": "offline_after_s"}
OFFLINE_AFTER_DOC = (
    "Seconds of silence after which the device is reported offline (null: the node's "
    "ingest.heartbeat_timeout_s). `heartbeat_s` is accepted on input as a deprecated alias."
)


class DeviceNotFound(NotFound):
    """No device has this id."""

    code = "device.not_found"
    message_en = "Device {id} was not found."
    message_zh = "未找到设备 {id}。"


class DeviceExists(Conflict):
    """A device with this id is already registered."""

    code = "device.exists"
    message_en = "Device {id} already exists."
    message_zh = "设备 {id} 已存在。"


class DeviceFileEmpty(InvalidInput):
    """An import file holds nothing at all."""

    code = "device.file_empty"
    title_en = "Empty import file"
    title_zh = "导入文件为空"
    message_en = "The file is empty: a CSV needs a header row naming the columns (at least id and kind)."
    message_zh = "文件为空：CSV 第一行须为列名表头（至少包含 id 和 kind）。"


class DeviceCsvHeaderMissing(InvalidInput):
    """The first CSV line is not a header with the required columns (often: a file exported without one)."""

    code = "device.csv_header_missing"
    title_en = "CSV header missing"
    title_zh = "缺少 CSV 表头"
    message_en = "The first line must be a header naming the columns (e.g. id,kind,name,lon,lat); missing: {missing}."
    message_zh = "第一行须为列名表头（例如 id,kind,name,lon,lat）；缺少列：{missing}。"


class DeviceCsvEncoding(InvalidInput):
    """A CSV body is neither UTF-8 nor GB18030 (nor the charset it declares)."""

    code = "device.csv_encoding"
    title_en = "Unreadable CSV encoding"
    title_zh = "无法识别 CSV 编码"
    message_en = "The CSV could not be decoded: save it as UTF-8 (with or without BOM) or GBK/GB18030."
    message_zh = "无法解码该 CSV：请保存为 UTF-8（带或不带 BOM）或 GBK/GB18030 编码。"


class DeviceGeoJsonInvalid(InvalidInput):
    """A GeoJSON import body is not JSON or not a FeatureCollection."""

    code = "device.geojson_invalid"
    title_en = "Invalid GeoJSON"
    title_zh = "GeoJSON 无效"
    message_en = "The body must be JSON: a GeoJSON FeatureCollection of Point features."
    message_zh = "请求体须为 JSON：由 Point 要素组成的 GeoJSON FeatureCollection。"


_INT64 = (-(2**63), 2**63 - 1)
_MAX_DEPTH = 8


def check_json_value(value: Any, depth: int = 0) -> None:
    """Refuse JSON that storage cannot hold: integers beyond 64 bits, nesting deeper than 8 levels."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError("integer outside the 64-bit range")
        return
    if isinstance(value, dict):
        for item in value.values():
            check_json_value(item, depth + 1)
        return
    if isinstance(value, list):
        for item in value:
            check_json_value(item, depth + 1)
        return
    raise ValueError(f"not a JSON value: {type(value).__name__}")


class _Coordinates(BaseModel):
    """Lon/lat ranges and the rule that a position has both or neither."""

    lon: float | None = Field(None, ge=-180, le=180, description="WGS84 longitude.")
    lat: float | None = Field(None, ge=-90, le=90, description="WGS84 latitude.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> _Coordinates:
        if (self.lon is None) != (self.lat is None):
            raise ValueError("lon and lat must be given together")
        return self


class DeviceIn(_Coordinates):
    """A device to register."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(pattern=DEVICE_ID_PATTERN, description="The device's own id, as in its MQTT topic (ASCII).")
    kind: DeviceKind
    name: str = Field("", max_length=200, pattern=TEXT_PATTERN, description="Display name; the id when empty.")
    town: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN)
    community: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN)
    building: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN)
    owner: str | None = Field(None, max_length=200, pattern=TEXT_PATTERN)
    status: DeviceStatus = DeviceStatus.ACTIVE
    offline_after_s: float | None = Field(
        None,
        gt=0,
        le=7 * 86_400,
        validation_alias=AliasChoices("offline_after_s", "heartbeat_s"),
        description=OFFLINE_AFTER_DOC,
    )
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("attributes")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_json_value(value)
        return value

    @model_validator(mode="after")
    def _default_name(self) -> DeviceIn:
        if not self.name:
            self.name = self.id
        return self


class DevicePatch(BaseModel):
    """A partial update: only the fields given change (null clears an optional field)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: DeviceKind | None = None
    name: str | None = Field(None, min_length=1, max_length=200, pattern=TEXT_PATTERN)
    town: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN)
    community: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN)
    building: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN)
    lon: float | None = Field(None, ge=-180, le=180)
    lat: float | None = Field(None, ge=-90, le=90)
    owner: str | None = Field(None, max_length=200, pattern=TEXT_PATTERN)
    status: DeviceStatus | None = None
    offline_after_s: float | None = Field(
        None,
        gt=0,
        le=7 * 86_400,
        validation_alias=AliasChoices("offline_after_s", "heartbeat_s"),
        description=OFFLINE_AFTER_DOC,
    )
    attributes: dict[str, Any] | None = None

    @field_validator("attributes")
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        check_json_value(value)
        return value

    @model_validator(mode="after")
    def _checks(self) -> DevicePatch:
        given = self.model_fields_set
        for required in ("kind", "name", "status", "attributes"):
            if required in given and getattr(self, required) is None:
                raise ValueError(f"{required} cannot be null")
        if ("lon" in given) != ("lat" in given) or (self.lon is None) != (self.lat is None):
            raise ValueError("lon and lat must be given together")
        return self

    def changes(self) -> dict[str, Any]:
        """Return the fields that were given, as column values."""
        return self.model_dump(exclude_unset=True, mode="json")


class Device(DeviceIn):
    """A registered device."""

    last_seen: datetime | None = None
    created_at: datetime
    updated_at: datetime


class DevicePage(BaseModel):
    """One page of a device listing."""

    items: list[Device]
    total: int
    limit: int
    offset: int


class ImportMode(StrEnum):
    """What a bulk import does when some rows are bad."""

    VALID_ONLY = "valid_only"  # write the good rows, report the bad ones
    ALL_OR_NOTHING = "all_or_nothing"  # write nothing when any row is bad


class ImportIssue(BaseModel):
    """Why one CSV line or GeoJSON feature was refused."""

    line: int | None = Field(None, description="CSV line number (the header is line 1).")
    feature: int | None = Field(None, description="GeoJSON feature index (from 0).")
    id: str | None = None
    reason: str


class ImportReport(BaseModel):
    """What a bulk import did."""

    mode: ImportMode
    applied: bool = Field(description="False when nothing was written (all_or_nothing with errors).")
    created: int = 0
    updated: int = 0
    errors: list[ImportIssue] = Field(default_factory=list)


def validation_reason(err: ValidationError, locale: str = "en") -> str:
    """Summarize a validation error in one line, in the locale (zh-CN or en)."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        msg = field_message(e, locale)
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


# Row-level reasons of the parsers: (en, zh-CN).
_REASONS: dict[str, tuple[str, str]] = {
    "extra_values": ("more values than header columns", "值的个数多于表头列数"),
    "duplicate_line": ("duplicate id (first on line {first})", "id 重复（首次出现在第 {first} 行）"),
    "duplicate_feature": ("duplicate id (first at feature {first})", "id 重复（首次出现在第 {first} 个要素）"),
    "not_feature": ("not a GeoJSON Feature", "不是 GeoJSON Feature"),
    "properties": ("properties must be an object", "properties 必须是对象"),
    "geometry": ("geometry must be a Point [lon, lat]", "geometry 必须是 Point [lon, lat]"),
    "attributes": ("attributes must be an object", "attributes 必须是对象"),
}


def _reason(key: str, locale: str, **params: Any) -> str:
    en, zh = _REASONS[key]
    return (zh if locale.lower().startswith("zh") else en).format(**params)


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def decode_csv(body: bytes, charset: str | None = None) -> str:
    """Decode a CSV upload: UTF-8 (a BOM is dropped) when it is valid UTF-8, else the declared charset, else GB18030.

    Chinese Excel saves "CSV" in the ANSI code page, GBK (cp936), and sends no charset; GB18030 is a superset of
    GBK, and GBK text with any Chinese in it is almost never valid UTF-8, so trying UTF-8 first is safe.
    """
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    encodings = ["gb18030"]
    if charset:
        try:
            declared = codecs.lookup(charset.strip().strip('"')).name
        except LookupError:
            declared = None
        if declared is not None and declared not in ("utf-8", "utf-8-sig"):
            encodings.insert(0, declared)
    for encoding in encodings:
        try:
            return body.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DeviceCsvEncoding


def parse_csv(text: str, locale: str = "en") -> tuple[list[DeviceIn], list[ImportIssue]]:
    """Parse a device CSV (header row; columns CSV_COLUMNS, others become attributes) into rows and issues.

    A file that is empty or whose first line is not a header with `id` and `kind` is refused as a whole
    (DeviceFileEmpty, DeviceCsvHeaderMissing): there are no rows to report on.
    """
    rows: list[DeviceIn] = []
    issues: list[ImportIssue] = []
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if not any(fields):
        raise DeviceFileEmpty
    reader.fieldnames = fields
    missing = [c for c in ("id", "kind") if c not in fields]
    if missing:
        raise DeviceCsvHeaderMissing(missing=", ".join(missing))
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if None in record:
            issues.append(ImportIssue(line=line, id=record.get("id"), reason=_reason("extra_values", locale)))
            continue
        values: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        for header, raw in record.items():
            value = _blank_to_none(raw)
            column = CSV_ALIASES.get(header, header)
            if column in CSV_COLUMNS:
                if value is not None:
                    values[column] = value
            elif value is not None and column:
                attributes[column] = value
        if not values and not attributes:
            continue  # blank line
        values["attributes"] = attributes
        device_id = values.get("id")
        try:
            device = DeviceIn.model_validate(values)
        except ValidationError as err:
            issues.append(ImportIssue(line=line, id=device_id, reason=validation_reason(err, locale)))
            continue
        if device.id in seen:
            issues.append(
                ImportIssue(line=line, id=device.id, reason=_reason("duplicate_line", locale, first=seen[device.id]))
            )
            continue
        seen[device.id] = line
        rows.append(device)
    return rows, issues


def parse_geojson(data: str | bytes | dict[str, Any], locale: str = "en") -> tuple[list[DeviceIn], list[ImportIssue]]:
    """Parse a GeoJSON FeatureCollection of Points (properties hold the device fields) into rows and issues.

    A body that is not JSON or not a FeatureCollection is refused as a whole (DeviceGeoJsonInvalid).
    """
    if isinstance(data, (str, bytes)):
        if not data.strip():
            raise DeviceFileEmpty
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as err:
            # RecursionError: absurdly deep nesting; the body cap bounds the size, not the depth.
            raise DeviceGeoJsonInvalid from err
    if (
        not isinstance(data, dict)
        or data.get("type") != "FeatureCollection"
        or not isinstance(data.get("features"), list)
    ):
        raise DeviceGeoJsonInvalid
    rows: list[DeviceIn] = []
    issues: list[ImportIssue] = []
    seen: dict[str, int] = {}
    for index, feature in enumerate(data["features"]):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            issues.append(ImportIssue(feature=index, reason=_reason("not_feature", locale)))
            continue
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            issues.append(ImportIssue(feature=index, reason=_reason("properties", locale)))
            continue
        values = dict(props)
        if "id" not in values and isinstance(feature.get("id"), (str, int)):
            values["id"] = str(feature["id"])
        device_id = values.get("id") if isinstance(values.get("id"), str) else None
        geometry = feature.get("geometry")
        if geometry is not None:
            coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
            if (
                not isinstance(geometry, dict)
                or geometry.get("type") != "Point"
                or not isinstance(coords, list)
                or len(coords) < 2
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords[:2])
            ):
                issues.append(ImportIssue(feature=index, id=device_id, reason=_reason("geometry", locale)))
                continue
            values["lon"], values["lat"] = float(coords[0]), float(coords[1])
        known = set(DeviceIn.model_fields)
        extra = {k: v for k, v in values.items() if k not in known}
        values = {k: v for k, v in values.items() if k in known}
        attributes = values.get("attributes") or {}
        if not isinstance(attributes, dict):
            issues.append(ImportIssue(feature=index, id=device_id, reason=_reason("attributes", locale)))
            continue
        values["attributes"] = {**attributes, **extra}
        try:
            device = DeviceIn.model_validate(values)
        except ValidationError as err:
            issues.append(ImportIssue(feature=index, id=device_id, reason=validation_reason(err, locale)))
            continue
        if device.id in seen:
            issues.append(
                ImportIssue(
                    feature=index, id=device.id, reason=_reason("duplicate_feature", locale, first=seen[device.id])
                )
            )
            continue
        seen[device.id] = index
        rows.append(device)
    return rows, issues
