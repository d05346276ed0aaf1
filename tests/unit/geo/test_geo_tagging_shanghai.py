"""Tagging real data: the 565 OSM traffic signals of the Jiading area against the 16 real Shanghai districts."""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from safecity.geo.places import EMPTY_TAGS, Place, PlaceTags, PlaceTree, TagIndex, boundary_places

JIADING = "310114"


@lru_cache(maxsize=2)
def districts(folder: Path) -> tuple[PlaceTree, TagIndex]:
    """The real districts (WGS84 copy) and an index over them."""
    tree = PlaceTree.from_boundary_file(folder / "shanghai_boundaries" / "shanghai_districts_310000_wgs84.json")
    return tree, TagIndex(tree)


def signals(folder: Path) -> np.ndarray:
    """The (lon, lat) of every traffic signal, in file order."""
    fc = json.loads((folder / "osm_shanghai" / "jiading_area_traffic_signals.geojson").read_text(encoding="utf-8"))
    assert all(f["geometry"]["type"] == "Point" for f in fc["features"])
    return np.array([f["geometry"]["coordinates"] for f in fc["features"]], dtype=float)


def brute_district(tree: PlaceTree, lon: float, lat: float) -> str | None:
    """Plain shapely: the first district (file order) whose polygon contains or touches the point."""
    point = shapely.Point(lon, lat)
    hits = [p.id for p in tree if p.geometry.intersects(point)]
    return hits[0] if hits else None


def test_sixteen_districts_load(shared_data: Path) -> None:
    tree, index = districts(shared_data)
    assert len(tree) == 16 and index.levels == ["district"]
    jiading = tree[JIADING]
    assert (jiading.name, jiading.name_en, jiading.level, jiading.parent_id) == ("嘉定区", "Jiading", "district", None)
    assert jiading.attributes["adcode"] == 310114
    assert all(p.geometry.is_valid for p in tree)


def test_signals_agree_with_brute_force(shared_data: Path) -> None:
    tree, index = districts(shared_data)
    xy = signals(shared_data)
    assert xy.shape == (565, 2)
    expected = [brute_district(tree, x, y) for x, y in xy]
    tagged = index.tag_many(xy[:, 0], xy[:, 1])
    assert len(tagged) == 565  # nothing dropped
    assert [t.district for t in tagged] == expected
    assert [index.tag(float(x), float(y)).district for x, y in xy] == expected
    assert all(t.town is None and t.community is None and t.building is None for t in tagged)
    counts = Counter(tree[d].name if d else None for d in expected)
    # PROVENANCE.md: 301 of the 565 signals lie in Jiading; the rest in neighbouring districts or outside Shanghai
    # (the Kunshan edge, Jiangsu), which must come back as None, not disappear.
    assert counts["嘉定区"] == 301
    assert counts.most_common(1)[0][0] == "嘉定区"
    assert set(counts) <= {"嘉定区", "闵行区", "普陀区", "青浦区", "长宁区", "宝山区", None}
    assert counts[None] > 0
    assert sum(counts.values()) == 565


def test_sea_and_far_points_get_none(shared_data: Path) -> None:
    _, index = districts(shared_data)
    # East China Sea off Pudong, the Yangtze estuary north of Chongming's east tip, Kunshan (Jiangsu), Beijing.
    for lon, lat in [(122.6, 31.0), (122.3, 31.75), (120.95, 31.38), (116.4, 39.9)]:
        assert index.tag(lon, lat) is EMPTY_TAGS
    assert index.tag(121.2458942, 31.385487) == PlaceTags(district=JIADING)  # DataV's Jiading "center"


def test_loaded_as_towns(shared_data: Path) -> None:
    """A flat file loads at the level the caller asks for, under a given parent."""
    folder = shared_data / "shanghai_boundaries"
    city = Place(id="sh", level="district", name="上海市", geometry=shapely.box(120.8, 30.6, 122.3, 31.9))
    tree = PlaceTree(
        [city, *boundary_places(folder / "shanghai_districts_310000_wgs84.json", level="town", parent_id="sh")]
    )
    assert tree.tags_of(JIADING) == PlaceTags(district="sh", town=JIADING)
    tags = TagIndex(tree).tag(121.2458942, 31.385487)
    assert tags == PlaceTags(district="sh", town=JIADING)


def test_high_resolution_jiading_agrees_closely(shared_data: Path) -> None:
    """The 1,070-vertex Jiading outline and the 358-vertex one put the same 301 signals in Jiading."""
    alone = TagIndex(PlaceTree.from_boundary_file(shared_data / "shanghai_boundaries" / "jiading_310114_wgs84.json"))
    xy = signals(shared_data)
    fine = sum(t.district == JIADING for t in alone.tag_many(xy[:, 0], xy[:, 1]))
    assert fine == 301


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(120.8, 122.3), st.floats(30.6, 31.95)), min_size=1, max_size=40))
def test_random_points_agree_with_brute_force(shared_data: Path, points: list[tuple[float, float]]) -> None:
    tree, index = districts(shared_data)
    expected = [brute_district(tree, x, y) for x, y in points]
    assert [index.tag(x, y).district for x, y in points] == expected
    assert [t.district for t in index.tag_many([p[0] for p in points], [p[1] for p in points])] == expected
