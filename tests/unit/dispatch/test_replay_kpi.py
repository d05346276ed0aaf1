"""Real SF calls-for-service read into closed calls; stage KPIs checked against figures computed from the raw CSV."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from safecity.dispatch.kpi import StageTimes, interval_s, stage_kpis, summarize
from safecity.dispatch.replay import read_calls

SF_2020 = "calls_for_service_sf/sf_fire_calls_2020-04-07_to_2020-04-20.csv"


def _local(text: str) -> datetime:
    return datetime.strptime(text + " -0700", "%m/%d/%Y %I:%M:%S %p %z").astimezone(UTC)  # April: PDT


def _raw_response_seconds(path: Path) -> dict[str, list[float]]:
    """Independently of the code under test: per station area, received -> first unit on scene, per call."""
    received: dict[str, datetime] = {}
    first_on_scene: dict[str, datetime] = {}
    station: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if row[0] == "Call Number":
                header = {name: i for i, name in enumerate(row)}
                continue
            number = row[header["Call Number"]]
            station.setdefault(number, row[header["Station Area"]])
            got = _local(row[header["Received DtTm"]])
            received[number] = min(received.get(number, got), got)
            text = row[header["On Scene DtTm"]]
            if text:
                at = _local(text)
                first_on_scene[number] = min(first_on_scene.get(number, at), at)
    by_station: dict[str, list[float]] = defaultdict(list)
    for number, at in first_on_scene.items():
        by_station[station[number]].append((at - received[number]).total_seconds())
    return by_station


def test_sf_calls_give_the_same_response_kpis_as_the_raw_csv(shared_data: Path) -> None:
    path = shared_data / SF_2020
    with path.open(newline="", encoding="utf-8") as f:
        replay = read_calls(f)
    assert replay.bad_rows == []
    assert replay.rows == 10_410
    assert len(replay.calls) == 5_292
    raw = _raw_response_seconds(path)

    overall = stage_kpis(("all", c.times) for c in replay.calls)["all"]["response"]
    everything = np.array([s for values in raw.values() for s in values])
    assert overall.count == len(everything)
    assert overall.median_s == pytest.approx(float(np.median(everything)))
    assert overall.p90_s == pytest.approx(float(np.percentile(everything, 90)))
    # The real median from a call received to its first unit on scene is about 7 minutes.
    assert 6 * 60 < overall.median_s < 8 * 60

    per_station = stage_kpis((c.station, c.times) for c in replay.calls)
    for station_area, values in raw.items():
        got = per_station[station_area]["response"]
        assert got.count == len(values)
        assert got.median_s == pytest.approx(float(np.median(values)))
        assert got.p90_s == pytest.approx(float(np.percentile(values, 90)))


def test_bad_rows_are_reported_by_line_and_the_rest_are_read() -> None:
    header = "Call Number,Unit ID,Call Type,Received DtTm,Dispatch DtTm,On Scene DtTm,Station Area,Location\n"
    t1, t2, t3 = "04/07/2020 11:53:08 PM", "04/07/2020 11:55:56 PM", "04/08/2020 12:00:00 AM"
    lines = [
        header,
        f'C1,E1,Medical Incident,{t1},{t2},{t3},32,"(37.7, -122.4)"\n',
        "C2,E2,Alarms,yesterday,04/07/2020 11:55:56 PM,,32,\n",
        "C3,,Alarms,04/07/2020 11:53:08 PM,04/07/2020 11:55:56 PM,,32,\n",
        "C4,E4,Alarms,04/07/2020 11:53:08 PM,04/07/2020 11:50:00 PM,,32,\n",
        'C5,E5,Alarms,04/07/2020 11:53:08 PM,04/07/2020 11:55:56 PM,,32,"(137.7, -122.4)"\n',
        f'C1,M9,Medical Incident,{t1},04/07/2020 11:54:00 PM,04/07/2020 11:59:00 PM,32,"(37.7, -122.4)"\n',
    ]
    replay = read_calls(lines)
    assert [(b.line, b.reason.split(":")[0]) for b in replay.bad_rows] == [
        (3, "Received DtTm"),
        (4, "Call Number and Unit ID are required"),
        (5, "Dispatch DtTm is before Received DtTm"),
        (6, "Location"),
    ]
    [call] = replay.calls
    assert call.units == ["E1", "M9"]
    assert call.point == (-122.4, 37.7)
    # The first unit's times: dispatched 11:54:00 PM, on scene 11:59:00 PM, both Pacific daylight time (UTC-7).
    assert call.times.dispatched_at == datetime(2020, 4, 8, 6, 54, tzinfo=UTC)
    assert interval_s(call.times, "response") == 352.0


def test_a_file_without_the_required_columns_is_refused_at_line_one() -> None:
    replay = read_calls(["Call,Unit\n", "1,2\n"])
    assert replay.calls == []
    assert replay.bad_rows[0].line == 1
    assert "Received DtTm" in replay.bad_rows[0].reason


def test_kpis_leave_out_intervals_with_a_missing_end_and_group_by_key() -> None:
    t0, s = datetime(2026, 12, 3, tzinfo=UTC), timedelta(seconds=1)
    records = [
        ("town-a", StageTimes(opened_at=t0, dispatched_at=t0 + 30 * s)),
        ("town-a", StageTimes(opened_at=t0, dispatched_at=t0 + 90 * s, on_scene_at=t0 + 300 * s)),
        ("town-b", StageTimes(opened_at=t0)),
    ]
    kpis = stage_kpis(records)
    assert set(kpis) == {"town-a"}
    assert kpis["town-a"]["dispatch"] == summarize([30.0, 90.0])
    assert kpis["town-a"]["dispatch"].median_s == 60.0
    assert kpis["town-a"]["dispatch"].p90_s == pytest.approx(84.0)
    assert kpis["town-a"]["response"].count == 1
    assert "warn" not in kpis["town-a"]
