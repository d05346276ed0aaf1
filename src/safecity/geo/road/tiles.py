"""Bake the road graph into Mapbox Vector Tiles stored in one MBTiles file (SQLite), and read tiles back."""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
from pathlib import Path

import mapbox_vector_tile
import numpy as np
import shapely
import structlog

from safecity.geo.road.graph import HIGHWAY_CLASSES, HIGHWAY_CODE, RoadGraph

log = structlog.get_logger(__name__)

LAYER = "roads"
EXTENTS = 4096  # tile coordinate range (the MVT default)
ORIGIN_SHIFT = 20037508.342789244
# Lowest zoom at which a class is drawn; minor streets only when zoomed in.
MIN_ZOOM_BY_CLASS = {
    "motorway": 0,
    "trunk": 0,
    "primary": 8,
    "secondary": 10,
    "tertiary": 11,
    "motorway_link": 11,
    "trunk_link": 11,
    "primary_link": 12,
    "secondary_link": 12,
    "tertiary_link": 12,
}


def mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 (lon, lat) to Web Mercator metres (EPSG:3857)."""
    x = np.asarray(lon) * ORIGIN_SHIFT / 180.0
    lat_c = np.clip(np.asarray(lat), -85.05112878, 85.05112878)
    y = np.log(np.tan((90.0 + lat_c) * math.pi / 360.0)) * 6378137.0
    return x, y


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """Mercator bounds of XYZ tile (z, x, y)."""
    size = 2 * ORIGIN_SHIFT / (1 << z)
    minx = -ORIGIN_SHIFT + x * size
    maxy = ORIGIN_SHIFT - y * size
    return (minx, maxy - size, minx + size, maxy)


def tile_range(bbox: tuple[float, float, float, float], z: int) -> tuple[int, int, int, int]:
    """XYZ tile index range (x0, y0, x1, y1) covering a (lon, lat) bbox at zoom z."""
    n = 1 << z

    def xy(lon: float, lat: float) -> tuple[int, int]:
        lat_r = math.radians(lat)
        tx = int((lon + 180.0) / 360.0 * n)
        ty = int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n)
        return min(max(tx, 0), n - 1), min(max(ty, 0), n - 1)

    x0, y1 = xy(bbox[0], bbox[1])
    x1, y0 = xy(bbox[2], bbox[3])
    return x0, y0, x1, y1


def _quantize(geoms: np.ndarray, bounds: tuple[float, float, float, float]) -> np.ndarray:
    """Geometries in tile coordinates (0..EXTENTS, y up), rounded half to even as mapbox-vector-tile's own
    `quantize_bounds` does. Done here, vectorized: the library's path calls `shapely.ops.transform`, deprecated in
    shapely 2.1, and hiding that warning took `warnings.catch_warnings()`, which is not thread-safe (tiles are baked
    in a worker thread)."""
    minx, miny, maxx, maxy = bounds
    scale = np.array([EXTENTS / (maxx - minx), EXTENTS / (maxy - miny)])
    offset = np.array([minx, miny])
    quantized: np.ndarray = shapely.transform(geoms, lambda xy: np.round((xy - offset) * scale))
    return quantized


def bake_mbtiles(graph: RoadGraph, path: str | Path, min_zoom: int = 10, max_zoom: int = 15) -> int:
    """Write vector tiles of the road edges for zooms min..max into an MBTiles file; returns the tile count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    twin = graph.twin()
    ids = np.arange(graph.n_edges)
    roads = ids[(twin < 0) | (ids < twin)]  # one line per road, not per direction
    t, h = graph.tail[roads], graph.head[roads]
    mx, my = mercator(graph.lon, graph.lat)
    lines = shapely.linestrings(np.stack([np.stack([mx[t], my[t]], 1), np.stack([mx[h], my[h]], 1)], 1))
    tree = shapely.STRtree(lines)
    classes = [HIGHWAY_CLASSES[int(c)] for c in graph.highway[roads]]
    min_z = np.array([MIN_ZOOM_BY_CLASS.get(c, 13) for c in classes])
    oneway = twin[roads] < 0
    # OSM road names (imports since way names were kept; a synthetic graph has none).
    way_names: dict[str, str] = graph.meta.get("way_names") or {}
    way_names_en: dict[str, str] = graph.meta.get("way_names_en") or {}
    way_ids = [str(int(w)) for w in graph.way_ref[roads]] if way_names or way_names_en else []
    props: list[dict[str, object]] = []
    for i, cls in enumerate(classes):
        prop: dict[str, object] = {"highway": cls, "oneway": bool(oneway[i])}
        if way_ids:
            if name := way_names.get(way_ids[i]):
                prop["name"] = name
            if name_en := way_names_en.get(way_ids[i]):
                prop["name_en"] = name_en
        props.append(prop)
    db = sqlite3.connect(path)
    count = 0
    try:
        db.executescript(
            "CREATE TABLE metadata (name TEXT, value TEXT);"
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);"
            "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);"
        )
        for z in range(min_zoom, max_zoom + 1):
            x0, y0, x1, y1 = tile_range(graph.bbox(), z)
            for tx in range(x0, x1 + 1):
                for ty in range(y0, y1 + 1):
                    bounds = tile_bounds(z, tx, ty)
                    hits = tree.query(shapely.box(*bounds))
                    hits = hits[min_z[hits] <= z]
                    if hits.size == 0:
                        continue
                    clipped = _quantize(shapely.clip_by_rect(lines[hits], *bounds), bounds)
                    features = [
                        {"geometry": geom, "properties": props[i]}
                        for geom, i in zip(clipped, hits, strict=True)
                        if not geom.is_empty
                    ]
                    if not features:
                        continue
                    data = mapbox_vector_tile.encode(
                        [{"name": LAYER, "features": features}], default_options={"extents": EXTENTS}
                    )
                    # MBTiles 1.3: rows are TMS (y flipped), tile data gzip-compressed.
                    db.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, tx, (1 << z) - 1 - ty, gzip.compress(data)))
                    count += 1
        bbox = graph.bbox()
        meta = {
            "name": graph.meta.get("source", "roads"),
            "format": "pbf",
            "type": "baselayer",
            "version": "1",
            "minzoom": str(min_zoom),
            "maxzoom": str(max_zoom),
            "bounds": ",".join(f"{v:.6f}" for v in bbox),
            "center": f"{(bbox[0] + bbox[2]) / 2:.6f},{(bbox[1] + bbox[3]) / 2:.6f},{min_zoom + 2}",
            "attribution": "© OpenStreetMap contributors" if graph.meta.get("kind") == "osm" else "SafeCity synthetic",
            "json": json.dumps(
                {
                    "vector_layers": [
                        {
                            "id": LAYER,
                            "fields": {
                                "highway": "String",
                                "oneway": "Boolean",
                                "name": "String",
                                "name_en": "String",
                            },
                            "minzoom": min_zoom,
                            "maxzoom": max_zoom,
                        }
                    ]
                }
            ),
        }
        db.executemany("INSERT INTO metadata VALUES (?, ?)", list(meta.items()))
        db.commit()
    finally:
        db.close()
    log.info("tiles_baked", path=str(path), tiles=count, min_zoom=min_zoom, max_zoom=max_zoom)
    return count


class MBTiles:
    """Read-only access to an MBTiles file: `tile(z, x, y)` returns gzip-compressed MVT bytes or None."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)

    def metadata(self) -> dict[str, str]:
        """The metadata table as a dict."""
        return {str(k): str(v) for k, v in self._db.execute("SELECT name, value FROM metadata")}

    def tile(self, z: int, x: int, y: int) -> bytes | None:
        """The tile at XYZ coordinates (gzip-compressed; send with Content-Encoding: gzip)."""
        row = self._db.execute(
            "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
            (z, x, (1 << z) - 1 - y),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()


__all__ = ["HIGHWAY_CODE", "MBTiles", "bake_mbtiles", "tile_bounds", "tile_range"]
