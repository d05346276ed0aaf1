"""`box_around_m`: the lon/lat box a query prefilters "within this distance" by holds every point that close."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from safecity.geo.road.graph import EARTH_RADIUS_M, box_around_m, haversine_m


def _destination(lon: float, lat: float, bearing: float, distance_m: float) -> tuple[float, float]:
    """The point `distance_m` from (lon, lat) along `bearing` (radians) on the haversine's sphere."""
    d = distance_m / EARTH_RADIUS_M
    phi, lam = math.radians(lat), math.radians(lon)
    phi2 = math.asin(math.sin(phi) * math.cos(d) + math.cos(phi) * math.sin(d) * math.cos(bearing))
    lam2 = lam + math.atan2(
        math.sin(bearing) * math.sin(d) * math.cos(phi), math.cos(d) - math.sin(phi) * math.sin(phi2)
    )
    return (math.degrees(lam2) + 540.0) % 360.0 - 180.0, math.degrees(phi2)


@given(
    lon=st.floats(-180, 180),
    lat=st.floats(-89.9, 89.9),
    radius=st.floats(1, 50_000),
    bearing=st.floats(0, 2 * math.pi),
    share=st.floats(0, 1),
)
def test_every_point_within_the_radius_is_in_the_box(
    lon: float, lat: float, radius: float, bearing: float, share: float
) -> None:
    west, south, east, north = box_around_m(lon, lat, radius)
    plon, plat = _destination(lon, lat, bearing, radius * share)
    assert float(haversine_m(lon, lat, plon, plat)) <= radius * 1.000001 + 1e-6
    assert south <= plat <= north
    assert west <= plon <= east


def test_the_box_is_small_where_it_can_be() -> None:
    west, south, east, north = box_around_m(121.25, 31.37, 200.0)
    # 200 m is about 0.0018 degrees of latitude and 0.0021 of longitude at Shanghai's latitude.
    assert 0.0018 < north - 31.37 < 0.0019 and 0.0021 < east - 121.25 < 0.0022
    assert math.isclose(north - 31.37, 31.37 - south) and math.isclose(east - 121.25, 121.25 - west)
    assert box_around_m(179.9999, 0.0, 1_000.0)[0::2] == (-180.0, 180.0)  # across the antimeridian: any longitude
