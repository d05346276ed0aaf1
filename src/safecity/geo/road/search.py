"""Dijkstra variants on the CSR graph (scipy's C Dijkstra): seeded forward/reverse searches, isochrones, coverage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import shapely
from scipy.sparse.csgraph import dijkstra

from safecity.geo.road.conditions import INF_MS
from safecity.geo.road.graph import RoadGraph

F64 = npt.NDArray[np.float64]
Seeds = Sequence[tuple[int, int]]  # (node, initial ms)
SLOTS = 4  # seed slots of the virtual source node


def _seconds(weights_ms: npt.NDArray[np.int64]) -> F64:
    return np.where(weights_ms >= INF_MS, np.inf, weights_ms / 1000.0)


class SeededGraph:
    """The graph plus one virtual source node whose out-edges are rewritten per query (no CSR rebuild).

    `reverse=True` holds the transposed graph, so a search from the virtual node finds who can reach the seeds.
    """

    def __init__(self, graph: RoadGraph, weights_ms: npt.NDArray[np.int64], reverse: bool = False) -> None:
        n, m = graph.n_nodes, graph.n_edges
        self.n = n
        self.m = m
        if reverse:
            perm = np.argsort(graph.head, kind="stable")
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(graph.head, minlength=n), out=indptr[1:])
            indices = graph.tail[perm].astype(np.int32)
            self.pos = np.empty(m, dtype=np.int64)
            self.pos[perm] = np.arange(m)
        else:
            indptr, indices = graph.indptr, graph.head.astype(np.int32)
            self.pos = np.arange(m, dtype=np.int64)
        data = np.empty(m + SLOTS, dtype=np.float64)
        data[self.pos] = _seconds(weights_ms)
        data[m:] = np.inf
        self.matrix = sp.csr_matrix(
            (data, np.concatenate([indices, np.zeros(SLOTS, np.int32)]), np.append(indptr, m + SLOTS)),
            shape=(n + 1, n + 1),
        )

    def update(self, edge_ids: npt.NDArray[np.int64], weights_ms: npt.NDArray[np.int64]) -> None:
        """Write new weights of some edges in place."""
        self.matrix.data[self.pos[edge_ids]] = _seconds(weights_ms)

    def search(self, seeds: Seeds, limit: float = np.inf) -> F64:
        """Seconds from the seeds to every node (inf beyond `limit` or unreachable)."""
        if not seeds:
            return np.full(self.n, np.inf)
        if len(seeds) > SLOTS:
            return self._search_many(seeds, limit)
        m = self.m
        data, indices = self.matrix.data, self.matrix.indices
        data[m:] = np.inf
        for i, (node, ms) in enumerate(seeds):
            indices[m + i] = node
            data[m + i] = ms / 1000.0
        dist = dijkstra(self.matrix, directed=True, indices=self.n, limit=limit)
        return np.asarray(dist[: self.n])

    def _search_many(self, seeds: Seeds, limit: float) -> F64:
        nodes = np.array([s[0] for s in seeds], dtype=np.int64)
        offs = np.array([s[1] for s in seeds], dtype=np.float64) / 1000.0
        base = self.matrix[: self.n, : self.n]
        extra = sp.csr_matrix((offs, (np.zeros(len(seeds), np.int64), nodes)), shape=(1, self.n + 1))
        full = sp.vstack([sp.hstack([base, sp.csr_matrix((self.n, 1))]), extra], format="csr")
        dist = dijkstra(full, directed=True, indices=self.n, limit=limit)
        return np.asarray(dist[: self.n])


@dataclass
class Isochrone:
    """The nodes reachable within a time budget, and a polygon around them (lon, lat)."""

    minutes: float
    node_ids: npt.NDArray[np.int64]
    polygon: shapely.Geometry

    def geojson(self) -> dict[str, object]:
        """A GeoJSON Feature of the polygon."""
        return {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(self.polygon),
            "properties": {"minutes": self.minutes, "nodes": len(self.node_ids)},
        }


def isochrone_polygon(graph: RoadGraph, node_ids: npt.NDArray[np.int64], ratio: float = 0.3) -> shapely.Geometry:
    """A concave hull around the reached nodes, computed on the outline cells of a coarse grid (fast at any size)."""
    x, y = graph.lon[node_ids], graph.lat[node_ids]
    if len(node_ids) < 4:
        return shapely.convex_hull(shapely.multipoints(np.stack([x, y], axis=1)))
    # Thin the nodes to a grid of about 64 cells across, keep only cells on the outline: the hull needs no more.
    cell = max(float(x.max() - x.min()), float(y.max() - y.min()), 1e-4) / 64.0
    ix = np.floor((x - x.min()) / cell).astype(np.int64) + 1
    iy = np.floor((y - y.min()) / cell).astype(np.int64) + 1
    grid = np.zeros((int(iy.max()) + 2, int(ix.max()) + 2), dtype=bool)
    grid[iy, ix] = True
    inner = grid[1:-1, 1:-1] & grid[:-2, 1:-1] & grid[2:, 1:-1] & grid[1:-1, :-2] & grid[1:-1, 2:]
    outline = grid.copy()
    outline[1:-1, 1:-1] &= ~inner
    cy, cx = np.nonzero(outline)
    px = x.min() + (cx - 0.5) * cell
    py = y.min() + (cy - 0.5) * cell
    corners = np.concatenate(
        [np.stack([px + dx * cell / 2, py + dy * cell / 2], axis=1) for dx in (-1, 1) for dy in (-1, 1)]
    )
    return shapely.concave_hull(shapely.multipoints(corners), ratio=ratio)


@dataclass
class Coverage:
    """Which unit reaches each road node first, and when (seconds); updated incrementally per unit."""

    unit_ids: list[str]
    owner: npt.NDArray[np.int32]  # index into unit_ids, -1 where no unit reaches
    seconds: F64
    seeds: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def owner_of(self, node: int) -> str | None:
        """The unit that reaches `node` first."""
        i = int(self.owner[node])
        return self.unit_ids[i] if i >= 0 else None

    def counts(self) -> dict[str, int]:
        """Number of nodes each unit covers first."""
        c = np.bincount(self.owner[self.owner >= 0], minlength=len(self.unit_ids))
        return {u: int(c[i]) for i, u in enumerate(self.unit_ids) if u in self.seeds}


def multi_source(
    csr: sp.csr_matrix, n: int, seeds_by_unit: Sequence[Seeds], limit: float = np.inf
) -> tuple[F64, npt.NDArray[np.int32]]:
    """Multi-source Dijkstra with per-seed offsets: (seconds, index of the winning seed list) for every node."""
    rows, cols, vals = [], [], []
    for u, seeds in enumerate(seeds_by_unit):
        for node, ms in seeds:
            rows.append(u)
            cols.append(node)
            vals.append(ms / 1000.0)
    k = len(seeds_by_unit)
    if k == 0 or not rows:
        return np.full(n, np.inf), np.full(n, -1, dtype=np.int32)
    virt = sp.csr_matrix((vals, (rows, cols)), shape=(k, n + k))
    full = sp.vstack([sp.hstack([csr, sp.csr_matrix((n, k))]), virt], format="csr")
    dist, _, src = dijkstra(
        full, directed=True, indices=np.arange(n, n + k), limit=limit, min_only=True, return_predecessors=True
    )
    owner = np.where(np.isfinite(dist[:n]), src[:n] - n, -1).astype(np.int32)
    return np.asarray(dist[:n]), owner


def reassign_region(csr: sp.csr_matrix, coverage: Coverage, region: npt.NDArray[np.int64]) -> None:
    """Recompute owners and times of `region` from its boundary (nodes outside it keep valid times)."""
    if len(region) == 0:
        return
    n = len(coverage.seconds)
    in_region = np.zeros(n, dtype=bool)
    in_region[region] = True
    # Boundary: nodes outside the region, already reached, with an edge into it.
    into_region = csr[:, region].tocsr()
    has_edge = np.diff(into_region.indptr) > 0
    boundary = np.nonzero(has_edge & ~in_region & np.isfinite(coverage.seconds))[0]
    local = np.concatenate([region, boundary])
    nr, nb = len(region), len(boundary)
    # Only edges that end in the region matter: a boundary node's time is final.
    sub = sp.hstack([into_region[local], sp.csr_matrix((nr + nb, nb))], format="csr")
    seeds_by = [[(nr + i, round(float(coverage.seconds[b]) * 1000))] for i, b in enumerate(boundary)]
    dist, win = multi_source(sub, nr + nb, seeds_by)
    owners = coverage.owner[boundary]
    coverage.seconds[region] = dist[:nr]
    won = win[:nr]
    coverage.owner[region] = np.where(won >= 0, owners[np.maximum(won, 0)] if nb else -1, -1)
