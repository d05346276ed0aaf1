"""Snap points to the nearest road edge (not just the nearest node), with a maximum snap distance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

from safecity.geo.road.conditions import INF_MS
from safecity.geo.road.errors import SnapTooFar
from safecity.geo.road.graph import RoadGraph
from safecity.kernel.errors import InvalidInput

Point = tuple[float, float]  # (lon, lat)


@dataclass(frozen=True)
class Snap:
    """Where a point meets the road: on directed edge `edge` (u→v) at `fraction` of its length from u."""

    point: Point
    edge: int
    twin: int  # the edge v→u on a two-way road, else -1
    fraction: float
    distance_m: float
    lon: float
    lat: float

    def origin_seeds(self, graph: RoadGraph, weights_ms: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
        """(node, ms) pairs to leave from: drive on to v, or back to u over the twin edge."""
        seeds = []
        w = int(weights_ms[self.edge])
        if w < INF_MS:
            seeds.append((int(graph.head[self.edge]), round((1.0 - self.fraction) * w)))
        if self.twin >= 0:
            wt = int(weights_ms[self.twin])
            if wt < INF_MS:
                seeds.append((int(graph.head[self.twin]), round(self.fraction * wt)))
        if self.fraction == 0.0 and self.twin < 0:
            # Standing on node u of a one-way edge: every out-edge of u is open, not only this one.
            seeds.append((int(graph.tail[self.edge]), 0))
        return seeds

    def target_seeds(self, graph: RoadGraph, weights_ms: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
        """(node, ms) pairs to arrive from: come from u along the edge, or from v along the twin."""
        seeds = []
        w = int(weights_ms[self.edge])
        if w < INF_MS:
            seeds.append((int(graph.tail[self.edge]), round(self.fraction * w)))
        if self.twin >= 0:
            wt = int(weights_ms[self.twin])
            if wt < INF_MS:
                seeds.append((int(graph.tail[self.twin]), round((1.0 - self.fraction) * wt)))
        if self.fraction == 1.0 and self.twin < 0:
            # Standing on node v of a one-way edge: every in-edge of v leads here.
            seeds.append((int(graph.head[self.edge]), 0))
        return seeds

    def same_road_ms(self, target: Snap, weights_ms: npt.NDArray[np.int64]) -> float:
        """Travel time when both points are on the same road and the target lies ahead; inf otherwise."""
        if target.edge == self.edge:
            beta = target.fraction
        elif target.edge == self.twin and self.twin >= 0:
            beta = 1.0 - target.fraction
        else:
            return math.inf
        best = math.inf
        w = int(weights_ms[self.edge])
        if beta >= self.fraction and w < INF_MS:
            best = (beta - self.fraction) * w
        if self.twin >= 0:
            wt = int(weights_ms[self.twin])
            if beta <= self.fraction and wt < INF_MS:
                best = min(best, (self.fraction - beta) * wt)
        return best


@dataclass(frozen=True)
class SnapFailure:
    """Why a point could not be put on the road: a coded reason, and the distance to the nearest road if known."""

    point: tuple[float, float]
    code: str  # road.invalid_point | road.off_map | road.no_routable_edge
    reason: str
    distance_m: float | None = None


class Snapper:
    """An STRtree over the road segments in local metres; one segment per two-way road."""

    def __init__(self, graph: RoadGraph, max_snap_m: float = 500.0) -> None:
        self.graph = graph
        self.max_snap_m = max_snap_m
        twin = graph.twin()
        ids = np.arange(graph.n_edges)
        # One segment per road: for a two-way pair keep the lower edge id.
        self.edge_ids = ids[(twin < 0) | (ids < twin)]
        lon0, lat0 = float(graph.lon.mean()), float(graph.lat.mean())
        self._kx = 111_320.0 * math.cos(math.radians(lat0))
        self._ky = 110_574.0
        self._lon0, self._lat0 = lon0, lat0
        x, y = self._xy(graph.lon, graph.lat)
        t, h = graph.tail[self.edge_ids], graph.head[self.edge_ids]
        coords = np.stack([np.stack([x[t], y[t]], axis=1), np.stack([x[h], y[h]], axis=1)], axis=1)
        self._seg = coords  # (k, 2, 2) metres
        self._lo, self._hi = coords.reshape(-1, 2).min(axis=0), coords.reshape(-1, 2).max(axis=0)
        self.tree = shapely.STRtree(shapely.linestrings(coords))

    def _xy(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        lon_a = np.asarray(lon, dtype=np.float64)
        lat_a = np.asarray(lat, dtype=np.float64)
        return (lon_a - self._lon0) * self._kx, (lat_a - self._lat0) * self._ky

    def snap(self, point: Point, max_snap_m: float | None = None) -> Snap:
        """Snap one (lon, lat) point; SnapTooFar when no road is within the limit."""
        return self.snap_many([point], max_snap_m)[0]

    def snap_many(self, points: Sequence[Point], max_snap_m: float | None = None) -> list[Snap]:
        """Snap many points in one vectorised query."""
        limit = self.max_snap_m if max_snap_m is None else max_snap_m
        if not points:
            return []
        arr = np.asarray(points, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
            raise InvalidInput("points must be finite (lon, lat) pairs")
        if (np.abs(arr[:, 0]) > 180).any() or (np.abs(arr[:, 1]) > 90).any():
            raise InvalidInput("longitude must be within ±180 and latitude within ±90")
        px, py = self._xy(arr[:, 0], arr[:, 1])
        geoms = shapely.points(px, py)
        (qi, ti), dist = self.tree.query_nearest(geoms, return_distance=True, all_matches=False)
        best = np.full(len(points), -1, dtype=np.int64)
        best_d = np.full(len(points), np.inf)
        best[qi] = ti
        best_d[qi] = dist
        out = []
        twin = self.graph.twin()
        for i, (lon, lat) in enumerate(arr):
            if best[i] < 0 or best_d[i] > limit:
                raise SnapTooFar(
                    lon=round(float(lon), 6),
                    lat=round(float(lat), 6),
                    distance_m=round(float(best_d[i]), 1) if np.isfinite(best_d[i]) else "∞",
                    limit_m=limit,
                )
            seg = self._seg[best[i]]
            ax, ay = seg[0]
            bx, by = seg[1]
            dx, dy = bx - ax, by - ay
            denom = dx * dx + dy * dy
            frac = 0.0 if denom == 0 else float(np.clip(((px[i] - ax) * dx + (py[i] - ay) * dy) / denom, 0.0, 1.0))
            edge = int(self.edge_ids[best[i]])
            sx, sy = ax + frac * dx, ay + frac * dy
            out.append(
                Snap(
                    point=(float(lon), float(lat)),
                    edge=edge,
                    twin=int(twin[edge]),
                    fraction=frac,
                    distance_m=float(best_d[i]),
                    lon=float(sx / self._kx + self._lon0),
                    lat=float(sy / self._ky + self._lat0),
                )
            )
        return out

    def try_snap_many(self, points: Sequence[Point], max_snap_m: float | None = None) -> list[Snap | SnapFailure]:
        """Snap many points; a point that cannot be snapped gets a SnapFailure instead of failing the others."""
        limit = self.max_snap_m if max_snap_m is None else max_snap_m
        out: list[Snap | SnapFailure | None] = [None] * len(points)
        good: list[int] = []
        for i, p in enumerate(points):
            try:
                lon, lat = float(p[0]), float(p[1])
            except (TypeError, ValueError, IndexError):
                out[i] = SnapFailure((math.nan, math.nan), "road.invalid_point", "not a (lon, lat) pair")
                continue
            if not (math.isfinite(lon) and math.isfinite(lat) and abs(lon) <= 180 and abs(lat) <= 90):
                out[i] = SnapFailure((lon, lat), "road.invalid_point", "longitude or latitude out of range")
                continue
            x, y = self._xy(lon, lat)
            lo, hi = self._lo, self._hi
            if not (lo[0] - limit <= x <= hi[0] + limit and lo[1] - limit <= y <= hi[1] + limit):
                out[i] = SnapFailure((lon, lat), "road.off_map", "outside the road network's area")
                continue
            good.append(i)
        if good:
            arr = np.asarray([[float(points[i][0]), float(points[i][1])] for i in good])
            px, py = self._xy(arr[:, 0], arr[:, 1])
            (qi, _), dist = self.tree.query_nearest(shapely.points(px, py), return_distance=True, all_matches=False)
            best_d = np.full(len(good), np.inf)
            best_d[qi] = dist
            near = [j for j in range(len(good)) if best_d[j] <= limit]
            for j in range(len(good)):
                if best_d[j] > limit:
                    lon, lat = (float(v) for v in arr[j])
                    reason = f"nearest road {best_d[j]:.0f} m away, limit {limit:g} m"
                    out[good[j]] = SnapFailure((lon, lat), "road.no_routable_edge", reason, float(best_d[j]))
            for j, snap in zip(near, self.snap_many([points[good[j]] for j in near], limit), strict=True):
                out[good[j]] = snap
        return [o for o in out if o is not None]

    def nearest_node(self, point: Point, max_snap_m: float | None = None) -> int:
        """The graph node at the nearer end of the snapped edge."""
        s = self.snap(point, max_snap_m)
        e = s.edge
        return int(self.graph.tail[e] if s.fraction < 0.5 else self.graph.head[e])
