"""RoadNetwork: the one service object for travel times, nearest units, matrices, isochrones, coverage, conditions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from safecity.geo.road.ch import CchEngine, graph_order
from safecity.geo.road.conditions import INF_MS, RoadConditions
from safecity.geo.road.errors import Unreachable
from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.search import (
    Coverage,
    Isochrone,
    SeededGraph,
    isochrone_polygon,
    multi_source,
    reassign_region,
)
from safecity.geo.road.snap import Point, Snap, SnapFailure, Snapper
from safecity.geo.road.turns import Seeds, TurnGraph, turn_graph
from safecity.kernel.errors import InvalidInput

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Route:
    """A route between two points: travel seconds, metres, the graph nodes passed and a (lon, lat) line."""

    seconds: float
    meters: float
    nodes: list[int]
    coordinates: list[tuple[float, float]]
    from_snap_m: float = 0.0  # how far the origin lay from the road it was snapped to
    to_snap_m: float = 0.0  # the same for the destination

    def geojson(self) -> dict[str, object]:
        """The route as a GeoJSON Feature."""
        return {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [list(c) for c in self.coordinates]},
            "properties": {
                "seconds": round(self.seconds, 3),
                "meters": round(self.meters, 1),
                "from_snap_m": round(self.from_snap_m, 1),
                "to_snap_m": round(self.to_snap_m, 1),
            },
        }


@dataclass(frozen=True)
class UnitEta:
    """One unit's road time to an incident, with its route when asked for."""

    unit_id: str
    seconds: float
    route: Route | None = None
    snap_m: float = 0.0  # how far the unit's position lay from the road it was snapped to


@dataclass(frozen=True)
class Unroutable:
    """A unit that cannot be ranked by road time, with a coded reason; it never blocks ranking the others."""

    unit_id: str
    code: str  # road.invalid_point | road.off_map | road.no_routable_edge | road.unreachable
    reason: str
    snap_m: float | None = None


@dataclass(frozen=True)
class UnitTimes:
    """Road seconds from many units to one target as arrays, for callers that read a few lines of many.

    `seconds[i]` is unit `ids[i]`'s time (inf when it cannot be routed); `order` lists the routable ones fastest first
    (ties in input order); `routes` holds the route of the first few of `order` when asked for.
    """

    target_snap_m: float
    ids: list[str]
    seconds: npt.NDArray[np.float64]
    snap_m: list[float | None]
    order: list[int]
    unroutable: list[Unroutable]
    routes: dict[int, Route]


@dataclass(frozen=True)
class Ranking:
    """Units ranked by road time to a target (fastest first), and the units that could not be ranked."""

    target_snap_m: float
    ranked: list[UnitEta]
    unroutable: list[Unroutable]


class RoadNetwork:
    """Road queries over one graph: exact, in process, with live conditions (speed factors and closures)."""

    def __init__(self, graph: RoadGraph, *, max_snap_m: float = 500.0) -> None:
        self.graph = graph
        self.conditions = RoadConditions(graph.time_ms)
        self.snapper = Snapper(graph, max_snap_m=max_snap_m)
        self._weights = self.conditions.weights_ms()
        # Every search runs on the turn-expanded graph (the road graph itself when no turn is banned).
        self.turns: TurnGraph = turn_graph(graph)
        self._xgraph = self.turns.graph
        self._xweights = self.turns.expand_weights(self._weights)
        self._forward = SeededGraph(self._xgraph, self._xweights)
        self._reverse: SeededGraph | None = None
        self._cch: CchEngine | None = None
        self._coverage: Coverage | None = None
        self._unit_snaps: dict[tuple[float, float], Snap | SnapFailure] = {}
        # Origin seeds per snapped unit position; they depend on the weights, so a condition change clears them.
        self._unit_seeds: dict[tuple[float, float], tuple[Snap, Seeds]] = {}
        self._coverage_units: dict[str, Point] = {}

    @classmethod
    def load(cls, path: str | Path, *, max_snap_m: float = 500.0) -> RoadNetwork:
        """Load a saved graph artifact."""
        return cls(RoadGraph.load(path), max_snap_m=max_snap_m)

    # --- engines -----------------------------------------------------------------------------------------------

    @property
    def cch(self) -> CchEngine:
        """The CCH engine, built on first use (about a second for 100k nodes when the order is stored)."""
        if self._cch is None:
            if self.turns.restricted and "_cch_order" not in self._xgraph.__dict__:
                self._xgraph.__dict__["_cch_order"] = self.turns.cch_order(graph_order(self.graph))
            self._cch = CchEngine(self._xgraph, self._xweights)
        return self._cch

    @property
    def reverse(self) -> SeededGraph:
        """The transposed graph for reverse searches."""
        if self._reverse is None:
            self._reverse = SeededGraph(self._xgraph, self._xweights, reverse=True)
        return self._reverse

    def warm_up(self) -> None:
        """Build the lazy engines now (at start-up, not on the first dispatch)."""
        _ = self.cch, self.reverse

    def _origin(self, s: Snap) -> Seeds:
        return self.turns.origin_seeds(s.edge, s.twin, s.fraction, self._weights)

    def _unit_origin(self, s: Snap) -> Seeds:
        """A unit's origin seeds, less a seed another one of them dominates (fewer pinned sources, same minimum)."""
        seeds = self._origin(s)
        if len(seeds) == 2 and not self.turns.restricted:
            # On a node (fraction 0 or 1) of a two-way road, the seed at that node (0 ms) dominates the one at the far
            # end: the edge between them leads there from the node at exactly that seed's cost.
            ahead, back = seeds  # (head, (1 - f) * w), (tail, f * w_twin)
            if s.fraction == 0.0 and back[1] == 0:
                return [back]
            if s.fraction == 1.0 and ahead[1] == 0:
                return [ahead]
        return seeds

    def _target(self, s: Snap) -> Seeds:
        return self.turns.target_seeds(s.edge, s.twin, s.fraction, self._weights)

    # --- snapping ----------------------------------------------------------------------------------------------

    def snap(self, point: Point) -> Snap:
        """Snap a (lon, lat) point to the nearest road edge; SnapTooFar beyond the limit."""
        return self.snapper.snap(point)

    def snap_unit(self, point: Point) -> Snap:
        """Snap a unit's reported position (SnapTooFar beyond the limit) and keep the snap and its origin seeds for
        the next ranking, which then does not snap it again."""
        s = self.snap(point)
        key = _key(point)
        if key is not None:
            if len(self._unit_seeds) > 100_000:
                self._unit_seeds.clear()
            self._unit_seeds[key] = (s, self._unit_origin(s))
        return s

    def _snap_units(self, points: Sequence[Point]) -> list[Snap | SnapFailure]:
        """Snap unit positions (cached per position); a position that cannot be snapped gets its SnapFailure."""
        out: list[Snap | SnapFailure | None] = []
        missing: list[int] = []
        cache = self._unit_snaps
        for i, p in enumerate(points):
            key = p if type(p) is tuple else _key(p)  # a (float, float) tuple is its own key
            hit = cache.get(key) if key is not None else None
            out.append(hit)
            if hit is None:
                missing.append(i)
        if missing:
            if len(self._unit_snaps) > 100_000:
                self._unit_snaps.clear()
            for i, found in zip(missing, self.snapper.try_snap_many([points[i] for i in missing]), strict=True):
                out[i] = found
                key = _key(points[i])
                if key is not None and isinstance(found, Snap):
                    self._unit_snaps[key] = found
        return [o for o in out if o is not None]

    def _snap_units_strict(self, points: Sequence[Point]) -> list[Snap]:
        """Snap unit positions; the first one that cannot be snapped raises its error (coverage needs them all)."""
        snaps = self._snap_units(points)
        for p, s in zip(points, snaps, strict=True):
            if isinstance(s, SnapFailure):
                self.snapper.snap_many([p])  # raises SnapTooFar / InvalidInput with the details
        return [s for s in snaps if isinstance(s, Snap)]

    # --- point to point ----------------------------------------------------------------------------------------

    def travel_time(self, a: Point, b: Point, *, with_path: bool = True) -> Route:
        """Fastest route from a to b (Unreachable when one-ways, closures or islands prevent it)."""
        sa, sb = self.snapper.snap_many([a, b])
        return self._route(sa, sb, with_path)

    def _route(self, sa: Snap, sb: Snap, with_path: bool = True) -> Route:
        w = self._weights
        direct = sa.same_road_ms(sb, w)
        dist, xnodes = self.cch.route(self._origin(sa), self._target(sb))
        nodes = self.turns.base_path(xnodes)
        best = math.inf if dist is None else float(dist)
        if math.isfinite(direct) and direct <= best:
            seconds = direct / 1000.0
            coords = [(sa.lon, sa.lat), (sb.lon, sb.lat)]
            meters = float(abs(self._edge_pos_m(sa) - self._edge_pos_m(sb, sa)))
            return Route(seconds, meters, [], coords, sa.distance_m, sb.distance_m)
        if dist is None:
            raise Unreachable(origin=_fmt(sa.point), target=_fmt(sb.point))
        coords = [(sa.lon, sa.lat)]
        meters = 0.0
        if nodes:
            # The length is part of the answer with or without the line (the search returns the path anyway).
            meters = self._path_meters(nodes) + self._leg_m(sa, nodes[0], leaving=True)
            meters += self._leg_m(sb, nodes[-1], leaving=False)
            if with_path:
                coords += [(float(self.graph.lon[n]), float(self.graph.lat[n])) for n in nodes]
        coords.append((sb.lon, sb.lat))
        return Route(best / 1000.0, meters, nodes, coords, sa.distance_m, sb.distance_m)

    def _edge_pos_m(self, s: Snap, ref: Snap | None = None) -> float:
        frac = s.fraction
        if ref is not None and s.edge != ref.edge:
            frac = 1.0 - frac
        edge = ref.edge if ref is not None else s.edge
        return frac * float(self.graph.length_m[edge])

    def _leg_m(self, s: Snap, node: int, leaving: bool) -> float:
        length = float(self.graph.length_m[s.edge])
        at_head = int(self.graph.head[s.edge]) == node
        return (1.0 - s.fraction) * length if at_head else s.fraction * length

    def _path_meters(self, nodes: list[int]) -> float:
        if len(nodes) < 2:
            return 0.0
        path = np.asarray(nodes, dtype=np.int64)
        edges = self.graph.edge_ids(path[:-1], path[1:])
        return float(self.graph.length_m[edges[edges >= 0]].sum())

    # --- nearest units -----------------------------------------------------------------------------------------

    def nearest_units(
        self, point: Point, units: Mapping[str, Point], k: int = 3, *, with_path: bool = False
    ) -> list[UnitEta]:
        """The k units with the shortest road time to `point` (exact: one reverse search from the incident).

        Units that cannot be routed (bad or off-network positions, unreachable) are left out; `rank_units` lists them.
        """
        if k < 1:
            raise InvalidInput("k must be at least 1")
        if not units:
            return []
        return self.rank_units(units, point, k=k, with_path=with_path).ranked

    def rank_units(
        self, units: Mapping[str, Point], target: Point, *, k: int | None = None, with_path: bool = False
    ) -> Ranking:
        """Every unit by road time to `target`, fastest first (the first k only, if given), plus the unroutable ones.

        A unit whose position is invalid (`road.invalid_point`), outside the network's area (`road.off_map`), too far
        from any open road (`road.no_routable_edge`) or cut off from the target (`road.unreachable`) is listed in
        `unroutable` with its reason and never stops the others being ranked. A target that cannot be snapped is an
        error (SnapTooFar / InvalidInput): there is nothing to rank against.
        """
        times = self.unit_seconds(units, target, routes=(k if k is not None else len(units)) if with_path else 0)
        ranked = [
            UnitEta(times.ids[i], float(times.seconds[i]), times.routes.get(i), times.snap_m[i] or 0.0)
            for i in (times.order if k is None else times.order[:k])
        ]
        return Ranking(target_snap_m=times.target_snap_m, ranked=ranked, unroutable=times.unroutable)

    def unit_seconds(self, units: Mapping[str, Point], target: Point, *, routes: int = 0) -> UnitTimes:
        """Every unit's road seconds to `target` as arrays (what `rank_units` lists), with the routes of the first
        `routes` units by time; the same errors and unroutable reasons as `rank_units`.

        One exact many-to-one search from the pinned unit seeds. A unit's snap and seeds are cached by its position
        (the seeds until the road conditions change), so a moving fleet re-snaps only the units that moved.
        """
        goal = self.snap(target)
        ids = list(units)
        points = [units[u] for u in ids]
        seeds_cache = self._unit_seeds
        found: list[tuple[Snap, Seeds] | None] = [seeds_cache.get(p) if type(p) is tuple else None for p in points]
        missing = [i for i, f in enumerate(found) if f is None]
        unroutable: list[Unroutable] = []
        snap_m: list[float | None] = [None] * len(ids)
        if missing:
            if len(seeds_cache) > 100_000:
                seeds_cache.clear()
            for i, s in zip(missing, self._snap_units([points[i] for i in missing]), strict=True):
                if isinstance(s, SnapFailure):
                    unroutable.append(Unroutable(ids[i], s.code, s.reason, s.distance_m))
                    snap_m[i] = s.distance_m
                    continue
                found[i] = entry = (s, self._unit_origin(s))
                key = _key(points[i])
                if key is not None:
                    seeds_cache[key] = entry
        ok = [i for i, f in enumerate(found) if f is not None]
        entries: list[tuple[Snap, Seeds]] = [found[i] for i in ok]  # type: ignore[misc]
        for i, (s, _) in zip(ok, entries, strict=True):
            snap_m[i] = s.distance_m
        goal_roads = {goal.edge, goal.twin}
        same_road = [i for i, (s, _) in zip(ok, entries, strict=True) if s.edge in goal_roads]
        seeds = [seed for _, unit_seeds in entries for seed in unit_seeds]
        secs = np.full(len(ids), np.inf)
        if seeds:
            pinned = [node for node, _ in seeds]
            offsets = np.fromiter((ms for _, ms in seeds), dtype=np.float64, count=len(seeds))
            owner = np.repeat(np.asarray(ok, dtype=np.int64), [len(unit_seeds) for _, unit_seeds in entries])
            np.minimum.at(secs, owner, self.cch.many_to_one(pinned, self._target(goal)) + offsets)
        w = self._weights
        for i in same_road:  # on the goal's road: the direct stretch may beat any path over nodes
            s = found[i][0]  # type: ignore[index]
            secs[i] = min(secs[i], s.same_road_ms(goal, w))
        secs /= 1000.0
        by_time = np.argsort(secs, kind="stable")
        finite = np.isfinite(secs)[by_time]
        order: list[int] = by_time[finite].tolist()
        for i in by_time[~finite].tolist():
            f = found[i]
            if f is None:  # could not be snapped: listed above
                continue
            if f[1]:
                reason = "no drivable route to the target (one-ways, closures, turn restrictions)"
                unroutable.append(Unroutable(ids[i], "road.unreachable", reason, f[0].distance_m))
            else:
                reason = "the road it is on is closed"
                unroutable.append(Unroutable(ids[i], "road.no_routable_edge", reason, f[0].distance_m))
        paths = {i: self._route(found[i][0], goal) for i in order[:routes]}  # type: ignore[index]
        return UnitTimes(goal.distance_m, ids, secs, snap_m, order, unroutable, paths)

    # --- matrices ----------------------------------------------------------------------------------------------

    def matrix(self, origins: Sequence[Point], targets: Sequence[Point]) -> npt.NDArray[np.float64]:
        """Travel seconds from every origin to every target (inf where unreachable)."""
        so = self.snapper.snap_many(origins)
        st = self.snapper.snap_many(targets)
        w = self._weights
        pinned: list[int] = []
        t_off: list[int] = []
        t_owner: list[int] = []
        for j, s in enumerate(st):
            for node, ms in self._target(s):
                pinned.append(node)
                t_off.append(ms)
                t_owner.append(j)
        out = np.full((len(so), len(st)), np.inf)
        if pinned:
            otm = self.cch.pin_targets(pinned)
            offs = np.asarray(t_off, dtype=np.float64)
            group = np.asarray(t_owner)
            starts = np.r_[0, np.nonzero(np.diff(group))[0] + 1]
            present = group[starts]
            for i, s in enumerate(so):
                seeds = self._origin(s)
                if not seeds:
                    continue
                row = self.cch.one_to_many(seeds, otm) + offs
                out[i, present] = np.minimum.reduceat(row, starts)
            del otm
        # Points on the same road: the direct stretch may beat any path over nodes.
        by_road: dict[int, list[int]] = {}
        for j, s in enumerate(st):
            by_road.setdefault(min(s.edge, s.twin) if s.twin >= 0 else s.edge, []).append(j)
        for i, s in enumerate(so):
            key = min(s.edge, s.twin) if s.twin >= 0 else s.edge
            for j in by_road.get(key, ()):
                out[i, j] = min(out[i, j], s.same_road_ms(st[j], w))
        return out / 1000.0

    def matrix_nodes(self, origins: Sequence[int], targets: Sequence[int]) -> npt.NDArray[np.float64]:
        """Node-to-node travel seconds (inf where unreachable)."""
        if not self.turns.restricted:
            return self.cch.matrix_nodes(origins, targets)
        # A split node is several nodes of the expanded graph: start by any out-edge, arrive by any in-edge.
        pinned: list[int] = []
        group: list[int] = []
        for j, t in enumerate(targets):
            copies = self.turns.arriving(int(t))
            pinned += copies
            group += [j] * len(copies)
        otm = self.cch.pin_targets(pinned)
        starts = np.r_[0, np.nonzero(np.diff(np.asarray(group)))[0] + 1]
        out = np.full((len(origins), len(targets)), np.inf)
        for i, o in enumerate(origins):
            row = self.cch.one_to_many(self.turns.leaving(int(o), self._weights), otm)
            out[i] = np.minimum.reduceat(row, starts)
        out[np.asarray(origins, dtype=np.int64)[:, None] == np.asarray(targets, dtype=np.int64)[None, :]] = 0.0
        del otm
        return out / 1000.0

    # --- isochrones --------------------------------------------------------------------------------------------

    def isochrone(self, point: Point, minutes: float, *, polygon: bool = True) -> Isochrone:
        """Road nodes reachable from `point` within `minutes`, and a polygon around them."""
        return self.isochrones(point, [minutes], polygon=polygon)[0]

    def isochrones(
        self, point: Point, minutes: Iterable[float] = (5, 10, 15), *, polygon: bool = True
    ) -> list[Isochrone]:
        """Several isochrones from one search (default 5, 10 and 15 minutes)."""
        bands = sorted(float(m) for m in minutes)
        if not bands or bands[0] <= 0:
            raise InvalidInput("minutes must be positive")
        s = self.snap(point)
        dist = self.turns.arrival_seconds(self._forward.search(self._origin(s), limit=bands[-1] * 60.0))
        out = []
        for m in bands:
            nodes = np.nonzero(dist <= m * 60.0)[0].astype(np.int64)
            poly = isochrone_polygon(self.graph, nodes) if polygon else None
            out.append(Isochrone(minutes=m, node_ids=nodes, polygon=poly))
        return out

    def seconds_from(self, point: Point, limit_s: float = np.inf) -> npt.NDArray[np.float64]:
        """Seconds from `point` to every node (scipy Dijkstra; inf beyond the limit)."""
        return self.turns.arrival_seconds(self._forward.search(self._origin(self.snap(point)), limit=limit_s))

    def seconds_to(self, point: Point, limit_s: float = np.inf) -> npt.NDArray[np.float64]:
        """Seconds from every node to `point` (reverse scipy Dijkstra)."""
        dist = self.reverse.search(self._target(self.snap(point)), limit=limit_s)
        return self.turns.departure_seconds(dist, self._weights)

    # --- coverage ----------------------------------------------------------------------------------------------

    def coverage(self, units: Mapping[str, Point]) -> Coverage:
        """Rebuild the coverage map: which unit reaches each road node first (multi-source Dijkstra)."""
        ids = list(units)
        self._coverage_units = dict(units)
        snaps = self._snap_units_strict([units[u] for u in ids])
        seeds = [self._origin(s) for s in snaps]
        nx = self._xgraph.n_nodes
        dist, owner = multi_source(self._forward.matrix[:nx, :nx], nx, seeds)
        self._coverage = Coverage(unit_ids=ids, owner=owner, seconds=dist, seeds=dict(zip(ids, seeds, strict=True)))
        return self._coverage_view(self._coverage)

    def _coverage_view(self, cov: Coverage) -> Coverage:
        """The coverage over road nodes: a split node takes its earliest copy (the same object without bans)."""
        if not self.turns.restricted:
            return cov
        order = np.lexsort((cov.seconds, self.turns.node_orig))
        _, first = np.unique(self.turns.node_orig[order], return_index=True)
        pick = order[first]
        return Coverage(unit_ids=cov.unit_ids, owner=cov.owner[pick], seconds=cov.seconds[pick], seeds=cov.seeds)

    def update_unit(self, unit_id: str, position: Point | None) -> Coverage:
        """Update the coverage map for one unit: None removes it (unavailable), a point adds or moves it."""
        cov = self._coverage
        if cov is None:
            raise InvalidInput("build the coverage first with coverage(units)")
        nx = self._xgraph.n_nodes
        csr = self._forward.matrix[:nx, :nx]
        if unit_id in cov.seeds:
            idx = cov.unit_ids.index(unit_id)
            del cov.seeds[unit_id]
            region = np.nonzero(cov.owner == idx)[0].astype(np.int64)
            cov.owner[region] = -1
            cov.seconds[region] = np.inf
            reassign_region(csr, cov, region)
        if position is None:
            self._coverage_units.pop(unit_id, None)
            return self._coverage_view(cov)
        self._coverage_units[unit_id] = position
        seeds = self._origin(self._snap_units_strict([position])[0])
        if unit_id in cov.unit_ids:
            idx = cov.unit_ids.index(unit_id)
        else:
            cov.unit_ids.append(unit_id)
            idx = len(cov.unit_ids) - 1
        cov.seeds[unit_id] = seeds
        finite = cov.seconds[np.isfinite(cov.seconds)]
        limit = float(finite.max()) if finite.size == len(cov.seconds) else np.inf
        d_new = self._forward.search(seeds, limit=limit)
        better = d_new < cov.seconds
        cov.seconds[better] = d_new[better]
        cov.owner[better] = idx
        return self._coverage_view(cov)

    # --- conditions --------------------------------------------------------------------------------------------

    def set_speed_factor(self, edge_ids: Iterable[int], factor: float) -> None:
        """Scale the speed of edges (0.5 = half speed, congestion); takes effect at once."""
        self._apply(self.conditions.set_speed_factor(edge_ids, factor))

    def close_edges(self, edge_ids: Iterable[int]) -> None:
        """Close edges (both directions must be listed for a two-way road)."""
        self._apply(self.conditions.close(edge_ids))

    def reopen_edges(self, edge_ids: Iterable[int]) -> None:
        """Reopen closed edges."""
        self._apply(self.conditions.reopen(edge_ids))

    def clear_conditions(self) -> None:
        """Back to free flow."""
        self._apply(self.conditions.clear())

    def road_edges(self, edge_id: int) -> list[int]:
        """An edge and its opposite direction, if the road is two-way (handy for closing a whole road)."""
        twin = int(self.graph.twin()[edge_id])
        return [edge_id] if twin < 0 else [edge_id, twin]

    def _apply(self, ids: npt.NDArray[np.int64]) -> None:
        if len(ids) == 0:
            return
        new = self.conditions.weights_ms(ids)
        self._weights[ids] = new
        xids = self.turns.expand_edges(ids)
        if self.turns.restricted:
            self._xweights[xids] = self._weights[self.turns.edge_orig[xids]]
        xnew = self._xweights[xids]
        self._forward.update(xids, xnew)
        if self._reverse is not None:
            self._reverse.update(xids, xnew)
        if self._cch is not None:
            self._cch.update(xids, xnew)
        self._unit_seeds.clear()
        if self._coverage is not None:
            # Times changed under the coverage map: rebuild it from the same unit positions.
            self.coverage(dict(self._coverage_units))
        log.info(
            "road_conditions_applied",
            edges=len(ids),
            version=self.conditions.version,
            closed=int((new >= INF_MS).sum()),
        )


def _key(p: Point) -> tuple[float, float] | None:
    try:
        return (float(p[0]), float(p[1]))
    except (TypeError, ValueError, IndexError):
        return None


def _fmt(p: Point) -> str:
    return f"({p[0]:.6f}, {p[1]:.6f})"
