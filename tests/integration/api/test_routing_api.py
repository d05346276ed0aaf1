"""Routing over HTTP on a small synthetic network through the real app: answers equal direct RoadNetwork calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mapbox_vector_tile
import numpy as np
import pytest
from fastapi import FastAPI

from safecity.geo.gcj02 import wgs84_to_gcj02
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.synthetic import synthetic_network
from safecity.geo.road.tiles import tile_range
from safecity.sharing.keys import Role

ROADS = {"synthetic": True, "synthetic_nodes": 2_500, "max_matrix_cells": 400}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def direct() -> Iterator[RoadNetwork]:
    """The network the app builds from ROADS, queried directly."""
    yield RoadNetwork(synthetic_network(2_500, center=(121.25, 31.37), spacing_m=165.0))


@pytest.fixture
async def routed(app_factory, sqlite_url: str, key_headers) -> tuple[FastAPI, httpx.AsyncClient, dict[str, str]]:
    """An app with the synthetic road network and a dispatcher key."""
    app, client = await app_factory(sqlite_url, roads=ROADS)
    return app, client, await key_headers(app, Role.DISPATCHER)


def _pts(net: RoadNetwork, n: int, seed: int) -> list[list[float]]:
    nodes = np.random.default_rng(seed).choice(net.graph.n_nodes, n, replace=False)
    return [[float(net.graph.lon[i]) + 2e-5, float(net.graph.lat[i]) - 1e-5] for i in nodes]


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


async def test_route_nearest_matrix_equal_direct(routed, direct: RoadNetwork) -> None:
    _, client, h = routed
    p = _pts(direct, 12, seed=5)
    r = await client.post("/api/v1/routing/route", json={"from": p[0], "to": p[1]}, headers=h)
    assert r.status_code == 200, r.text
    want = direct.travel_time(tuple(p[0]), tuple(p[1]))  # type: ignore[arg-type]
    assert r.json()["seconds"] == pytest.approx(want.seconds, abs=1e-3)
    assert r.json()["meters"] == pytest.approx(want.meters, abs=0.1)
    assert r.json()["geometry"]["type"] == "LineString"
    assert r.json()["geometry"]["coordinates"][0] == pytest.approx(list(want.coordinates[0]))
    bare = await client.post("/api/v1/routing/route", json={"from": p[0], "to": p[1], "geometry": False}, headers=h)
    assert bare.json()["geometry"] is None
    assert bare.json()["meters"] == r.json()["meters"] > 0  # the distance does not depend on asking for the line

    units = [{"id": f"car-{i}", "lon": q[0], "lat": q[1]} for i, q in enumerate(p[2:10])]
    r = await client.post(
        "/api/v1/routing/nearest", json={"point": p[10], "units": units, "k": 3, "paths": True}, headers=h
    )
    assert r.status_code == 200, r.text
    got = r.json()["units"]
    expected = direct.nearest_units(tuple(p[10]), {u["id"]: (u["lon"], u["lat"]) for u in units}, 3)  # type: ignore[arg-type]
    assert [u["unit_id"] for u in got] == [e.unit_id for e in expected]
    assert [u["seconds"] for u in got] == pytest.approx([e.seconds for e in expected], abs=1e-3)
    assert [u["rank"] for u in got] == [1, 2, 3] and got[0]["geometry"]["type"] == "LineString"

    r = await client.post("/api/v1/routing/matrix", json={"origins": p[:3], "targets": p[3:8]}, headers=h)
    assert r.status_code == 200, r.text
    m = direct.matrix([tuple(q) for q in p[:3]], [tuple(q) for q in p[3:8]])  # type: ignore[misc]
    np.testing.assert_allclose(np.array(r.json()["seconds"], dtype=float), m, atol=1e-3)


async def test_isochrone_coverage_equal_direct(routed, direct: RoadNetwork) -> None:
    _, client, h = routed
    p = _pts(direct, 6, seed=6)
    want = [len(i.node_ids) for i in direct.isochrones(tuple(p[0]), [2, 4])]  # type: ignore[arg-type]
    r = await client.post("/api/v1/routing/isochrone", json={"point": p[0], "minutes": [2, 4]}, headers=h)
    assert r.status_code == 200, r.text
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert [f["properties"]["nodes"] for f in fc["features"]] == want
    assert fc["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    g = await client.get(
        "/api/v1/routing/isochrone", params={"lon": p[0][0], "lat": p[0][1], "minutes": [2, 4]}, headers=h
    )
    assert [f["properties"]["nodes"] for f in g.json()["features"]] == want
    default = await client.get("/api/v1/routing/isochrone", params={"lon": p[0][0], "lat": p[0][1]}, headers=h)
    assert [f["properties"]["minutes"] for f in default.json()["features"]] == [5, 10, 15]

    units = [{"id": f"u{i}", "lon": q[0], "lat": q[1]} for i, q in enumerate(p[1:])]
    r = await client.post("/api/v1/routing/coverage", json={"units": units, "geojson": True}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["counts"] == direct.coverage({u["id"]: (u["lon"], u["lat"]) for u in units}).counts()
    assert sum(body["counts"].values()) + body["uncovered"] == body["nodes"] == direct.graph.n_nodes
    assert {f["properties"]["unit_id"] for f in body["geojson"]["features"]} == {u["id"] for u in units}


async def test_conditions_close_a_road_and_clear(routed, direct: RoadNetwork) -> None:
    app, client, h = routed
    p = _pts(direct, 2, seed=7)
    before = (await client.post("/api/v1/routing/route", json={"from": p[0], "to": p[1]}, headers=h)).json()
    # Close the road the origin stands on: with both directions closed the origin cannot leave.
    r = await client.put("/api/v1/routing/conditions", json={"close": [{"point": p[0]}]}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["closed_edges"] == len(r.json()["changed"]["close"]) >= 1
    blocked = await client.post("/api/v1/routing/route", json={"from": p[0], "to": p[1]}, headers=h)
    _problem(blocked, 404, "road.unreachable")
    slow = await client.put(
        "/api/v1/routing/conditions", json={"speed": [{"edges": [0, 1, 2], "factor": 0.5}]}, headers=h
    )
    assert slow.json()["slowed_edges"] >= 3
    cleared = await client.delete("/api/v1/routing/conditions", headers=h)
    assert (cleared.json()["closed_edges"], cleared.json()["slowed_edges"]) == (0, 0)
    after = (await client.post("/api/v1/routing/route", json={"from": p[0], "to": p[1]}, headers=h)).json()
    assert after["seconds"] == pytest.approx(before["seconds"])
    bad = await client.put("/api/v1/routing/conditions", json={"close": [{"edges": [10**9]}]}, headers=h)
    _problem(bad, 422, "invalid_input")
    both = await client.put("/api/v1/routing/conditions", json={"close": [{"edges": [1], "point": p[0]}]}, headers=h)
    _problem(both, 422, "invalid_input")
    reader = await client.put("/api/v1/routing/conditions", json={}, headers=await _key(app, Role.READER))
    _problem(reader, 403, "auth.forbidden")


async def _key(app: FastAPI, role: Role) -> dict[str, str]:
    created = await app.state.runtime.keys.create(f"test {role}", role)
    return {"X-API-Key": created.key}


async def test_bad_input_and_off_network_are_problems(routed, direct: RoadNetwork) -> None:
    _, client, h = routed
    p = _pts(direct, 2, seed=8)
    far = [100.0, 10.0]
    _problem(
        await client.post("/api/v1/routing/route", json={"from": far, "to": p[1]}, headers=h), 422, "road.snap_too_far"
    )
    _problem(
        await client.post("/api/v1/routing/route", json={"from": [200, 31], "to": p[1]}, headers=h),
        422,
        "invalid_input",
    )
    _problem(await client.post("/api/v1/routing/route", json={"from": p[0]}, headers=h), 422, "invalid_input")
    big = {"origins": [p[0]] * 30, "targets": [p[1]] * 30}
    _problem(await client.post("/api/v1/routing/matrix", json=big, headers=h), 422, "road.matrix_too_large")
    # A unit off the map does not fail the ranking: it is listed as unroutable with its reason.
    mixed = {"point": p[0], "units": [{"id": "a", "lon": p[1][0], "lat": p[1][1]}, {"id": "b", "lon": 100, "lat": 10}]}
    r = await client.post("/api/v1/routing/nearest", json=mixed, headers=h)
    assert r.status_code == 200, r.text
    assert [u["unit_id"] for u in r.json()["units"]] == ["a"] and r.json()["units"][0]["snap_m"] >= 0
    assert [(u["unit_id"], u["code"]) for u in r.json()["unroutable"]] == [("b", "road.off_map")]
    dup = {"point": p[0], "units": [{"id": "a", "lon": p[1][0], "lat": p[1][1]}] * 2}
    _problem(await client.post("/api/v1/routing/nearest", json=dup, headers=h), 422, "invalid_input")
    _problem(
        await client.post("/api/v1/routing/isochrone", json={"point": p[0], "minutes": [0]}, headers=h),
        422,
        "invalid_input",
    )
    _problem(
        await client.get("/api/v1/routing/edges.geojson", params={"bbox": "1,2,3"}, headers=h), 422, "invalid_input"
    )
    edges = await client.get(
        "/api/v1/routing/edges.geojson", params={"bbox": "121.24,31.36,121.26,31.38", "limit": 50}, headers=h
    )
    assert edges.status_code == 200 and 0 < len(edges.json()["features"]) <= 50


async def test_gcj02_points_give_the_same_route(routed, direct: RoadNetwork) -> None:
    _, client, h = routed
    p = _pts(direct, 2, seed=9)
    wgs = (await client.post("/api/v1/routing/route", json={"from": p[0], "to": p[1]}, headers=h)).json()
    g0, g1 = wgs84_to_gcj02(*p[0]), wgs84_to_gcj02(*p[1])
    r = await client.post("/api/v1/routing/route", json={"from": g0, "to": g1, "crs": "gcj02"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["seconds"] == pytest.approx(wgs["seconds"], abs=1e-3)
    start = r.json()["geometry"]["coordinates"][0]
    assert start == pytest.approx(list(wgs84_to_gcj02(*wgs["geometry"]["coordinates"][0])), abs=1e-7)


async def test_no_graph_is_503(app_client, key_headers) -> None:
    app, client = app_client
    h = await key_headers(app, Role.OPERATOR)
    body = _problem(
        await client.post("/api/v1/routing/route", json={"from": [121.2, 31.3], "to": [121.3, 31.4]}, headers=h),
        503,
        "road.not_loaded",
    )
    assert "import-osm" in body["detail"]
    _problem(await client.get("/tiles/roads/10/0/0.mvt", headers=h), 404, "road.tiles_not_loaded")


async def test_query_roles(routed, direct: RoadNetwork) -> None:
    app, client, _ = routed
    p = _pts(direct, 2, seed=10)
    for role, status in ((Role.OPERATOR, 200), (Role.ADMIN, 200), (Role.READER, 403), (Role.CITIZEN, 403)):
        r = await client.post("/api/v1/routing/route", json={"from": p[0], "to": p[1]}, headers=await _key(app, role))
        assert r.status_code == status, role


async def test_tiles_are_served(routed, tmp_path: Path) -> None:
    app, client, _ = routed
    service = app.state.runtime.roads
    await service.ensure_tiles(tmp_path / "roads.mbtiles", min_zoom=12, max_zoom=14)
    h = await _key(app, Role.RESPONDER)  # any role may read tiles
    x0, y0, x1, y1 = tile_range(service.network.graph.bbox(), 14)
    x, y = (x0 + x1) // 2, (y0 + y1) // 2
    r = await client.get(f"/tiles/roads/14/{x}/{y}.mvt", headers=h)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    assert r.headers["content-encoding"] == "gzip"
    decoded = mapbox_vector_tile.decode(r.content)  # httpx undid the gzip encoding
    assert decoded["roads"]["features"]
    assert (await client.get("/tiles/roads/14/0/0.mvt", headers=h)).status_code == 204
    _problem(await client.get("/tiles/roads/2/9/0.mvt", headers=h), 422, "invalid_input")
    tj = await client.get("/tiles/roads.json", headers=h)
    assert tj.status_code == 200
    doc = tj.json()
    assert doc["tilejson"] == "3.0.0" and doc["tiles"][0].endswith("/tiles/roads/{z}/{x}/{y}.mvt")
    assert (doc["minzoom"], doc["maxzoom"]) == (12, 14) and doc["vector_layers"][0]["id"] == "roads"
    assert (await client.get("/tiles/roads.json")).status_code == 401
