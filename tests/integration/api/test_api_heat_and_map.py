"""The command centre's server-side layers: the event heat grid and the places base map, with roles and validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from tests.integration.api.conftest import AppFactory, HeadersFactory

from safecity.sharing.keys import Role


async def test_heat_counts_events_per_cell(db_url: str, app_factory: AppFactory, key_headers: HeadersFactory) -> None:
    app, client = await app_factory(db_url)
    headers = await key_headers(app, Role.READER)
    runtime = app.state.runtime
    await runtime.devices.upsert_many(
        [
            {"id": "smoke-1", "kind": "generic", "lon": 121.2501, "lat": 31.3801},
            {"id": "smoke-2", "kind": "generic", "lon": 121.2502, "lat": 31.3802},
            {"id": "smoke-3", "kind": "generic", "lon": 121.3101, "lat": 31.3101},
        ]
    )
    now = datetime.now(UTC)
    lines = [
        {"device": d, "kind": "generic", "ts": (now - timedelta(seconds=i)).isoformat(), "value": 1.0, "id": f"m{i}"}
        for i, d in enumerate(["smoke-1", "smoke-2", "smoke-1", "smoke-3"])
    ]
    ingest_headers = await key_headers(app, Role.INGEST)
    body = b"\n".join(orjson.dumps(line) for line in lines)
    sent = await client.post(
        "/api/v1/ingest/batch?format=generic",
        content=body,
        headers={**ingest_headers, "Content-Type": "application/x-ndjson"},
    )
    assert sent.status_code < 300, sent.text
    await runtime.bus.drain()
    await runtime.writer.flush()
    answer = await client.get("/api/v1/events/heat", params={"cell_deg": 0.01}, headers=headers)
    assert answer.status_code == 200, answer.text
    heat = answer.json()
    assert heat["total"] == 4
    assert [c["count"] for c in heat["cells"]] == [3, 1]
    busiest = heat["cells"][0]
    assert busiest["west"] <= 121.2501 < busiest["west"] + 0.01
    assert busiest["south"] <= 31.3801 < busiest["south"] + 0.01


async def test_heat_refuses_bad_windows_and_anonymous(
    app_factory: AppFactory, sqlite_url: str, key_headers: HeadersFactory
) -> None:
    app, client = await app_factory(sqlite_url)
    headers = await key_headers(app, Role.READER)
    now = datetime.now(UTC)
    backwards = {"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()}
    refused = await client.get("/api/v1/events/heat", params=backwards, headers=headers)
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    tiny = await client.get("/api/v1/events/heat", params={"cell_deg": 0}, headers=headers)
    assert tiny.status_code == 422
    assert (await client.get("/api/v1/events/heat")).status_code == 401


async def test_places_map_is_geojson_by_level(
    app_factory: AppFactory, sqlite_url: str, key_headers: HeadersFactory, tmp_path: object
) -> None:
    from safecity.sim.district import build_district

    district = build_district()
    path = tmp_path / "places.geojson"  # type: ignore[operator]
    path.write_bytes(orjson.dumps(district.places.to_geojson()))
    app, client = await app_factory(sqlite_url, places={"boundaries": str(path)})
    headers = await key_headers(app, Role.READER)
    towns = await client.get("/api/v1/places/map.geojson", params={"level": "town"}, headers=headers)
    assert towns.status_code == 200
    assert towns.headers["content-type"] == "application/geo+json"
    doc = towns.json()
    assert doc["type"] == "FeatureCollection"
    assert {f["properties"]["level"] for f in doc["features"]} == {"town"}
    assert all(f["properties"]["name"] and f["properties"]["name_en"] for f in doc["features"])
    both = await client.get(
        "/api/v1/places/map.geojson", params=[("level", "community"), ("level", "building")], headers=headers
    )
    assert {f["properties"]["level"] for f in both.json()["features"]} == {"community", "building"}
    assert (
        await client.get("/api/v1/places/map.geojson", params={"level": "planet"}, headers=headers)
    ).status_code == 422
