"""Pure device models and the CSV / GeoJSON parsers (no database)."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from safecity.sensing.devices import (
    DeviceCsvEncoding,
    DeviceCsvHeaderMissing,
    DeviceFileEmpty,
    DeviceGeoJsonInvalid,
    DeviceIn,
    DevicePatch,
    decode_csv,
    parse_csv,
    parse_geojson,
)


@pytest.mark.parametrize("device_id", ["a", "jd-01:smoke.1_x", "A" * 128])
def test_valid_ids(device_id: str) -> None:
    assert DeviceIn(id=device_id, kind="smoke").name == device_id


@pytest.mark.parametrize("device_id", ["", "a b", "a/b", "a+b", "设备", "é", "A" * 129, "a#", "a\tb"])
def test_invalid_ids(device_id: str) -> None:
    with pytest.raises(ValidationError):
        DeviceIn(id=device_id, kind="smoke")


def test_coordinates_and_fields() -> None:
    with pytest.raises(ValidationError):
        DeviceIn(id="a", kind="smoke", lon=121.0)
    with pytest.raises(ValidationError):
        DeviceIn(id="a", kind="smoke", lon=-181, lat=0)
    with pytest.raises(ValidationError):
        DeviceIn(id="a", kind="smoke", status="broken")
    with pytest.raises(ValidationError):
        DeviceIn(id="a", kind="smoke", name="bad\x00name")
    with pytest.raises(ValidationError):
        DeviceIn(id="a", kind="smoke", colour="red")
    assert DeviceIn(id="a", kind="smoke", lon=-180, lat=90).lat == 90


def test_patch_rules() -> None:
    assert DevicePatch(town=None).changes() == {"town": None}
    assert DevicePatch(lon=1, lat=2).changes() == {"lon": 1.0, "lat": 2.0}
    for bad in ({"lat": 2}, {"status": None}, {"name": ""}, {"id": "x"}):
        with pytest.raises(ValidationError):
            DevicePatch.model_validate(bad)


def test_csv_line_numbers_and_quoting() -> None:
    text = (
        '\ufeffid , kind,name,extra\r\na,smoke,name a,"multi\nline"\r\n'
        'b,bogus,x,\r\nc,door,"with, comma",\r\nd,door,x,y,z\r\n'
    )
    rows, issues = parse_csv(text)
    assert [r.id for r in rows] == ["a", "c"]
    assert rows[0].name == "name a"
    assert rows[0].attributes == {"extra": "multi\nline"}
    assert rows[1].name == "with, comma"
    # Line numbers are physical lines: the quoted newline makes row "a" span lines 2-3.
    assert [(i.line, i.id) for i in issues] == [(4, "b"), (6, "d")]


def test_csv_structure_errors() -> None:
    for empty in ("", "\ufeff", "\r\n", ",,\n"):
        with pytest.raises(DeviceFileEmpty):
            parse_csv(empty)
    with pytest.raises(DeviceCsvHeaderMissing) as missing:
        parse_csv("id,name\na,b\n")
    assert missing.value.params == {"missing": "kind"}
    with pytest.raises(DeviceCsvHeaderMissing):
        parse_csv("s-1,smoke,烟感1,anting,c1,121.1,31.3\n")  # exported without a header
    rows, issues = parse_csv("id,kind\n")
    assert rows == [] and issues == []


def test_geojson_errors() -> None:
    for bad in (b"{", "[" * 100_000, {"type": "Feature"}):
        with pytest.raises(DeviceGeoJsonInvalid):
            parse_geojson(bad)  # type: ignore[arg-type]
    with pytest.raises(DeviceFileEmpty):
        parse_geojson(b" \n")
    rows, issues = parse_geojson(
        {
            "type": "FeatureCollection",
            "features": [
                "nope",
                {"type": "Feature", "properties": [], "geometry": None},
                {"type": "Feature", "properties": {"id": "a", "kind": "smoke", "attributes": 3}},
                {
                    "type": "Feature",
                    "properties": {"id": "b", "kind": "smoke"},
                    "geometry": {"type": "Point", "coordinates": [True, 1]},
                },
                {"type": "Feature", "id": 7, "properties": {"kind": "door"}},
                {"type": "Feature", "id": "7", "properties": {"kind": "door"}},
            ],
        }
    )
    assert [r.id for r in rows] == ["7"]
    assert [i.feature for i in issues] == [0, 1, 2, 3, 5]


@given(st.text(max_size=300))
def test_csv_parser_never_raises(text: str) -> None:
    try:
        rows, issues = parse_csv(text)
    except (DeviceFileEmpty, DeviceCsvHeaderMissing):
        return  # refused as a whole, with its own error
    assert all(isinstance(r, DeviceIn) for r in rows)
    assert all(i.reason for i in issues)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
    )
)
def test_geojson_parser_never_raises(data: object) -> None:
    doc = {"type": "FeatureCollection", "features": data if isinstance(data, list) else [data]}
    rows, issues = parse_geojson(doc)  # type: ignore[arg-type]
    assert len(rows) + len(issues) <= len(doc["features"])


def test_decode_csv_utf8_bom_and_gbk() -> None:
    text = "id,kind,name\ns-1,smoke,嘉定一号楼烟感\n"
    assert decode_csv(text.encode("utf-8")) == text
    assert decode_csv(codecs.BOM_UTF8 + text.encode("utf-8")) == text
    assert decode_csv(text.encode("gbk")) == text  # Chinese Excel's "CSV (逗号分隔)"
    assert decode_csv(text.encode("gbk"), "utf-8") == text  # a wrong declared charset does not win over the bytes
    assert decode_csv("id,kind,name\nb,door,ã\n".encode("latin-1"), "iso-8859-1").endswith("ã\n")
    with pytest.raises(DeviceCsvEncoding):
        decode_csv(b"id,kind\n\x81\x20\xff\n")
