"""`safecity replay`: real SF calls imported as closed incidents whose stored stage KPIs equal figures computed here
from the raw CSV; bad rows reported by line; the simulated replay serves every call on our network."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.dispatch.replay import read_calls
from safecity.dispatch.service import DispatchService
from safecity.dispatch.simulation import simulate
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.synthetic import synthetic_network
from safecity.kernel.bus import MemoryBus
from safecity.kernel.dispatch_settings import DispatchSettings
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.store.engine import create_engine, upgrade

SF_2020 = "calls_for_service_sf/sf_fire_calls_2020-04-07_to_2020-04-20.csv"


def _raw_dispatch_seconds(path: Path, limit: int | None = None) -> list[float]:
    """Independently of the code under test: per call, received -> first dispatch (first `limit` data rows)."""
    received: dict[str, datetime] = {}
    dispatched: dict[str, datetime] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for n, row in enumerate(reader):
            if limit is not None and n >= limit:
                break
            parse = lambda text: datetime.strptime(text + " -0700", "%m/%d/%Y %I:%M:%S %p %z")  # noqa: E731
            number = row["Call Number"]
            got, sent = parse(row["Received DtTm"]), parse(row["Dispatch DtTm"])
            received[number] = min(received.get(number, got), got)
            dispatched[number] = min(dispatched.get(number, sent), sent)
    return [(dispatched[n] - received[n]).total_seconds() for n in received]


@pytest.fixture
async def engine(db_url: str) -> AsyncEngine:
    await upgrade(db_url)
    return create_engine(db_url)


async def test_imported_calls_give_the_raw_csv_dispatch_kpis_through_the_store(
    engine: AsyncEngine, shared_data: Path
) -> None:
    path = shared_data / SF_2020
    with path.open(newline="", encoding="utf-8") as f:
        replay = read_calls(f)
    bus = MemoryBus()
    service = DispatchService(
        engine, bus, DispatchSettings(), pseudonymize=Pseudonymizer(b"k" * 32), link_key=b"l" * 32
    )
    try:
        assert await service.import_calls(replay.calls) == 5_292
        kpis = await service.kpis(
            since=datetime(2020, 4, 1, tzinfo=UTC), until=datetime(2020, 5, 1, tzinfo=UTC), group="origin"
        )
    finally:
        await engine.dispose()
    raw = np.array(_raw_dispatch_seconds(path))
    got = kpis["replay"]["dispatch"]
    assert got.count == len(raw) == 5_292
    assert got.median_s == pytest.approx(float(np.median(raw)))
    assert got.p90_s == pytest.approx(float(np.percentile(raw, 90)))


def test_the_simulated_replay_serves_every_call_and_keeps_the_real_call_processing_time(shared_data: Path) -> None:
    with (shared_data / SF_2020).open(newline="", encoding="utf-8") as f:
        replay = read_calls(f)
    calls = replay.calls[:400]
    net = RoadNetwork(synthetic_network(2_500, center=(121.25, 31.37), spacing_m=165.0))
    few = simulate(calls, net, units=3, seed=1)
    many = simulate(calls, net, units=60, seed=1)
    assert many.calls == few.calls == 400
    # Call processing is the record's unless the call had to wait for a free unit.
    assert many.simulated["dispatch"].median_s == pytest.approx(many.real["dispatch"].median_s)
    assert few.waited > many.waited
    assert few.simulated["dispatch"].p90_s > many.simulated["dispatch"].p90_s
    # More units nearer: shorter travel on the same network.
    assert many.simulated["travel"].median_s < few.simulated["travel"].median_s


def test_the_replay_command_reports_bad_rows_by_line_and_the_kpis_of_the_rest(
    tmp_path: Path, shared_data: Path
) -> None:
    source = (shared_data / SF_2020).read_text(encoding="utf-8").splitlines(keepends=True)
    lines = source[:201]
    lines.insert(5, "C-bad,E1,Alarms,yesterday,04/07/2020 11:55:56 PM\n")  # becomes line 6
    path = tmp_path / "calls.csv"
    path.write_text("".join(lines), encoding="utf-8")
    env = {**os.environ, "SAFECITY_DATA_DIR": str(tmp_path / "var"), "SAFECITY_ROADS__SYNTHETIC_NODES": "2500"}
    subprocess.run([sys.executable, "-m", "safecity.cli", "db", "upgrade"], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [sys.executable, "-m", "safecity.cli", "replay", str(path), "--simulate", "--units", "20", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "line 6" in done.stderr and "Received DtTm" in done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    raw = _raw_dispatch_seconds(shared_data / SF_2020, limit=200)
    assert figures["bad_rows"] == 1 and figures["rows"] == 201 and figures["calls"] == len(raw)
    assert figures["imported"] == len(raw)
    assert figures["real"]["dispatch"]["median_s"] == pytest.approx(float(np.median(raw)), abs=0.1)
    assert figures["simulated"]["dispatch"]["count"] == len(raw)
