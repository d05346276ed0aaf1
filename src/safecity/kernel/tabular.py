"""Bulk import of registry rows (devices, responders) from CSV or GeoJSON, with line-numbered errors (pure).

A slice describes its rows once, as an `ImportFormat` (the pydantic model, the CSV columns, the errors that refuse a
file as a whole); `parse_csv` and `parse_geojson` turn a file into valid rows and one `ImportIssue` per refused line
or feature. A bad row never hides the good ones: what to do with them is the caller's `ImportMode`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, ValidationError

from safecity.kernel.errors import InvalidInput
from safecity.kernel.messages import field_message

M = TypeVar("M", bound=BaseModel)


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


@dataclass(frozen=True)
class ImportFormat(Generic[M]):
    """How one registry's rows read from CSV and GeoJSON.

    `attributes`: the model field that collects columns / properties not in `columns` (None: they are refused by
    the model, line by line). The error classes refuse a file as a whole: `empty` (nothing at all), `header_missing`
    (no header with the `required` columns; formatted with `missing`), `encoding` (undecodable CSV) and
    `geojson_invalid` (not JSON, not a FeatureCollection).
    """

    model: type[M]
    columns: tuple[str, ...]
    required: tuple[str, ...]
    empty: type[InvalidInput]
    header_missing: type[InvalidInput]
    encoding: type[InvalidInput]
    geojson_invalid: type[InvalidInput]
    aliases: Mapping[str, str] = field(default_factory=dict)
    attributes: str | None = "attributes"
    id_of: Callable[[M], str] = lambda row: str(row.id)  # type: ignore[attr-defined]


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


def decode_csv(body: bytes, charset: str | None = None, *, error: type[InvalidInput] = InvalidInput) -> str:
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
    raise error


class _Rows(Generic[M]):
    """Valid rows and issues, with the duplicate-id check shared by both formats."""

    def __init__(self, fmt: ImportFormat[M], locale: str, duplicate: str) -> None:
        self.fmt, self.locale, self.duplicate = fmt, locale, duplicate
        self.rows: list[M] = []
        self.issues: list[ImportIssue] = []
        self._seen: dict[str, int] = {}

    def refuse(self, reason: str, *, line: int | None = None, feature: int | None = None, id: Any = None) -> None:
        ident = id if isinstance(id, str) else None
        self.issues.append(ImportIssue(line=line, feature=feature, id=ident, reason=reason))

    def add(self, values: dict[str, Any], *, line: int | None = None, feature: int | None = None) -> None:
        where = line if line is not None else feature
        assert where is not None
        try:
            row = self.fmt.model.model_validate(values)
        except ValidationError as err:
            self.refuse(validation_reason(err, self.locale), line=line, feature=feature, id=values.get("id"))
            return
        ident = self.fmt.id_of(row)
        if ident in self._seen:
            reason = _reason(self.duplicate, self.locale, first=self._seen[ident])
            self.refuse(reason, line=line, feature=feature, id=ident)
            return
        self._seen[ident] = where
        self.rows.append(row)


def parse_csv(fmt: ImportFormat[M], text: str, locale: str = "en") -> tuple[list[M], list[ImportIssue]]:
    """Parse a CSV (a header row naming the columns) into valid rows and one issue per refused line.

    A file that is empty or whose first line is not a header with the required columns is refused as a whole: there
    are no rows to report on.
    """
    out = _Rows(fmt, locale, "duplicate_line")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if not any(fields):
        raise fmt.empty
    reader.fieldnames = fields
    missing = [c for c in fmt.required if c not in fields]
    if missing:
        raise fmt.header_missing(missing=", ".join(missing))
    for record in reader:
        line = reader.line_num
        if None in record:
            out.refuse(_reason("extra_values", locale), line=line, id=record.get("id"))
            continue
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for header, raw in record.items():
            value = _blank_to_none(raw)
            column = fmt.aliases.get(header, header)
            if value is None or not column:
                continue
            (values if column in fmt.columns or fmt.attributes is None else extra)[column] = value
        if not values and not extra:
            continue  # blank line
        if fmt.attributes is not None:
            values[fmt.attributes] = extra
        out.add(values, line=line)
    return out.rows, out.issues


def _point(geometry: Any) -> tuple[float, float] | None:
    coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if (
        not isinstance(geometry, dict)
        or geometry.get("type") != "Point"
        or not isinstance(coords, list)
        or len(coords) < 2
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords[:2])
    ):
        return None
    return float(coords[0]), float(coords[1])


def parse_geojson(
    fmt: ImportFormat[M], data: str | bytes | dict[str, Any], locale: str = "en"
) -> tuple[list[M], list[ImportIssue]]:
    """Parse a GeoJSON FeatureCollection of Points (properties hold the row's fields) into rows and issues.

    A body that is not JSON or not a FeatureCollection is refused as a whole.
    """
    if isinstance(data, (str, bytes)):
        if not data.strip():
            raise fmt.empty
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as err:
            # RecursionError: absurdly deep nesting; the body cap bounds the size, not the depth.
            raise fmt.geojson_invalid from err
    if (
        not isinstance(data, dict)
        or data.get("type") != "FeatureCollection"
        or not isinstance(data.get("features"), list)
    ):
        raise fmt.geojson_invalid
    out = _Rows(fmt, locale, "duplicate_feature")
    known = set(fmt.model.model_fields)
    for index, feature in enumerate(data["features"]):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            out.refuse(_reason("not_feature", locale), feature=index)
            continue
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            out.refuse(_reason("properties", locale), feature=index)
            continue
        values = dict(props)
        if "id" not in values and isinstance(feature.get("id"), (str, int)):
            values["id"] = str(feature["id"])
        if feature.get("geometry") is not None:
            point = _point(feature["geometry"])
            if point is None:
                out.refuse(_reason("geometry", locale), feature=index, id=values.get("id"))
                continue
            values["lon"], values["lat"] = point
        if fmt.attributes is not None:
            extra = {k: v for k, v in values.items() if k not in known}
            values = {k: v for k, v in values.items() if k in known}
            attributes = values.get(fmt.attributes) or {}
            if not isinstance(attributes, dict):
                out.refuse(_reason("attributes", locale), feature=index, id=values.get("id"))
                continue
            values[fmt.attributes] = {**attributes, **extra}
        out.add(values, feature=index)
    return out.rows, out.issues
