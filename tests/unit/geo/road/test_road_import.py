"""OSM import: formats, one-ways, speeds, bad input; the graph artifact and its GeoJSON."""

from __future__ import annotations

import bz2
import dataclasses
from pathlib import Path

import numpy as np
import osmium
import pytest

from safecity.geo.road.errors import GraphArtifactError, NoDrivableRoads, OsmFileError
from safecity.geo.road.graph import HIGHWAY_CODE, RoadGraph
from safecity.geo.road.osm_import import SpeedProfile, import_osm, parse_maxspeed, way_direction


def _edges(g: RoadGraph) -> set[tuple[int, int]]:
    return {(int(g.node_ref[t]), int(g.node_ref[h])) for t, h in zip(g.tail, g.head, strict=True)}


def test_tiny_osm_keeps_drivable_roads_and_one_ways(tiny_osm: Path) -> None:
    g = import_osm(tiny_osm)
    # Largest SCC: 1-2-3 two-way plus the one-way loop 3->4->5->2; footway and private road are gone.
    assert set(g.node_ref.tolist()) == {1, 2, 3, 4, 5}
    assert _edges(g) == {(1, 2), (2, 1), (2, 3), (3, 2), (3, 4), (4, 5), (5, 2)}
    e = g.edge_id(int(np.nonzero(g.node_ref == 1)[0][0]), int(np.nonzero(g.node_ref == 2)[0][0]))
    assert g.speed_kmh[e] == 40.0  # from maxspeed
    assert g.highway[e] == HIGHWAY_CODE["primary"]
    e2 = g.edge_id(int(np.nonzero(g.node_ref == 3)[0][0]), int(np.nonzero(g.node_ref == 4)[0][0]))
    assert g.speed_kmh[e2] == 30.0  # residential default
    assert g.twin()[e2] == -1


def test_speed_profile_overrides_defaults(tiny_osm: Path) -> None:
    g = import_osm(tiny_osm, SpeedProfile(speeds={"residential": 20.0}))
    assert 20.0 in g.speed_kmh.tolist()


def test_bz2_and_pbf_give_the_same_graph(tiny_osm: Path, tmp_path: Path) -> None:
    ref = import_osm(tiny_osm)
    bz = tmp_path / "tiny.osm.bz2"
    bz.write_bytes(bz2.compress(tiny_osm.read_bytes()))
    pbf = tmp_path / "tiny.osm.pbf"
    with osmium.SimpleWriter(str(pbf)) as writer:
        for obj in osmium.FileProcessor(str(tiny_osm)):
            if obj.is_node():
                writer.add_node(obj)
            elif obj.is_way():
                writer.add_way(obj)
    for path in (bz, pbf):
        g = import_osm(path)
        assert _edges(g) == _edges(ref)
        np.testing.assert_allclose(g.length_m, ref.length_m)


def test_parse_maxspeed_and_direction() -> None:
    assert parse_maxspeed("50") == 50.0
    assert parse_maxspeed("30 mph") == pytest.approx(48.28, abs=0.01)
    assert parse_maxspeed("CN:urban") is None
    assert parse_maxspeed(None) is None
    assert way_direction({"oneway": "-1"}, "primary") == -1
    assert way_direction({"junction": "roundabout"}, "primary") == 1
    assert way_direction({}, "motorway") == 1
    assert way_direction({"oneway": "no"}, "motorway") == 0


def test_bad_osm_files_give_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.osm"
    empty.write_text("")
    with pytest.raises(OsmFileError, match="empty"):
        import_osm(empty)
    corrupt = tmp_path / "corrupt.osm.pbf"
    corrupt.write_bytes(b"\x00\x00\x00\x0dnot a pbf at all" * 10)
    with pytest.raises(OsmFileError):
        import_osm(corrupt)
    broken_xml = tmp_path / "broken.osm"
    broken_xml.write_text("<osm><node id='1' lat='1' lon='1'>")
    with pytest.raises(OsmFileError):
        import_osm(broken_xml)
    with pytest.raises(OsmFileError, match="no such file"):
        import_osm(tmp_path / "missing.osm")
    foot = tmp_path / "foot.osm"
    foot.write_text(
        '<osm version="0.6"><node id="1" lat="31" lon="121"/><node id="2" lat="31.001" lon="121"/>'
        '<way id="3"><nd ref="1"/><nd ref="2"/><tag k="highway" v="footway"/></way></osm>'
    )
    with pytest.raises(NoDrivableRoads) as info:
        import_osm(foot)
    assert info.value.code == "road.no_drivable_roads"


def test_artifact_round_trip_and_version_check(small_graph: RoadGraph, tmp_path: Path) -> None:
    path = small_graph.save(tmp_path / "g.npz")
    g = RoadGraph.load(path)
    for name in ("lon", "lat", "indptr", "head", "length_m", "speed_kmh", "highway"):
        np.testing.assert_array_equal(getattr(g, name), getattr(small_graph, name))
    assert g.meta["format_version"] == 2
    assert g.turn_bans.shape == (0, 2)
    # Turn bans travel with the artifact; a version 1 file (before turn bans) still loads, with none.
    e = int(small_graph.indptr[1])
    banned = dataclasses.replace(small_graph)
    banned.set_turn_bans([(int(np.nonzero(small_graph.head == small_graph.tail[e])[0][0]), e)])
    np.testing.assert_array_equal(RoadGraph.load(banned.save(tmp_path / "b.npz")).turn_bans, banned.turn_bans)
    v1 = dict(np.load(path))
    del v1["turn_bans"]
    v1["meta"] = np.frombuffer(b'{"format": "safecity-road-graph", "format_version": 1}', dtype=np.uint8)
    np.savez(tmp_path / "v1.npz", **v1)
    assert RoadGraph.load(tmp_path / "v1.npz").turn_bans.shape == (0, 2)
    # Another format version is refused with a clear error.
    data = dict(np.load(path))
    data["meta"] = np.frombuffer(b'{"format": "safecity-road-graph", "format_version": 99}', dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **data)
    with pytest.raises(GraphArtifactError, match="v99"):
        RoadGraph.load(tmp_path / "old.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(GraphArtifactError):
        RoadGraph.load(tmp_path / "junk.npz")


def test_geojson_export(tiny_osm: Path) -> None:
    g = import_osm(tiny_osm)
    fc = g.edges_geojson()
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == g.n_edges
    f = fc["features"][0]
    assert f["geometry"]["type"] == "LineString"
    assert f["properties"]["time_s"] > 0


def test_shanghai_import(shanghai_graph: RoadGraph) -> None:
    # PROVENANCE: 21,786 nodes; the largest strongly connected component keeps most of them.
    assert 19_000 < shanghai_graph.n_nodes < 21_786
    assert shanghai_graph.meta["kind"] == "osm"
    assert (shanghai_graph.twin() < 0).sum() > 1000  # one-way streets are kept one-way
