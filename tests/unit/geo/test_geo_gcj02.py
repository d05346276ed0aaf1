"""WGS84 <-> GCJ-02: offset size in Shanghai, round trips, identity outside China, and the real boundary files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import shape

from safecity.geo.gcj02 import (
    gcj02_to_wgs84,
    gcj02_to_wgs84_many,
    in_china,
    wgs84_to_gcj02,
    wgs84_to_gcj02_many,
)


def metres(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Haversine distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


SHANGHAI = [(float(x), float(y)) for x in np.linspace(120.86, 122.2, 12) for y in np.linspace(30.68, 31.87, 12)]


def test_offset_in_shanghai_is_hundreds_of_metres() -> None:
    for lon, lat in SHANGHAI:
        glon, glat = wgs84_to_gcj02(lon, lat)
        d = metres(lon, lat, glon, glat)
        assert 300 < d < 800, (lon, lat, d)
        # In Shanghai the GCJ-02 point lies east and south of the WGS84 one.
        assert glon > lon and glat < lat


def test_round_trip_across_shanghai_below_half_a_metre() -> None:
    worst = 0.0
    for lon, lat in SHANGHAI:
        back = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
        worst = max(worst, metres(lon, lat, *back))
        assert abs(back[0] - lon) < 1e-6 and abs(back[1] - lat) < 1e-6
    assert worst < 0.5


@given(st.floats(73.0, 135.0), st.floats(3.0, 53.0))
def test_round_trip_anywhere_in_china(lon: float, lat: float) -> None:
    glon, glat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert abs(glon - lon) < 1e-6
    assert abs(glat - lat) < 1e-6


@pytest.mark.parametrize("point", [(-0.1276, 51.5072), (139.6917, 35.6895), (-74.006, 40.7128), (151.2, -33.9)])
def test_identity_outside_china(point: tuple[float, float]) -> None:
    assert not in_china(*point)
    assert wgs84_to_gcj02(*point) == point
    assert gcj02_to_wgs84(*point) == point
    x, y = wgs84_to_gcj02_many([point[0]], [point[1]])
    assert (x[0], y[0]) == point


def test_vectorized_matches_scalar() -> None:
    lons = np.array([p[0] for p in SHANGHAI] + [2.35, 116.4])
    lats = np.array([p[1] for p in SHANGHAI] + [48.85, 39.9])
    gx, gy = wgs84_to_gcj02_many(lons, lats)
    wx, wy = gcj02_to_wgs84_many(gx, gy)
    for i in range(lons.size):
        sx, sy = wgs84_to_gcj02(float(lons[i]), float(lats[i]))
        assert gx[i] == pytest.approx(sx, abs=1e-12) and gy[i] == pytest.approx(sy, abs=1e-12)
        bx, by = gcj02_to_wgs84(float(gx[i]), float(gy[i]))
        assert wx[i] == pytest.approx(bx, abs=1e-9) and wy[i] == pytest.approx(by, abs=1e-9)
    assert np.max(np.abs(wx - lons)) < 1e-6 and np.max(np.abs(wy - lats)) < 1e-6


def test_vectorized_keeps_nan_and_checks_shapes() -> None:
    x, _ = gcj02_to_wgs84_many([121.3, math.nan], [31.3, 31.3])
    assert math.isfinite(x[0]) and math.isnan(x[1])
    with pytest.raises(ValueError):
        wgs84_to_gcj02_many([1.0, 2.0], [1.0])


def _coords(path: Path) -> np.ndarray:
    geom = shape(json.loads(path.read_text(encoding="utf-8"))["features"][0]["geometry"])
    return np.asarray(shapely.get_coordinates(geom))


def test_real_jiading_files_line_up(shared_data: Path) -> None:
    """The published GCJ-02 Jiading boundary, converted by us, lands on the WGS84 copy (and back)."""
    folder = shared_data / "shanghai_boundaries"
    gcj = _coords(folder / "jiading_310114_gcj02.json")
    wgs = _coords(folder / "jiading_310114_wgs84.json")
    assert gcj.shape == wgs.shape and gcj.shape[0] > 1000
    # Before conversion the two outlines are hundreds of metres apart ...
    raw_gap = metres(*gcj.mean(axis=0), *wgs.mean(axis=0))
    assert raw_gap > 300
    # ... after it, every vertex agrees to the 7 decimals the WGS84 file was rounded to.
    wx, wy = gcj02_to_wgs84_many(gcj[:, 0], gcj[:, 1])
    assert np.max(np.abs(wx - wgs[:, 0])) < 2e-7 and np.max(np.abs(wy - wgs[:, 1])) < 2e-7
    gx, gy = wgs84_to_gcj02_many(wgs[:, 0], wgs[:, 1])
    assert np.max(np.abs(gx - gcj[:, 0])) < 5e-7 and np.max(np.abs(gy - gcj[:, 1])) < 5e-7
    g_poly = shape(
        json.loads((folder / "jiading_310114_gcj02.json").read_text(encoding="utf-8"))["features"][0]["geometry"]
    )
    w_poly = shape(
        json.loads((folder / "jiading_310114_wgs84.json").read_text(encoding="utf-8"))["features"][0]["geometry"]
    )
    converted = shapely.transform(g_poly, lambda xy: np.column_stack(gcj02_to_wgs84_many(xy[:, 0], xy[:, 1])))
    c1, c2 = converted.centroid, w_poly.centroid
    assert metres(c1.x, c1.y, c2.x, c2.y) < 0.5


def test_vectorized_ignores_far_away_values() -> None:
    x, y = wgs84_to_gcj02_many([1e300, -1e300, math.inf], [0.0, 1e300, 31.0])
    assert x.tolist() == [1e300, -1e300, math.inf] and y.tolist() == [0.0, 1e300, 31.0]
