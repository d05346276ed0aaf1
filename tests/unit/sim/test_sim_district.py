"""The synthetic district: deterministic, the right counts, consistent geometry, and every device tags home."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache

import pytest
import shapely
from shapely.strtree import STRtree

from safecity.geo.places import PlaceTree
from safecity.sensing.model import DeviceKind, DeviceStatus
from safecity.sim import SYNTHETIC_LABEL, SyntheticDistrict, build_district, device_topic
from safecity.store.tables import devices as devices_table


@lru_cache(maxsize=1)
def default() -> SyntheticDistrict:
    return build_district()


def snapshot(d: SyntheticDistrict) -> str:
    """Everything the build produced, as one comparable string."""
    places = [(p.id, p.level, p.name, p.name_en, p.parent_id, dict(p.attributes), p.geometry.wkt) for p in d.places]
    stations = [(s.id, s.name, s.town, s.lon, s.lat) for s in d.stations]
    return json.dumps([places, stations, d.devices], ensure_ascii=False, sort_keys=True)


def test_same_seed_same_district() -> None:
    assert snapshot(build_district(seed=7)) == snapshot(default())
    assert snapshot(build_district(seed=8)) != snapshot(default())


def test_default_counts() -> None:
    d = default()
    levels = Counter(p.level for p in d.places)
    assert levels["district"] == 1 and levels["town"] == 12 and levels["community"] == 300
    per_community = Counter(p.parent_id for p in d.places.level("building"))
    assert len(per_community) == 300
    assert min(per_community.values()) >= 3 and max(per_community.values()) <= 8
    assert len(d.stations) == 18 and len({s.id for s in d.stations}) == 18
    assert len(d.devices) == 5000
    kinds = Counter(dev["kind"] for dev in d.devices)
    assert set(kinds) == {k.value for k in DeviceKind if k is not DeviceKind.HEARTBEAT}  # sensors, no gateways
    assert kinds["smoke"] > kinds["checkpoint"]


def test_ids_are_ascii_and_fit_mqtt_topics() -> None:
    d = default()
    towns = {p.id for p in d.places.level("town")}
    for c in d.places.level("community"):
        assert re.fullmatch(r"jd-t\d{2}-c\d{3}", c.id), c.id
        assert c.parent_id in towns
    ids = [dev["id"] for dev in d.devices]
    assert len(set(ids)) == len(ids)
    for dev in d.devices:
        assert re.fullmatch(rf"{re.escape(dev['community'])}-{dev['kind']}-\d{{3}}", dev["id"]), dev["id"]
        topic = device_topic(dev)
        assert topic == f"safecity/{dev['community']}/{dev['kind']}/{dev['id']}"
        assert topic.isascii() and not set("+# ") & set(topic) and topic.count("/") == 3


def test_device_rows_match_the_devices_table() -> None:
    d = default()
    columns = {c.name for c in devices_table.columns} - {"last_seen", "created_at", "updated_at"}
    statuses = {s.value for s in DeviceStatus}
    for dev in d.devices:
        assert set(dev) == columns
        assert dev["status"] in statuses and dev["offline_after_s"] > 0
        assert dev["name"] and dev["owner"] and dev["town"] and dev["community"]
        assert dev["attributes"]["synthetic"] is True
        assert dev["community"] in d.places and d.places[dev["community"]].parent_id == dev["town"]
        if dev["building"] is not None:
            assert d.places[dev["building"]].parent_id == dev["community"]
        if dev["kind"] in ("smoke", "door"):
            assert dev["building"] is not None
        if dev["kind"] in ("parking", "checkpoint", "crowd"):
            assert dev["building"] is None
    assert json.loads(json.dumps(d.devices)) == d.devices


def test_every_device_tags_into_its_own_places() -> None:
    d = default()
    index = d.tag_index()
    assert d.tag_index() is index
    for dev in d.devices:
        tags = index.tag(dev["lon"], dev["lat"])
        assert (tags.district, tags.town, tags.community, tags.building) == (
            "jd",
            dev["town"],
            dev["community"],
            dev["building"],
        ), dev["id"]
    bulk = index.tag_many([dev["lon"] for dev in d.devices], [dev["lat"] for dev in d.devices])
    assert [t.as_tuple() for t in bulk] == [(dev["town"], dev["community"], dev["building"]) for dev in d.devices]


def test_stations_sit_in_their_town() -> None:
    d = default()
    index = d.tag_index()
    assert Counter(s.town for s in d.stations).most_common(1)[0][1] == 2
    assert len({s.town for s in d.stations}) == 12
    for s in d.stations:
        assert index.tag(s.lon, s.lat).town == s.town
        assert s.name.endswith("派出所")


def test_geometry_nests_and_tiles() -> None:
    d = default()
    district = d.places["jd"].geometry
    assert district.centroid.x == pytest.approx(121.25) and district.centroid.y == pytest.approx(31.37)
    for level in ("town", "community", "building"):
        geoms = [p.geometry for p in d.places.level(level)]
        for p in d.places.level(level):
            assert p.geometry.covered_by(d.places[p.parent_id].geometry), p.id
        # No two places of one level overlap (shared edges are fine).
        tree = STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        pairs = left < right
        overlap = shapely.area(shapely.intersection([geoms[i] for i in left[pairs]], [geoms[j] for j in right[pairs]]))
        assert float(overlap.sum()) == pytest.approx(0.0, abs=1e-15)
    # Towns cover the district exactly, and communities cover each town.
    assert sum(p.geometry.area for p in d.places.level("town")) == pytest.approx(district.area, rel=1e-12)
    for town in d.places.level("town"):
        assert sum(c.geometry.area for c in d.places.children(town.id)) == pytest.approx(town.geometry.area, rel=1e-12)


def test_everything_is_labelled_synthetic() -> None:
    d = default()
    fc = d.to_geojson(devices=True)
    assert fc["synthetic"] is True and fc["label"] == SYNTHETIC_LABEL
    assert "合成" in d.places["jd"].name
    layers = Counter(f["properties"]["layer"] for f in fc["features"])
    assert layers == {"place": len(d.places), "station": 18, "device": 5000}
    assert all(f["properties"]["synthetic"] is True for f in fc["features"])
    json.dumps(fc, ensure_ascii=False)
    again = PlaceTree.from_geojson(d.places.to_geojson())
    assert [p.id for p in again] == [p.id for p in d.places]


def test_other_sizes() -> None:
    d = build_district(seed=1, towns=5, communities=37, devices=7)
    assert len(d.places.level("town")) == 5 and len(d.places.level("community")) == 37
    assert sorted(dev["kind"] for dev in d.devices) == sorted(
        k.value for k in DeviceKind if k is not DeviceKind.HEARTBEAT
    )
    assert len(d.stations) == 18 and Counter(s.town for s in d.stations).most_common(1)[0][1] == 4
    assert "练川第四派出所" in {s.name for s in d.stations}
    assert len(build_district(seed=1, towns=5, communities=37, devices=0, stations=3).stations) == 3
    big = build_district(seed=2, towns=14, communities=420, devices=300)
    assert len(big.places.level("town")) == 14 and len({p.name for p in big.places.level("town")}) == 14
    index = big.tag_index()
    assert all(index.tag(dev["lon"], dev["lat"]).building == dev["building"] for dev in big.devices)
    with pytest.raises(ValueError):
        build_district(towns=10, communities=5)
