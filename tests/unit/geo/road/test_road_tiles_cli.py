"""Vector tiles in MBTiles, and the typer commands."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import mapbox_vector_tile
import numpy as np
import shapely
from typer.testing import CliRunner

from safecity.geo.road.commands import road_app
from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.osm_import import import_osm
from safecity.geo.road.tiles import EXTENTS, MBTiles, _quantize, bake_mbtiles, tile_bounds, tile_range


def test_bake_and_read_tiles(small_graph: RoadGraph, tmp_path: Path) -> None:
    path = tmp_path / "roads.mbtiles"
    count = bake_mbtiles(small_graph, path, 12, 14)
    assert count > 0
    tiles = MBTiles(path)
    try:
        meta = tiles.metadata()
        assert meta["format"] == "pbf" and json.loads(meta["json"])["vector_layers"][0]["id"] == "roads"
        x0, y0, x1, y1 = tile_range(small_graph.bbox(), 14)
        found = [tiles.tile(14, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
        data = next(t for t in found if t)
        decoded = mapbox_vector_tile.decode(gzip.decompress(data))
        feats = decoded["roads"]["features"]
        assert feats and feats[0]["geometry"]["type"] in {"LineString", "MultiLineString"}
        assert {"highway", "oneway"} <= set(feats[0]["properties"])
        assert tiles.tile(3, 0, 0) is None
    finally:
        tiles.close()


def test_tiles_carry_road_names(tiny_osm: Path, tmp_path: Path) -> None:
    graph = import_osm(tiny_osm)
    assert graph.meta["way_names"] == {"10": "中山东一路"}
    graph.save(tmp_path / "g.npz")
    graph = RoadGraph.load(tmp_path / "g.npz")  # the names survive the artifact
    path = tmp_path / "roads.mbtiles"
    bake_mbtiles(graph, path, 15, 15)
    tiles = MBTiles(path)
    try:
        x0, y0, x1, y1 = tile_range(graph.bbox(), 15)
        props = [
            f["properties"]
            for x in range(x0, x1 + 1)
            for y in range(y0, y1 + 1)
            if (data := tiles.tile(15, x, y))
            for f in mapbox_vector_tile.decode(gzip.decompress(data))["roads"]["features"]
        ]
        fields = json.loads(tiles.metadata()["json"])["vector_layers"][0]["fields"]
    finally:
        tiles.close()
    named = [p for p in props if p["highway"] == "primary"]
    assert named and all(p["name"] == "中山东一路" for p in named)
    assert all(p["name_en"] == "East Zhongshan No.1 Road" for p in named)
    assert all("name" not in p for p in props if p["highway"] == "residential")  # way 11 has no name
    assert fields["name"] == "String"


def test_shanghai_graph_keeps_road_names(shanghai_graph: RoadGraph) -> None:
    names = set(shanghai_graph.meta["way_names"].values())
    assert {"中山东一路", "滨江大道"} <= names


def test_own_quantization_encodes_the_same_bytes_as_the_library() -> None:
    """Tiles quantize their lines themselves (the library's path uses a deprecated shapely call): the encoded tile
    is byte for byte what `quantize_bounds` gives, on a real tile and on vertices exactly half a unit apart (rounded
    half to even, as Python's round)."""
    rng = np.random.default_rng(5)

    def encode(geoms: np.ndarray, **options: object) -> bytes:
        feats = [{"geometry": g, "properties": {"n": i}} for i, g in enumerate(geoms)]
        return bytes(mapbox_vector_tile.encode([{"name": "roads", "features": feats}], default_options=options))

    halves = shapely.linestrings([[[2.5, 3.5], [10.5, 0.5], [4095.5, 7.5]], [[1.5, 1.5], [6.5, 9.5], [0.5, 2.5]]])
    tile = tile_bounds(14, 13_723, 6_697)
    random = shapely.linestrings(rng.uniform(tile[:2], tile[2:], size=(40, 3, 2)))
    for bounds, lines in (((0.0, 0.0, float(EXTENTS), float(EXTENTS)), halves), (tile, random)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # shapely.ops.transform inside the library
            theirs = encode(lines, quantize_bounds=bounds, extents=EXTENTS)
        assert encode(_quantize(lines, bounds), extents=EXTENTS) == theirs


def test_cli_commands(tiny_osm: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    graph = tmp_path / "g.npz"
    res = runner.invoke(
        road_app, ["import-osm", str(tiny_osm), "-o", str(graph), "--geojson", str(tmp_path / "e.json")]
    )
    assert res.exit_code == 0, res.output
    assert RoadGraph.load(graph).n_nodes == 5
    assert json.loads((tmp_path / "e.json").read_text())["type"] == "FeatureCollection"
    res = runner.invoke(road_app, ["route", "121.4700,31.2300", "121.4800,31.2300", "--graph", str(graph)])
    assert res.exit_code == 0, res.output
    feature = json.loads(res.stdout)
    assert feature["properties"]["seconds"] > 0
    res = runner.invoke(road_app, ["route", "121.47,31.23", "121.60,31.23", "--graph", str(graph)])
    assert res.exit_code == 2
    assert "road.snap_too_far" in res.output
    res = runner.invoke(road_app, ["import-osm", str(tmp_path / "nope.osm")])
    assert res.exit_code == 2 and "road.osm_invalid" in res.output
    syn = tmp_path / "s.npz"
    res = runner.invoke(road_app, ["build-synthetic", "--nodes", "2000", "-o", str(syn)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        road_app, ["bake-tiles", str(syn), "-o", str(tmp_path / "t.mbtiles"), "--min-zoom", "13", "--max-zoom", "13"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t.mbtiles").stat().st_size > 0
