"""RoadService: the runtime's async front of one RoadNetwork (and its tiles), loaded at start-up from settings.

`RoadNetwork` is not thread-safe and its queries are CPU work, so every call runs off the event loop. They all run
on one dedicated worker thread: that serializes them, and RoutingKit's query objects are bound to the thread that
created them (pyo3 "unsendable": using or dropping one on another thread raises), so the network is built, queried
and dropped on that same thread.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import structlog

from safecity.geo.road.conditions import INF_MS
from safecity.geo.road.graph import HIGHWAY_CLASSES, RoadGraph
from safecity.geo.road.network import Ranking, RoadNetwork, Route, UnitEta
from safecity.geo.road.search import Coverage, Isochrone
from safecity.geo.road.snap import Point, Snap
from safecity.geo.road.synthetic import synthetic_network
from safecity.geo.road.tiles import LAYER, MBTiles, bake_mbtiles
from safecity.kernel.errors import InvalidInput, NotFound, ServiceUnavailable
from safecity.kernel.settings import RoadSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")
# Bump when the tile baking changes, so cached MBTiles files are baked again.
TILES_VERSION = "2"  # 2: road names
TILES_KEY = "safecity_graph_key"


class RoadsNotLoaded(ServiceUnavailable):
    """No road graph is loaded on this node."""

    code = "road.not_loaded"
    status = 503
    title_en = "No road network"
    title_zh = "未加载路网"
    message_en = (
        "No road network is loaded on this node. Load a road graph: safecity import-osm FILE -o graph.npz, "
        "then set roads.graph (SAFECITY_ROADS__GRAPH) and restart."
    )
    message_zh = (
        "本节点未加载路网。请先导入路网：safecity import-osm 文件 -o graph.npz，"
        "再设置 roads.graph（SAFECITY_ROADS__GRAPH）并重启。"
    )


class TilesNotLoaded(NotFound):
    """No road tiles are available on this node (the tile set does not exist here: 404)."""

    code = "road.tiles_not_loaded"
    status = 404
    title_en = "No road tiles"
    title_zh = "未加载道路瓦片"
    message_en = (
        "No road tiles are available. Bake them: safecity road bake-tiles GRAPH -o roads.mbtiles, then set roads.tiles."
    )
    message_zh = "没有道路瓦片。请先生成：safecity road bake-tiles 路网文件 -o roads.mbtiles，再设置 roads.tiles。"


class MatrixTooLarge(InvalidInput):
    """A travel-time matrix request asks for more cells than allowed."""

    code = "road.matrix_too_large"
    title_en = "Matrix too large"
    title_zh = "矩阵过大"
    message_en = "The matrix has {cells} cells ({origins} x {targets}); the limit is {limit}."
    message_zh = "矩阵共 {cells} 个单元（{origins} x {targets}），上限为 {limit}。"


@dataclass(frozen=True)
class ConditionsSummary:
    """The live conditions after a change: a version that grows with every change, and edge counts."""

    version: int
    closed_edges: int
    slowed_edges: int


def graph_key(graph: RoadGraph, min_zoom: int, max_zoom: int) -> str:
    """A content key of a graph's geometry and classes (plus tile zooms and baker version), for tile caching."""
    digest = hashlib.blake2b(digest_size=16)
    for arr in (graph.lon, graph.lat, graph.indptr, graph.head, graph.highway):
        digest.update(np.ascontiguousarray(arr).tobytes())
    for names in ("way_names", "way_names_en"):
        digest.update(json.dumps(graph.meta.get(names) or {}, sort_keys=True, ensure_ascii=False).encode())
    digest.update(f"{TILES_VERSION}:{min_zoom}:{max_zoom}".encode())
    return digest.hexdigest()


class RoadService:
    """Async, serialized access to one RoadNetwork and an optional MBTiles file."""

    def __init__(self, settings: RoadSettings | None = None) -> None:
        self.settings = settings or RoadSettings()
        self._network: RoadNetwork | None = None
        self._preloaded: RoadGraph | None = None
        self._tiles: MBTiles | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tiles_lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """Whether the settings name a graph or ask for a synthetic one (or a network was preloaded)."""
        return self._preloaded is not None or self.settings.graph is not None or self.settings.synthetic

    @property
    def loaded(self) -> bool:
        """Whether a network is loaded."""
        return self._network is not None

    @property
    def network(self) -> RoadNetwork:
        """The loaded network (for code already running in a worker thread under `call`); RoadsNotLoaded if none."""
        if self._network is None:
            raise RoadsNotLoaded()
        return self._network

    def preload(self, graph: RoadGraph, tiles: str | Path | None = None) -> None:
        """Use this graph (built by the caller, e.g. the demo from an OSM file) instead of the settings' one.

        Call before `start`; the network over it is built on the service's worker thread at start.
        """
        self._preloaded = graph
        if tiles is not None:
            self._tiles = MBTiles(tiles)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roads")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def start(self) -> None:
        """Load the configured graph (preloaded, artifact or synthetic) and tiles off the loop; nothing if none."""
        if self._network is None and self.configured:
            self._network = await self._run(self._load)
        if self._tiles is None and self.settings.tiles is not None:
            self._tiles = await asyncio.to_thread(MBTiles, self.settings.tiles)
        if self._network is None:
            log.info("roads_not_configured", hint="safecity import-osm FILE -o graph.npz; set roads.graph")

    def _load(self) -> RoadNetwork:
        s = self.settings
        if self._preloaded is not None:
            net = RoadNetwork(self._preloaded, max_snap_m=s.max_snap_m)
        elif s.graph is not None:
            net = RoadNetwork.load(s.graph, max_snap_m=s.max_snap_m)
        else:
            graph = synthetic_network(s.synthetic_nodes, center=s.synthetic_center, spacing_m=s.synthetic_spacing_m)
            net = RoadNetwork(graph, max_snap_m=s.max_snap_m)
        net.warm_up()
        g = net.graph
        log.info("roads_loaded", source=str(g.meta.get("source", "synthetic")), nodes=g.n_nodes, edges=g.n_edges)
        return net

    def _drop(self) -> None:
        self._network = None
        gc.collect()  # free the RoutingKit objects here, on the thread that made them

    async def close(self) -> None:
        """Drop the network on its worker thread, stop the thread, close the tiles file."""
        if self._executor is not None:
            await self._run(self._drop)
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._tiles is not None:
            tiles, self._tiles = self._tiles, None
            await asyncio.to_thread(tiles.close)

    # --- generic call ------------------------------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(network, *args, **kwargs)` on the service's worker thread (calls run one at a time, in order)."""
        net = self.network
        return await self._run(fn, net, *args, **kwargs)

    # --- queries (mirroring RoadNetwork) -----------------------------------------------------------------------

    async def snap(self, point: Point) -> Snap:
        """Snap a point to its road (SnapTooFar beyond the limit)."""
        return await self.call(RoadNetwork.snap, point)

    async def travel_time(self, a: Point, b: Point, *, with_path: bool = True) -> Route:
        """Fastest route from a to b."""
        return await self.call(RoadNetwork.travel_time, a, b, with_path=with_path)

    async def nearest_units(
        self, point: Point, units: Mapping[str, Point], k: int = 3, *, with_path: bool = False
    ) -> list[UnitEta]:
        """The k units with the shortest road time to `point`."""
        return await self.call(RoadNetwork.nearest_units, point, units, k, with_path=with_path)

    async def rank_units(
        self, units: Mapping[str, Point], target: Point, *, k: int | None = None, with_path: bool = False
    ) -> Ranking:
        """Units by road time to `target`, plus the ones that cannot be routed with their coded reason."""
        return await self.call(RoadNetwork.rank_units, units, target, k=k, with_path=with_path)

    async def matrix(self, origins: Sequence[Point], targets: Sequence[Point]) -> npt.NDArray[np.float64]:
        """Travel seconds origin x target (inf where unreachable); MatrixTooLarge beyond the configured cap."""
        cells = len(origins) * len(targets)
        if cells > self.settings.max_matrix_cells:
            raise MatrixTooLarge(
                cells=cells, origins=len(origins), targets=len(targets), limit=self.settings.max_matrix_cells
            )
        return await self.call(RoadNetwork.matrix, origins, targets)

    async def isochrones(
        self, point: Point, minutes: Iterable[float] = (5, 10, 15), *, polygon: bool = True
    ) -> list[Isochrone]:
        """Nodes reachable within each time budget, with polygons."""
        return await self.call(RoadNetwork.isochrones, point, list(minutes), polygon=polygon)

    async def coverage(self, units: Mapping[str, Point]) -> Coverage:
        """Rebuild the coverage map; returns a snapshot (later updates do not change it)."""
        return await self.call(lambda net: _copy(net.coverage(units)))

    async def update_unit(self, unit_id: str, position: Point | None) -> Coverage:
        """Move, add (a point) or remove (None) one unit in the coverage map; returns a snapshot."""
        return await self.call(lambda net: _copy(net.update_unit(unit_id, position)))

    # --- conditions --------------------------------------------------------------------------------------------

    async def set_speed_factor(self, edge_ids: Iterable[int], factor: float) -> ConditionsSummary:
        """Scale the speed of edges."""
        ids = list(edge_ids)
        return await self.call(lambda net: (net.set_speed_factor(ids, factor), _summary(net))[1])

    async def close_edges(self, edge_ids: Iterable[int]) -> ConditionsSummary:
        """Close edges."""
        ids = list(edge_ids)
        return await self.call(lambda net: (net.close_edges(ids), _summary(net))[1])

    async def reopen_edges(self, edge_ids: Iterable[int]) -> ConditionsSummary:
        """Reopen edges."""
        ids = list(edge_ids)
        return await self.call(lambda net: (net.reopen_edges(ids), _summary(net))[1])

    async def clear_conditions(self) -> ConditionsSummary:
        """Back to free flow."""
        return await self.call(lambda net: (net.clear_conditions(), _summary(net))[1])

    async def conditions(self) -> ConditionsSummary:
        """The current conditions."""
        return await self.call(_summary)

    async def road_edges(self, edge_id: int) -> list[int]:
        """An edge and its opposite direction on a two-way road."""
        return await self.call(lambda net: net.road_edges(_check_edge(net, edge_id)))

    # --- inspection --------------------------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        """What is loaded: source, size, bounding box, conditions, tiles."""
        if self._network is None:
            return {"loaded": False, "tiles": self._tiles is not None}
        g = self._network.graph
        summary = await self.conditions()
        return {
            "loaded": True,
            "source": str(g.meta.get("source", "synthetic")),
            "kind": str(g.meta.get("kind", "synthetic")),
            "nodes": g.n_nodes,
            "edges": g.n_edges,
            "turn_bans": len(g.turn_bans),
            "bbox": list(g.bbox()),
            "max_snap_m": self._network.snapper.max_snap_m,
            "conditions_version": summary.version,
            "closed_edges": summary.closed_edges,
            "slowed_edges": summary.slowed_edges,
            "tiles": self._tiles is not None,
        }

    async def edges_geojson(self, bbox: tuple[float, float, float, float], limit: int = 5000) -> dict[str, Any]:
        """Road edges with an end inside `bbox` as GeoJSON (one feature per directed edge, live weights)."""
        return await self.call(_edges_geojson, bbox, limit)

    # --- tiles -------------------------------------------------------------------------------------------------

    @property
    def has_tiles(self) -> bool:
        """Whether an MBTiles file is attached."""
        return self._tiles is not None

    async def tile(self, z: int, x: int, y: int) -> bytes | None:
        """Gzip-compressed MVT bytes of tile (z, x, y), None when empty; TilesNotLoaded without a tiles file."""
        tiles = self._tiles
        if tiles is None:
            raise TilesNotLoaded()

        def read() -> bytes | None:
            with self._tiles_lock:
                return tiles.tile(z, x, y)

        return await asyncio.to_thread(read)

    async def tile_metadata(self) -> dict[str, str]:
        """The MBTiles metadata table."""
        tiles = self._tiles
        if tiles is None:
            raise TilesNotLoaded()

        def read() -> dict[str, str]:
            with self._tiles_lock:
                return tiles.metadata()

        return await asyncio.to_thread(read)

    async def ensure_tiles(self, path: str | Path, *, min_zoom: int = 10, max_zoom: int = 15) -> bool:
        """Attach tiles of the loaded graph from `path`, baking them first unless a file of this graph is there.

        Returns True when it baked. The cache key is a hash of the graph's geometry and classes and the zooms.
        """
        path = Path(path)
        graph = self.network.graph  # the geometry never changes after load; no lock needed to read it
        return await asyncio.to_thread(self._ensure_tiles, graph, path, min_zoom, max_zoom)

    def _ensure_tiles(self, graph: RoadGraph, path: Path, min_zoom: int, max_zoom: int) -> bool:
        key = graph_key(graph, min_zoom, max_zoom)
        baked = False
        if _stored_key(path) != key:
            tmp = path.with_name(path.name + ".tmp")
            bake_mbtiles(graph, tmp, min_zoom, max_zoom)
            db = sqlite3.connect(tmp)
            try:
                db.execute("INSERT INTO metadata VALUES (?, ?)", (TILES_KEY, key))
                db.commit()
            finally:
                db.close()
            tmp.replace(path)
            baked = True
        with self._tiles_lock:
            old, self._tiles = self._tiles, MBTiles(path)
            if old is not None:
                old.close()
        log.info("road_tiles_ready", path=str(path), baked=baked)
        return baked


def tilejson(metadata: Mapping[str, str], tile_url: str) -> dict[str, Any]:
    """A TileJSON 3.0.0 document for an MBTiles metadata table."""
    import json

    bounds = [float(v) for v in metadata.get("bounds", "-180,-85,180,85").split(",")]
    center = [float(v) for v in metadata["center"].split(",")] if "center" in metadata else None
    layers = json.loads(metadata.get("json", "{}")).get("vector_layers", [{"id": LAYER, "fields": {}}])
    doc: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": metadata.get("name", "roads"),
        "scheme": "xyz",
        "tiles": [tile_url],
        "minzoom": int(metadata.get("minzoom", 0)),
        "maxzoom": int(metadata.get("maxzoom", 22)),
        "bounds": bounds,
        "vector_layers": layers,
        "attribution": metadata.get("attribution", ""),
    }
    if center is not None:
        doc["center"] = center
    return doc


def _stored_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM metadata WHERE name = ?", (TILES_KEY,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        # A broken or foreign file: bake again over it.
        return None
    return None if row is None else str(row[0])


def _copy(cov: Coverage) -> Coverage:
    return Coverage(
        unit_ids=list(cov.unit_ids), owner=cov.owner.copy(), seconds=cov.seconds.copy(), seeds=dict(cov.seeds)
    )


def _summary(net: RoadNetwork) -> ConditionsSummary:
    c = net.conditions
    return ConditionsSummary(
        version=c.version, closed_edges=int(c.closed.sum()), slowed_edges=int((c.factor != 1.0).sum())
    )


def _check_edge(net: RoadNetwork, edge_id: int) -> int:
    if not 0 <= edge_id < net.graph.n_edges:
        raise InvalidInput(f"edge id {edge_id} is out of range (0..{net.graph.n_edges - 1})")
    return edge_id


def _edges_geojson(net: RoadNetwork, bbox: tuple[float, float, float, float], limit: int) -> dict[str, Any]:
    g = net.graph
    lon, lat = g.lon, g.lat
    inside = (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])
    tail, head = g.tail, g.head
    edges = np.nonzero(inside[tail] | inside[head])[0]
    truncated = len(edges) > limit
    edges = edges[:limit]
    weights = net.conditions.weights_ms(edges.astype(np.int64))
    features = []
    for e, w in zip(edges.tolist(), weights.tolist(), strict=True):
        u, v = int(tail[e]), int(head[e])
        features.append(
            {
                "type": "Feature",
                "id": e,
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[float(lon[u]), float(lat[u])], [float(lon[v]), float(lat[v])]],
                },
                "properties": {
                    "edge": e,
                    "highway": HIGHWAY_CLASSES[int(g.highway[e])],
                    "length_m": round(float(g.length_m[e]), 2),
                    "speed_kmh": float(g.speed_kmh[e]),
                    "time_s": None if w >= INF_MS else w / 1000.0,
                    "closed": bool(net.conditions.closed[e]),
                    "speed_factor": float(net.conditions.factor[e]),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features, "truncated": truncated}
