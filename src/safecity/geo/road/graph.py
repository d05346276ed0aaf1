"""The road graph: directed edges in CSR order, node coordinates, a versioned .npz artifact and GeoJSON export."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from safecity.geo.road.errors import GraphArtifactError, NoDrivableRoads

FORMAT = "safecity-road-graph"
FORMAT_VERSION = 2  # 2: turn bans (`turn_bans`); version 1 files load with none
READABLE_VERSIONS = (1, 2)

# Road classes by code; the code is stored per edge (int8). Order is part of the artifact format: append only.
HIGHWAY_CLASSES: tuple[str, ...] = (
    "motorway",
    "trunk",
    "primary",
    "secondary",
    "tertiary",
    "unclassified",
    "residential",
    "living_street",
    "service",
    "motorway_link",
    "trunk_link",
    "primary_link",
    "secondary_link",
    "tertiary_link",
    "road",
    "pedestrian",  # only when open to motor vehicles (`motor_vehicle=yes|destination`)
)
HIGHWAY_CODE: dict[str, int] = {name: i for i, name in enumerate(HIGHWAY_CLASSES)}

EARTH_RADIUS_M = 6_371_008.8

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]


def haversine_m(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> Any:
    """Great-circle distance in metres (vectorised over numpy arrays)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def box_around_m(lon: float, lat: float, radius_m: float) -> tuple[float, float, float, float]:
    """A lon/lat box (west, south, east, north) holding every point within `radius_m` of (lon, lat) by
    `haversine_m`, a little larger: a prefilter an index or a scan can use before the exact distance."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M) * 1.01
    south, north = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    # Longitude degrees are shortest at the box's pole-ward edge; near a pole or across the antimeridian, any lon.
    cos_edge = math.cos(math.radians(max(abs(south), abs(north))))
    dlon = math.degrees(radius_m / (EARTH_RADIUS_M * cos_edge)) * 1.01 if cos_edge > 1e-9 else 360.0
    if lon - dlon < -180.0 or lon + dlon > 180.0:
        return (-180.0, south, 180.0, north)
    return (lon - dlon, south, lon + dlon, north)


def travel_ms(length_m: F64, speed_kmh: F64) -> I64:
    """Edge travel time in whole milliseconds: the one weight every engine (scipy, CCH, pgRouting) uses."""
    ms = np.rint(length_m / (speed_kmh / 3.6) * 1000.0)
    return np.maximum(ms, 1).astype(np.int64)


@dataclass
class RoadGraph:
    """A directed road graph in CSR form: edges sorted by tail, `indptr[u]:indptr[u+1]` are u's out-edges."""

    lon: F64
    lat: F64
    node_ref: I64  # OSM node id, or the generator's index for synthetic networks
    indptr: I64
    head: I32
    length_m: F64
    speed_kmh: F64
    highway: npt.NDArray[np.int8]
    way_ref: I64  # OSM way id of each edge (0 for synthetic)
    meta: dict[str, Any] = field(default_factory=dict)
    # Banned turns as (from edge, to edge) pairs with head[from] == tail[to] (OSM restriction relations).
    turn_bans: I64 = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))

    # --- shape -------------------------------------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return int(self.lon.shape[0])

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return int(self.head.shape[0])

    @property
    def tail(self) -> I32:
        """Tail node of every edge (derived from indptr)."""
        cached = self.__dict__.get("_tail")
        if cached is None:
            cached = np.repeat(np.arange(self.n_nodes, dtype=np.int32), np.diff(self.indptr))
            self.__dict__["_tail"] = cached
        return cached

    @property
    def time_ms(self) -> I64:
        """Free-flow travel time of every edge in milliseconds."""
        cached = self.__dict__.get("_time_ms")
        if cached is None:
            cached = travel_ms(self.length_m, self.speed_kmh)
            self.__dict__["_time_ms"] = cached
        return cached

    def twin(self) -> I64:
        """For each edge u→v, the id of the edge v→u, or -1 when the road is one-way."""
        cached = self.__dict__.get("_twin")
        if cached is None:
            n = self.n_nodes
            key = self.tail.astype(np.int64) * n + self.head
            rkey = self.head.astype(np.int64) * n + self.tail
            order = np.argsort(key, kind="stable")
            pos = np.searchsorted(key[order], rkey)
            pos = np.minimum(pos, len(key) - 1)
            found = key[order][pos] == rkey
            cached = np.where(found, order[pos], -1).astype(np.int64)
            self.__dict__["_twin"] = cached
        return cached

    def edge_id(self, u: int, v: int) -> int:
        """The id of the edge u→v, or -1."""
        lo, hi = int(self.indptr[u]), int(self.indptr[u + 1])
        hits = np.nonzero(self.head[lo:hi] == v)[0]
        return lo + int(hits[0]) if hits.size else -1

    def edge_ids(self, us: npt.ArrayLike, vs: npt.ArrayLike) -> I64:
        """The id of each edge us[i]→vs[i] (the first one, as `edge_id`), or -1: one vectorised lookup."""
        cached = self.__dict__.get("_edge_keys")
        if cached is None:
            key = self.tail.astype(np.int64) * self.n_nodes + self.head
            order = np.argsort(key, kind="stable")
            cached = self.__dict__["_edge_keys"] = (key[order], order)
        keys, order = cached
        want = np.asarray(us, dtype=np.int64) * self.n_nodes + np.asarray(vs, dtype=np.int64)
        if not len(keys):
            return np.full(len(want), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        return np.where(keys[pos] == want, order[pos], -1).astype(np.int64)

    def set_turn_bans(self, pairs: npt.ArrayLike) -> None:
        """Replace the banned turns: (from edge, to edge) pairs that meet at a node; duplicates are dropped."""
        bans = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if bans.size:
            if bans.min() < 0 or bans.max() >= self.n_edges:
                raise ValueError("turn ban edge id out of range")
            if (self.head[bans[:, 0]] != self.tail[bans[:, 1]]).any():
                raise ValueError("a banned turn must join an edge to one leaving its head node")
            bans = np.unique(bans, axis=0)
        self.turn_bans = bans
        self.__dict__.pop("_turns", None)

    def csr(self, weights: F64 | None = None) -> sp.csr_matrix:
        """The graph as a scipy CSR matrix of travel seconds (or the given per-edge weights)."""
        data = self.time_ms / 1000.0 if weights is None else weights
        return sp.csr_matrix((data, self.head, self.indptr), shape=(self.n_nodes, self.n_nodes))

    def bbox(self) -> tuple[float, float, float, float]:
        """(min lon, min lat, max lon, max lat)."""
        return (float(self.lon.min()), float(self.lat.min()), float(self.lon.max()), float(self.lat.max()))

    # --- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_edges(
        cls,
        lon: F64,
        lat: F64,
        node_ref: I64,
        tail: npt.ArrayLike,
        head: npt.ArrayLike,
        speed_kmh: npt.ArrayLike,
        highway: npt.ArrayLike,
        way_ref: npt.ArrayLike | None = None,
        length_m: npt.ArrayLike | None = None,
        meta: dict[str, Any] | None = None,
        largest_scc: bool = True,
    ) -> RoadGraph:
        """Build from an edge list: drop self-loops, keep the fastest parallel edge, keep the largest SCC."""
        t = np.asarray(tail, dtype=np.int64)
        h = np.asarray(head, dtype=np.int64)
        spd = np.asarray(speed_kmh, dtype=np.float64)
        hw = np.asarray(highway, dtype=np.int8)
        way = np.zeros(len(t), dtype=np.int64) if way_ref is None else np.asarray(way_ref, dtype=np.int64)
        length = (
            haversine_m(lon[t], lat[t], lon[h], lat[h]) if length_m is None else np.asarray(length_m, dtype=np.float64)
        )
        keep = t != h
        t, h, spd, hw, way, length = t[keep], h[keep], spd[keep], hw[keep], way[keep], length[keep]
        if t.size == 0:
            raise NoDrivableRoads(path=(meta or {}).get("source", "input"))
        # Parallel edges: keep the fastest, because every router (and pgRouting on the same table) would.
        ms = travel_ms(length, spd)
        order = np.lexsort((ms, h, t))
        t, h, spd, hw, way, length = t[order], h[order], spd[order], hw[order], way[order], length[order]
        first = np.ones(len(t), dtype=bool)
        first[1:] = (t[1:] != t[:-1]) | (h[1:] != h[:-1])
        t, h, spd, hw, way, length = t[first], h[first], spd[first], hw[first], way[first], length[first]

        n = len(lon)
        nodes = np.arange(n)
        if largest_scc:
            mat = sp.csr_matrix((np.ones(len(t)), (t, h)), shape=(n, n))
            _, labels = connected_components(mat, directed=True, connection="strong")
            used = np.zeros(n, dtype=bool)
            used[t] = True
            used[h] = True
            counts = np.bincount(labels[used], minlength=labels.max() + 1)
            big = int(np.argmax(counts))
            nodes = np.nonzero(labels == big)[0]
        else:
            used = np.zeros(n, dtype=bool)
            used[t] = True
            used[h] = True
            nodes = np.nonzero(used)[0]
        remap = np.full(n, -1, dtype=np.int64)
        remap[nodes] = np.arange(len(nodes))
        keep = (remap[t] >= 0) & (remap[h] >= 0)
        t, h = remap[t[keep]], remap[h[keep]]
        spd, hw, way, length = spd[keep], hw[keep], way[keep], length[keep]
        order = np.lexsort((h, t))
        t, h, spd, hw, way, length = t[order], h[order], spd[order], hw[order], way[order], length[order]
        indptr = np.zeros(len(nodes) + 1, dtype=np.int64)
        np.cumsum(np.bincount(t, minlength=len(nodes)), out=indptr[1:])
        return cls(
            lon=np.ascontiguousarray(lon[nodes], dtype=np.float64),
            lat=np.ascontiguousarray(lat[nodes], dtype=np.float64),
            node_ref=np.ascontiguousarray(np.asarray(node_ref)[nodes], dtype=np.int64),
            indptr=indptr,
            head=h.astype(np.int32),
            length_m=length.astype(np.float64),
            speed_kmh=spd.astype(np.float64),
            highway=hw.astype(np.int8),
            way_ref=way.astype(np.int64),
            meta=dict(meta or {}),
        )

    # --- artifact ----------------------------------------------------------------------------------------------

    def save(self, path: str | Path, order: I64 | None = None) -> Path:
        """Write the versioned artifact (.npz, uncompressed so it loads in milliseconds); optionally a CCH order."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": FORMAT, "format_version": FORMAT_VERSION}
        arrays: dict[str, Any] = {
            "lon": self.lon,
            "lat": self.lat,
            "node_ref": self.node_ref,
            "indptr": self.indptr,
            "head": self.head,
            "length_m": self.length_m,
            "speed_kmh": self.speed_kmh,
            "highway": self.highway,
            "way_ref": self.way_ref,
            "turn_bans": self.turn_bans,
            "meta": np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8),
        }
        if order is not None:
            arrays["cch_order"] = np.asarray(order, dtype=np.int64)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RoadGraph:
        """Load an artifact written by `save`; a wrong format or version is a GraphArtifactError."""
        path = Path(path)
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise GraphArtifactError(path=str(path), reason=str(err) or type(err).__name__) from err
        with npz:
            try:
                meta = json.loads(bytes(npz["meta"]).decode())
                fields = {k: npz[k] for k in ("lon", "lat", "node_ref", "indptr", "head", "length_m", "speed_kmh")}
                fields["highway"] = npz["highway"]
                fields["way_ref"] = npz["way_ref"]
                order = npz["cch_order"] if "cch_order" in npz.files else None
                bans = npz["turn_bans"] if "turn_bans" in npz.files else np.zeros((0, 2), dtype=np.int64)
            except (KeyError, ValueError, zipfile.BadZipFile) as err:
                raise GraphArtifactError(path=str(path), reason=f"missing or bad field: {err}") from err
        if meta.get("format") != FORMAT or meta.get("format_version") not in READABLE_VERSIONS:
            raise GraphArtifactError(
                path=str(path),
                reason=f"format {meta.get('format')} v{meta.get('format_version')},"
                f" expected {FORMAT} v{FORMAT_VERSION}",
            )
        graph = cls(**fields, meta=meta)
        if int(graph.indptr[-1]) != graph.n_edges or len(graph.indptr) != graph.n_nodes + 1:
            raise GraphArtifactError(path=str(path), reason="inconsistent CSR arrays")
        try:
            graph.set_turn_bans(bans)
        except ValueError as err:
            raise GraphArtifactError(path=str(path), reason=str(err)) from err
        if order is not None:
            graph.__dict__["_cch_order"] = order
        return graph

    # --- inspection --------------------------------------------------------------------------------------------

    def edges_geojson(self, limit: int | None = None) -> dict[str, Any]:
        """The directed edges as a GeoJSON FeatureCollection (lon, lat), for inspection in a GIS."""
        tail, head = self.tail, self.head
        count = self.n_edges if limit is None else min(limit, self.n_edges)
        features = []
        for e in range(count):
            u, v = int(tail[e]), int(head[e])
            features.append(
                {
                    "type": "Feature",
                    "id": e,
                    "geometry": {
                        "type": "LineString",
                        "coordinates": [
                            [float(self.lon[u]), float(self.lat[u])],
                            [float(self.lon[v]), float(self.lat[v])],
                        ],
                    },
                    "properties": {
                        "edge": e,
                        "source": u,
                        "target": v,
                        "highway": HIGHWAY_CLASSES[int(self.highway[e])],
                        "length_m": round(float(self.length_m[e]), 2),
                        "speed_kmh": float(self.speed_kmh[e]),
                        "time_s": float(self.time_ms[e]) / 1000.0,
                        "way": int(self.way_ref[e]),
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features}

    def write_geojson(self, path: str | Path) -> Path:
        """Write `edges_geojson()` to a file."""
        path = Path(path)
        path.write_text(json.dumps(self.edges_geojson(), ensure_ascii=False))
        return path
