"""WGS84 <-> GCJ-02 ("Mars" datum of Chinese map vendors) conversion, scalar and vectorized; (lon, lat) throughout.

GCJ-02 is WGS84 plus a deterministic, non-invertible-in-closed-form offset (a few hundred metres in Shanghai). The
forward formula below is the widely published one (Krasovsky 1940 ellipsoid); the inverse is a fixed-point iteration
of it. Outside the bounding box of China the offset is zero, as every vendor SDK does it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "gcj02_to_wgs84",
    "gcj02_to_wgs84_many",
    "in_china",
    "wgs84_to_gcj02",
    "wgs84_to_gcj02_many",
]

FloatArray = npt.NDArray[np.float64]

# Krasovsky 1940 semi-major axis and first eccentricity squared, as in the public GCJ-02 formula.
_A = 6378245.0
_EE = 0.00669342162296594323
# Coarse China bounding box used by the public formula: outside it GCJ-02 equals WGS84.
_LON_MIN, _LON_MAX = 72.004, 137.8347
_LAT_MIN, _LAT_MAX = 0.8293, 55.8271
# Inverse iteration: stop when the step is below this (degrees; 1e-9 deg is ~0.1 mm), give up after _MAX_ITER.
_TOL = 1e-9
_MAX_ITER = 30


def in_china(lon: float, lat: float) -> bool:
    """Return True when (lon, lat) is inside the box where GCJ-02 applies an offset."""
    return _LON_MIN <= lon <= _LON_MAX and _LAT_MIN <= lat <= _LAT_MAX


def _delta(lon: float, lat: float) -> tuple[float, float]:
    """Return the GCJ-02 offset (dlon, dlat) in degrees at a WGS84 point inside China."""
    x = lon - 105.0
    y = lat - 35.0
    sqrt_abs_x = math.sqrt(abs(x))
    pi_x = math.pi * x
    pi_y = math.pi * y
    common = (20.0 * math.sin(6.0 * pi_x) + 20.0 * math.sin(2.0 * pi_x)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x + common
    dlat += (20.0 * math.sin(pi_y) + 40.0 * math.sin(pi_y / 3.0)) * 2.0 / 3.0
    dlat += (160.0 * math.sin(pi_y / 12.0) + 320.0 * math.sin(pi_y / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x + common
    dlon += (20.0 * math.sin(pi_x) + 40.0 * math.sin(pi_x / 3.0)) * 2.0 / 3.0
    dlon += (150.0 * math.sin(pi_x / 12.0) + 300.0 * math.sin(pi_x / 30.0)) * 2.0 / 3.0
    rad_lat = lat / 180.0 * math.pi
    magic = 1.0 - _EE * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * math.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * math.cos(rad_lat) * math.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """Convert one WGS84 (lon, lat) to GCJ-02; identity outside China."""
    if not in_china(lon, lat):
        return lon, lat
    dlon, dlat = _delta(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """Convert one GCJ-02 (lon, lat) to WGS84 by fixed-point iteration (error < 1e-6 deg); identity outside China."""
    if not in_china(lon, lat):
        return lon, lat
    # Start from "subtract the offset measured at the GCJ point", then correct by the forward residual.
    wlon, wlat = lon, lat
    for _ in range(_MAX_ITER):
        glon, glat = wgs84_to_gcj02(wlon, wlat)
        step_lon, step_lat = glon - lon, glat - lat
        wlon -= step_lon
        wlat -= step_lat
        if abs(step_lon) < _TOL and abs(step_lat) < _TOL:
            break
    return wlon, wlat


def _as_arrays(lons: npt.ArrayLike, lats: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(lons, dtype=np.float64)
    y = np.asarray(lats, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"lons and lats differ in shape: {x.shape} != {y.shape}")
    return x, y


def _in_china_many(x: FloatArray, y: FloatArray) -> npt.NDArray[np.bool_]:
    return (x >= _LON_MIN) & (x <= _LON_MAX) & (y >= _LAT_MIN) & (y <= _LAT_MAX)


def _delta_many(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Vectorized `_delta`."""
    x = lon - 105.0
    y = lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    pi_x = np.pi * x
    pi_y = np.pi * y
    common = (20.0 * np.sin(6.0 * pi_x) + 20.0 * np.sin(2.0 * pi_x)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x + common
    dlat += (20.0 * np.sin(pi_y) + 40.0 * np.sin(pi_y / 3.0)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(pi_y / 12.0) + 320.0 * np.sin(pi_y / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x + common
    dlon += (20.0 * np.sin(pi_x) + 40.0 * np.sin(pi_x / 3.0)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(pi_x / 12.0) + 300.0 * np.sin(pi_x / 30.0)) * 2.0 / 3.0
    rad_lat = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad_lat) * np.pi)
    return dlon, dlat


def wgs84_to_gcj02_many(lons: npt.ArrayLike, lats: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Convert arrays of WGS84 lons and lats to GCJ-02 (new arrays; identity outside China)."""
    x, y = _as_arrays(lons, lats)
    gx, gy = x.copy(), y.copy()
    # Only points inside China are computed, so far-away or NaN inputs never reach the trigonometry.
    inside = _in_china_many(x, y)
    dlon, dlat = _delta_many(x[inside], y[inside])
    gx[inside] += dlon
    gy[inside] += dlat
    return gx, gy


def gcj02_to_wgs84_many(lons: npt.ArrayLike, lats: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Convert arrays of GCJ-02 lons and lats to WGS84 by fixed-point iteration (identity outside China)."""
    x, y = _as_arrays(lons, lats)
    wx, wy = x.copy(), y.copy()
    inside = _in_china_many(x, y)
    gx, gy = x[inside], y[inside]
    ix, iy = gx.copy(), gy.copy()
    for _ in range(_MAX_ITER):
        dlon, dlat = _delta_many(ix, iy)
        step_x = ix + dlon - gx
        step_y = iy + dlat - gy
        ix -= step_x
        iy -= step_y
        if step_x.size == 0 or (np.max(np.abs(step_x)) < _TOL and np.max(np.abs(step_y)) < _TOL):
            break
    wx[inside] = ix
    wy[inside] = iy
    return wx, wy
