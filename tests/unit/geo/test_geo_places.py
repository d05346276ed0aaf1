"""PlaceTree loading, navigation and GeoJSON round trip; TagIndex semantics on a small hand-made hierarchy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from safecity.geo.places import (
    EMPTY_TAGS,
    InvalidPlace,
    Place,
    PlaceNotFound,
    PlaceTags,
    PlaceTree,
    TagIndex,
    boundary_places,
    load_places,
)


def feature(pid: str, level: str, box: tuple[float, float, float, float], parent: str | None, **props: Any) -> dict:
    """A GeoJSON feature for a box-shaped place."""
    return {
        "type": "Feature",
        "properties": {"id": pid, "level": level, "name": f"名{pid}", "parent": parent, **props},
        "geometry": shapely.geometry.mapping(shapely.box(*box)),
    }


# District 0..10 x 0..10; towns split it at x=5; communities in each town; buildings inside the communities.
SMALL = {
    "type": "FeatureCollection",
    "synthetic": True,
    "features": [
        feature("d", "district", (0, 0, 10, 10), None, name_en="District"),
        feature("t1", "town", (0, 0, 5, 10), "d"),
        feature("t2", "town", (5, 0, 10, 10), "d"),
        feature("c1", "community", (0, 0, 5, 5), "t1", households=10),
        feature("c2", "community", (0, 5, 5, 10), "t1"),
        feature("c3", "community", (5, 0, 10, 6), "t2"),
        feature("b1", "building", (1, 1, 2, 2), "c1"),
        feature("b2", "building", (6, 1, 7, 2), "c3"),
        # b3 overlaps b2: the place loaded first (b2) wins in the overlap.
        feature("b3", "building", (6.5, 1.5, 8, 3), "c3"),
    ],
}


@pytest.fixture(scope="module")
def small() -> PlaceTree:
    return PlaceTree.from_geojson(SMALL)


def test_tree_navigation(small: PlaceTree) -> None:
    assert len(small) == 9 and "b1" in small and "zz" not in small
    assert [p.id for p in small.level("town")] == ["t1", "t2"]
    assert [p.id for p in small.children("t1")] == ["c1", "c2"]
    assert small.parent("b1") is small["c1"]
    assert small.parent("d") is None
    assert [p.id for p in small.ancestors("b1")] == ["c1", "t1", "d"]
    assert small.tags_of("b1") == PlaceTags(district="d", town="t1", community="c1", building="b1")
    assert small["d"].name_en == "District" and small["c1"].attributes == {"households": 10}
    assert small.bounds == (0.0, 0.0, 10.0, 10.0)
    assert small.meta == {"synthetic": True}
    with pytest.raises(PlaceNotFound) as info:
        small["nope"]
    assert info.value.code == "geo.place_not_found"
    assert small.get("nope") is None


def test_geojson_round_trip(small: PlaceTree) -> None:
    text = json.dumps(small.to_geojson(), ensure_ascii=False)
    again = PlaceTree.from_geojson(json.loads(text))
    assert [(p.id, p.level, p.name, p.name_en, p.parent_id, dict(p.attributes)) for p in again] == [
        (p.id, p.level, p.name, p.name_en, p.parent_id, dict(p.attributes)) for p in small
    ]
    assert all(a.geometry.equals(b.geometry) for a, b in zip(again, small, strict=True))
    assert again.meta == small.meta
    only_towns = small.to_geojson(levels=["town"])
    assert [f["id"] for f in only_towns["features"]] == ["t1", "t2"]


def test_from_geojson_reads_a_file(small: PlaceTree, tmp_path: Any) -> None:
    path = tmp_path / "places.geojson"
    path.write_text(json.dumps(small.to_geojson()), encoding="utf-8")
    assert [p.id for p in PlaceTree.from_geojson(path)] == [p.id for p in small]
    with pytest.raises(InvalidPlace):
        PlaceTree.from_geojson(tmp_path / "missing.geojson")


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([feature("a", "town", (0, 0, 1, 1), None), feature("a", "town", (1, 0, 2, 1), None)], "duplicate"),
        ([feature("a", "town", (0, 0, 1, 1), "ghost")], "not in the tree"),
        ([feature("a", "town", (0, 0, 1, 1), None), feature("b", "district", (0, 0, 1, 1), "a")], "cannot sit"),
        ([feature("a", "county", (0, 0, 1, 1), None)], "level"),
        ([{"type": "Feature", "properties": {"id": "p", "level": "town"}, "geometry": None}], "geometry"),
        (
            [
                {
                    "type": "Feature",
                    "properties": {"id": "p", "level": "town"},
                    "geometry": {"type": "Point", "coordinates": [1, 2]},
                }
            ],
            "Polygon",
        ),
    ],
)
def test_invalid_trees_are_refused(features: list[dict], message: str) -> None:
    with pytest.raises(InvalidPlace, match=message) as info:
        PlaceTree.from_geojson({"type": "FeatureCollection", "features": features})
    assert info.value.code == "geo.place_invalid"


def test_not_a_feature_collection() -> None:
    with pytest.raises(InvalidPlace):
        PlaceTree.from_geojson({"type": "Feature"})


def test_invalid_polygon_is_repaired() -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}
    fc = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"id": "x", "level": "town"}, "geometry": bowtie}],
    }
    tree = PlaceTree.from_geojson(fc)
    assert tree["x"].geometry.is_valid
    assert TagIndex(tree).tag(0.5, 1.0).town == "x"
    assert TagIndex(tree).tag(1.8, 1.0).town == "x"
    assert TagIndex(tree).tag(1.0, 0.5).town is None


def test_boundary_places_flat_file() -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"adcode": 310114, "name": "嘉定区", "level": "district"},
                "geometry": shapely.geometry.mapping(shapely.box(0, 0, 1, 1)),
            },
            {
                "type": "Feature",
                "properties": {"adcode": 1, "name": "x"},
                "geometry": shapely.geometry.mapping(shapely.box(1, 0, 2, 1)),
            },
        ],
    }
    towns = boundary_places(fc, level="town", id_prefix="sh-")
    assert [(p.id, p.level, p.name, p.name_en) for p in towns] == [
        ("sh-310114", "town", "嘉定区", "Jiading"),
        ("sh-1", "town", "x", None),
    ]
    tree = PlaceTree.from_boundary_file(fc)
    assert [p.level for p in tree] == ["district", "district"]


@pytest.mark.parametrize("grid", [0, 1, 7, 256])
def test_tag_semantics(small: PlaceTree, grid: int) -> None:
    index = TagIndex(small, grid=grid)
    assert index.levels == ["district", "town", "community", "building"]
    assert index.tag(1.5, 1.5) == PlaceTags(district="d", town="t1", community="c1", building="b1")
    assert index.tag(3.0, 7.0) == PlaceTags(district="d", town="t1", community="c2")
    # Inside town t2 but outside every community: the community level is None, the point is still tagged.
    assert index.tag(8.0, 8.0) == PlaceTags(district="d", town="t2")
    # Overlap of b2 and b3: the first loaded wins; b3 alone beyond it.
    assert index.tag(6.8, 1.8).building == "b2"
    assert index.tag(7.5, 2.5).building == "b3"
    # Shared edge x=5 between t1 and t2: with "intersects" the first loaded (t1) wins.
    assert index.tag(5.0, 8.0).town == "t1"
    for outside in [(-1.0, 5.0), (11.0, 5.0), (5.0, 10.5), (math.nan, 1.0), (1.0, math.inf)]:
        assert index.tag(*outside) is EMPTY_TAGS
    lons = [1.5, 3.0, 8.0, -1.0, math.nan, 5.0]
    lats = [1.5, 7.0, 8.0, 5.0, 1.0, 8.0]
    assert index.tag_many(lons, lats) == [index.tag(x, y) for x, y in zip(lons, lats, strict=True)]
    codes = index.tag_codes(np.array(lons), np.array(lats))
    assert codes["town"].tolist() == [0, 0, 1, -1, -1, 0]


def test_within_excludes_boundaries(small: PlaceTree) -> None:
    index = TagIndex(small, predicate="within")
    assert index.tag(5.0, 8.0).town is None
    assert index.tag(10.0, 5.0) == EMPTY_TAGS
    assert index.tag(1.0, 1.5).building is None  # on b1's west edge
    assert index.tag_many([5.0, 1.0], [8.0, 1.5]) == [index.tag(5.0, 8.0), index.tag(1.0, 1.5)]
    with pytest.raises(InvalidPlace):
        TagIndex(small, predicate="touches")  # type: ignore[arg-type]


def test_tags_are_shared_and_tuple(small: PlaceTree) -> None:
    index = TagIndex(small)
    a, b = index.tag(1.5, 1.5), index.tag(1.6, 1.6)
    assert a is b
    assert a.as_tuple() == ("t1", "c1", "b1")


def test_empty_tree_tags_nothing() -> None:
    index = TagIndex(PlaceTree([]))
    assert index.tag(1.0, 1.0) is EMPTY_TAGS
    assert index.tag_many([1.0, 2.0], [1.0, 2.0]) == [EMPTY_TAGS, EMPTY_TAGS]


def test_mismatched_arrays_are_refused(small: PlaceTree) -> None:
    with pytest.raises(Exception, match="differ"):
        TagIndex(small).tag_many([1.0, 2.0], [1.0])


def test_place_checks_its_fields() -> None:
    with pytest.raises(InvalidPlace):
        Place(id="", level="town", name="x", geometry=shapely.box(0, 0, 1, 1))
    with pytest.raises(InvalidPlace):
        Place(id="x", level="town", name="x", geometry=shapely.Polygon())


def brute(tree: PlaceTree, lon: float, lat: float, predicate: str) -> PlaceTags:
    """Linear scan with plain shapely predicates: the first place of each level (load order) that holds the point."""
    point = shapely.Point(lon, lat)
    found: dict[str, str] = {}
    for place in tree:
        if place.level in found:
            continue
        hit = place.geometry.contains(point) if predicate == "within" else place.geometry.intersects(point)
        if hit:
            found[place.level] = place.id
    return PlaceTags(**found)


# Coordinates on a 0.5 grid hit edges and corners exactly; the floats hit everything else.
COORD = st.one_of(st.integers(-2, 24).map(lambda i: i / 2), st.floats(-1.0, 11.0))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(COORD, COORD), min_size=1, max_size=30),
    st.sampled_from(["intersects", "within"]),
    st.sampled_from([0, 3, 64]),
)
def test_index_agrees_with_brute_force(points: list[tuple[float, float]], predicate: str, grid: int) -> None:
    tree = PlaceTree.from_geojson(SMALL)
    index = TagIndex(tree, predicate=predicate, grid=grid)  # type: ignore[arg-type]
    expected = [brute(tree, x, y, predicate) for x, y in points]
    assert [index.tag(x, y) for x, y in points] == expected
    assert index.tag_many([p[0] for p in points], [p[1] for p in points]) == expected


def test_load_places_reads_hierarchies_and_flat_files(tmp_path: Path) -> None:
    square = {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]}
    inner = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    hierarchy = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": square,
                "properties": {"id": "d", "level": "district", "name": "嘉定区", "name_en": "Jiading"},
            },
            {
                "type": "Feature",
                "geometry": inner,
                "properties": {"id": "t", "level": "town", "name": "安亭镇", "parent": "d"},
            },
        ],
    }
    tree = load_places(hierarchy)
    assert tree.names("t") == ("嘉定区安亭镇", "安亭镇, Jiading")  # no English name: the Chinese one stands in
    assert tree.names("nope") is None
    assert TagIndex(tree).tag(0.5, 0.5) == PlaceTags(district="d", town="t")
    # A DataV-style flat file (adcode, and a `level` property of its own) is one level of places.
    flat = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": square,
                "properties": {"adcode": 310101, "name": "黄浦区", "level": "district"},
            }
        ],
    }
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(flat), encoding="utf-8")
    assert load_places(path).names("310101") == ("黄浦区", "Huangpu")
    assert load_places(path, flat_level="town")["310101"].level == "town"
