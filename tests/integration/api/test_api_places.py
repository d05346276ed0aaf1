"""Places from the real Shanghai district file (../shared/data): tags at every level, names in alerts, CAP and API."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from tests.integration.warning.notify_helpers import wait_for

from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sharing.keys import Role
from safecity.sim.district import build_district
from safecity.warning import cap

BUND = (121.4856, 31.2438)  # a node of 中山东一路 (the Bund) in the OSM extract: in 黄浦区 (adcode 310101)
JIADING = (121.2500, 31.3800)


@pytest.fixture
def boundaries(shared_data: Path) -> Path:
    """The 16 Shanghai districts, WGS84 (lines up with OSM)."""
    return shared_data / "shanghai_boundaries" / "shanghai_districts_310000_wgs84.json"


async def _alert(runtime: Runtime, rule_id: str) -> object:
    async def raised() -> bool:
        return any(a.rule_id == rule_id for a in (await runtime.alerts.list()).items)

    await wait_for(raised, 20)
    return next(a for a in (await runtime.alerts.list()).items if a.rule_id == rule_id)


async def test_district_boundaries_tag_events_and_name_alerts(sqlite_url: str, boundaries: Path) -> None:
    settings = Settings(database={"url": sqlite_url}, log_json=False, places={"boundaries": boundaries})
    runtime = Runtime(settings)
    await runtime.start()
    try:
        assert runtime.places is not None and len(runtime.places) == 16
        registered = {"id": "bund-2", "kind": "door", "community": "c-7", "lon": BUND[0], "lat": BUND[1]}
        await runtime.devices.upsert_many(
            [{"id": "bund-1", "kind": "smoke", "lon": BUND[0], "lat": BUND[1]}, registered]
        )
        payload = orjson.dumps({"id": "m1", "ts": time.time(), "alarm": True})
        await runtime.mqtt_route("safecity/bund/smoke/bund-1", payload)
        await runtime.mqtt_route("safecity/c-7/door/bund-2", orjson.dumps({"ts": time.time(), "open": True}))
        alert = await _alert(runtime, "fire.smoke_alarm")
        assert alert.area["description"] == "黄浦区"  # type: ignore[attr-defined]
        assert alert.area["description_en"] == "Huangpu"  # type: ignore[attr-defined]
        xml = cap.render_xml(await runtime.alerts.cap_of(alert.id))  # type: ignore[attr-defined]
        assert b"<areaDesc>\xe9\xbb\x84\xe6\xb5\xa6\xe5\x8c\xba</areaDesc>" in xml  # 黄浦区
        assert b"<areaDesc>Huangpu</areaDesc>" in xml
        assert b"310101" not in xml

        async def stored() -> bool:
            return len(await runtime.events.list(district="310101")) == 2

        await wait_for(stored, 20)
        by_device = {e["device_id"]: e for e in await runtime.events.list(district="310101")}
        assert (by_device["bund-1"]["district"], by_device["bund-1"]["town"]) == ("310101", None)
        # A registered community keeps its place; the position adds the district the registry does not give.
        assert (by_device["bund-2"]["district"], by_device["bund-2"]["community"]) == ("310101", "c-7")
    finally:
        await runtime.stop()


async def test_synthetic_place_ids_become_names_in_cap(sqlite_url: str) -> None:
    district = build_district(devices=0)
    building = district.places.level("building")[0]
    settings = Settings(database={"url": sqlite_url}, log_json=False)
    runtime = Runtime(settings, tagger=district.tag_index())
    await runtime.start()
    try:
        lon, lat = building.geometry.representative_point().coords[0]
        device = {"id": "d1", "kind": "smoke", "building": building.id, "lon": lon, "lat": lat}
        device |= {"community": building.parent_id}
        await runtime.devices.upsert_many([device])
        await runtime.mqtt_route(
            f"safecity/{building.parent_id}/smoke/d1", orjson.dumps({"ts": time.time(), "alarm": True})
        )
        alert = await _alert(runtime, "fire.smoke_alarm")
        zh, en = district.places.names(building.id)  # type: ignore[misc]
        assert alert.area["description"] == zh and zh.endswith(building.name)  # type: ignore[attr-defined]
        xml = cap.render_xml(await runtime.alerts.cap_of(alert.id))  # type: ignore[attr-defined]
        assert f"<areaDesc>{zh}</areaDesc>".encode() in xml
        assert f"<areaDesc>{en}</areaDesc>".encode() in xml
        assert building.id.encode() not in xml.split(b"<area>")[1]
    finally:
        await runtime.stop()


async def test_places_api(app_factory, sqlite_url: str, boundaries: Path, key_headers) -> None:
    app, client = await app_factory(sqlite_url, places={"boundaries": boundaries})
    headers = await key_headers(app, Role.READER)
    listed = (await client.get("/api/v1/places", headers=headers)).json()
    assert listed["total"] == 16
    assert {p["name"] for p in listed["items"]} >= {"黄浦区", "嘉定区", "浦东新区"}
    jiading = (await client.get("/api/v1/places/310114", headers=headers)).json()
    assert (jiading["level"], jiading["name"], jiading["name_en"]) == ("district", "嘉定区", "Jiading")
    assert jiading["full_name"] == {"zh": "嘉定区", "en": "Jiading"}
    assert jiading["geometry"]["type"] == "MultiPolygon"
    bund = (await client.get(f"/api/v1/places/resolve?lon={BUND[0]}&lat={BUND[1]}", headers=headers)).json()
    assert bund["district"]["id"] == "310101" and bund["district"]["name_en"] == "Huangpu"
    assert bund["town"] is None
    inland = await client.get(f"/api/v1/places/resolve?lon={JIADING[0]}&lat={JIADING[1]}", headers=headers)
    assert inland.json()["district"]["name"] == "嘉定区"
    sea = (await client.get("/api/v1/places/resolve?lon=123.5&lat=30.5", headers=headers)).json()
    assert sea["district"] is None
    missing = await client.get("/api/v1/places/nope", headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "geo.place_not_found")
    assert (await client.get("/api/v1/places?level=town", headers=headers)).json()["total"] == 0
    bad = await client.get("/api/v1/places/resolve?lon=200&lat=31", headers=headers)
    assert bad.status_code == 422


async def test_places_api_without_boundaries(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    headers = await key_headers(app, Role.READER)
    assert (await client.get("/api/v1/places", headers=headers)).json()["total"] == 0
    resolved = (await client.get(f"/api/v1/places/resolve?lon={BUND[0]}&lat={BUND[1]}", headers=headers)).json()
    assert resolved["district"] is None and resolved["town"] is None
    assert (await client.get("/api/v1/places/310101", headers=headers)).status_code == 404
