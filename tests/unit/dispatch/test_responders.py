"""Responder registry rows: CSV / GeoJSON import with line-numbered errors, shifts and on-duty time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from safecity.dispatch.recommend import ResponderKind
from safecity.dispatch.responders import (
    RESPONDER_FORMAT,
    ResponderCsvHeaderMissing,
    ResponderFileEmpty,
    ResponderGeoJsonInvalid,
    ResponderIn,
    ShiftSpan,
    UnitType,
    on_duty,
)
from safecity.kernel.tabular import decode_csv, parse_csv, parse_geojson

SH = ZoneInfo("Asia/Shanghai")

CSV = """id,kind,name,unit_type,station,department,service_codes,capabilities,town,community,shift,lon,lat
JD-101,police,嘉定一号车,car,马陆派出所,,,first_aid;taser,马陆镇,,mon-fri 08:00-20:00,121.25,31.35
WATER-7,department,供水抢修7,crew,,water,water_main;hydrant,,,,,,
JD-102,police,,car,,,,,,,,,
G-1,community,,guard,,,,,,,sat 22:00-06:00,,
G-1,community,门卫重复,guard,,,,,,,,,
V-9,community,志愿者,volunteer,,,,,,,funday 08:00-09:00,,
C-2,community,,car,,,,,,,,,
"""


def test_csv_rows_and_line_numbered_errors() -> None:
    rows, issues = parse_csv(RESPONDER_FORMAT, CSV)
    assert [r.id for r in rows] == ["JD-101", "WATER-7", "G-1"]
    car = rows[0]
    assert car.capabilities == ["first_aid", "taser"] and car.unit_type is UnitType.CAR
    assert car.shift == [ShiftSpan(days=("mon", "tue", "wed", "thu", "fri"), start="08:00", end="20:00")]
    assert rows[1].service_codes == ["water_main", "hydrant"] and rows[1].name == "供水抢修7"
    by_line = {i.line: i.reason for i in issues}
    assert rows[2].name == "G-1"  # the id when no name
    assert set(by_line) == {4, 6, 7, 8}
    assert "station" in by_line[4]
    assert "line 5" in by_line[6]
    assert "funday" in by_line[7]
    assert "unit_type car" in by_line[8]


def test_csv_in_gbk_and_whole_file_refusals() -> None:
    text = decode_csv(CSV.encode("gb18030"))
    rows, _ = parse_csv(RESPONDER_FORMAT, text)
    assert rows[0].station == "马陆派出所"
    with pytest.raises(ResponderFileEmpty):
        parse_csv(RESPONDER_FORMAT, "")
    with pytest.raises(ResponderCsvHeaderMissing) as err:
        parse_csv(RESPONDER_FORMAT, "JD-1,police,car\n")
    assert err.value.code == "dispatch.responder_csv_header_missing"


def test_unknown_columns_are_refused_by_line() -> None:
    rows, issues = parse_csv(RESPONDER_FORMAT, "id,kind,unit_type,station,radio\nA,police,foot,S1,ch-3\n")
    assert rows == [] and issues[0].line == 2 and "radio" in issues[0].reason


def test_geojson_points_and_errors() -> None:
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [121.26, 31.37]},
                "properties": {"id": "M-3", "kind": "police", "unit_type": "motorbike", "station": "S"},
            },
            {"type": "Feature", "geometry": {"type": "LineString", "coordinates": []}, "properties": {"id": "X"}},
            {
                "type": "Feature",
                "geometry": None,
                "properties": {
                    "id": "G-2",
                    "kind": "community",
                    "unit_type": "guard",
                    "shift": [{"days": ["sun"], "start": "08:00", "end": "12:00"}],
                },
            },
        ],
    }
    rows, issues = parse_geojson(RESPONDER_FORMAT, doc)
    assert [(r.id, r.lon, r.lat) for r in rows] == [("M-3", 121.26, 31.37), ("G-2", None, None)]
    assert [(i.feature, i.id) for i in issues] == [(1, "X")]
    with pytest.raises(ResponderGeoJsonInvalid):
        parse_geojson(RESPONDER_FORMAT, b"{not json")


def test_shifts_cover_their_hours_overnight_included() -> None:
    night = [ShiftSpan(days=("sat",), start="22:00", end="06:00")]
    assert on_duty(night, datetime(2026, 12, 5, 23, 0, tzinfo=SH))  # Saturday 23:00
    assert on_duty(night, datetime(2026, 12, 6, 5, 59, tzinfo=SH))  # Sunday 05:59, the shift that began Saturday
    assert not on_duty(night, datetime(2026, 12, 6, 6, 0, tzinfo=SH))
    assert not on_duty(night, datetime(2026, 12, 6, 23, 0, tzinfo=SH))  # Sunday night: not its day
    assert not on_duty(night, datetime(2026, 12, 5, 5, 0, tzinfo=SH))  # Saturday early: Friday's night is not in it
    assert on_duty(None, datetime(2026, 12, 6, 3, 0, tzinfo=SH))
    week = ResponderIn.model_validate(
        {"id": "a", "kind": "community", "unit_type": "volunteer", "shift": "sun-tue 09:00-10:00"}
    ).shift
    assert week is not None and week[0].days == ("sun", "mon", "tue")


def test_row_of_a_new_responder() -> None:
    now = datetime(2026, 12, 6, 8, 0, tzinfo=SH)
    r = ResponderIn(id="JD-1", kind=ResponderKind.POLICE, unit_type=UnitType.FOOT, station="S", lon=121.2, lat=31.3)
    row = r.row(now)
    assert row["status"] == "available" and row["fix_at"] == now and row["version"] == 1
    assert ResponderIn(id="G", kind=ResponderKind.COMMUNITY, unit_type=UnitType.GUARD).row(now)["fix_at"] is None
    with pytest.raises(ValidationError, match="together"):
        ResponderIn(id="JD-1", kind=ResponderKind.POLICE, unit_type=UnitType.FOOT, station="S", lon=121.2)
