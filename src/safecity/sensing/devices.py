"""Device registry types (pydantic v2) and their CSV / GeoJSON import format."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from safecity.kernel import tabular
from safecity.kernel.errors import Conflict, InvalidInput, NotFound
from safecity.kernel.tabular import ImportFormat, ImportIssue
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


DEVICE_FORMAT: ImportFormat[DeviceIn] = ImportFormat(
    model=DeviceIn,
    columns=CSV_COLUMNS,
    required=("id", "kind"),
    aliases=CSV_ALIASES,
    empty=DeviceFileEmpty,
    header_missing=DeviceCsvHeaderMissing,
    encoding=DeviceCsvEncoding,
    geojson_invalid=DeviceGeoJsonInvalid,
)


def decode_csv(body: bytes, charset: str | None = None) -> str:
    """Decode a device CSV upload (UTF-8, the declared charset, else GB18030); see `kernel.tabular.decode_csv`."""
    return tabular.decode_csv(body, charset, error=DeviceCsvEncoding)


def parse_csv(text: str, locale: str = "en") -> tuple[list[DeviceIn], list[ImportIssue]]:
    """Parse a device CSV (header row; columns CSV_COLUMNS, others become attributes) into rows and issues."""
    return tabular.parse_csv(DEVICE_FORMAT, text, locale)


def parse_geojson(data: str | bytes | dict[str, Any], locale: str = "en") -> tuple[list[DeviceIn], list[ImportIssue]]:
    """Parse a GeoJSON FeatureCollection of Points (properties hold the device fields) into rows and issues."""
    return tabular.parse_geojson(DEVICE_FORMAT, data, locale)
