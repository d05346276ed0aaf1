"""The incidents API on a real node (SQLite and PostgreSQL, synthetic roads): calls opened by operators, responders
imported with line-numbered errors, positions checked, a ranked list by road time, one winner when two dispatchers
send one unit, refusals as problem documents, community task links, exports and KPIs."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI
from tests.integration.api.conftest import AppFactory, HeadersFactory

from safecity.sharing.keys import Role

ROADS = {"synthetic": True, "synthetic_nodes": 2_500, "synthetic_center": (121.25, 31.37)}
RESPONDERS_CSV = (
    "id,kind,unit_type,station,capabilities,lon,lat\n"
    "car-1,police,car,anting-ps,patrol;fire,121.252,31.372\n"
    "car-2,police,car,anting-ps,patrol;fire,121.27,31.39\n"
    "bike-9,police,bicycle,anting-ps,patrol,121.25,31.37\n"  # line 4: no such unit type
    "guard-1,community,guard,,first_aid,121.2505,31.3705\n"
)


async def node(app_factory: AppFactory, db_url: str) -> tuple[FastAPI, httpx.AsyncClient]:
    return await app_factory(db_url, roads=ROADS)


async def test_a_call_is_opened_ranked_dispatched_and_exported(
    db_url: str, app_factory: AppFactory, key_headers: HeadersFactory
) -> None:
    app, client = await node(app_factory, db_url)
    operator = await key_headers(app, Role.OPERATOR)
    dispatcher = await key_headers(app, Role.DISPATCHER)

    imported = await client.post(
        "/api/v1/responders/import", content=RESPONDERS_CSV, headers={**operator, "Content-Type": "text/csv"}
    )
    assert imported.status_code == 200, imported.text
    report = imported.json()
    assert (report["created"], [e["line"] for e in report["errors"]]) == (3, [4])

    opened = await client.post(
        "/api/v1/incidents",
        json={"type": "fire", "lon": 121.251, "lat": 31.371, "summary": "smoke", "caller": "13800138000"},
        headers=operator,
    )
    assert opened.status_code == 201, opened.text
    incident = opened.json()["incident"]
    assert incident["stage"] == "triaged" and incident["priority"] == 1
    assert incident["caller"] and "13800138000" not in opened.text
    assert opened.headers["location"] == f"/api/v1/incidents/{incident['id']}"

    ranked = await client.get(f"/api/v1/incidents/{incident['id']}/recommendation", headers=dispatcher)
    assert ranked.status_code == 200, ranked.text
    lines = ranked.json()
    assert [r["id"] for r in lines if r["eligible"]] == ["car-1", "car-2"]
    assert lines[0]["route"] and lines[0]["eta_s"] < lines[1]["eta_s"]
    assert {r["id"]: r["reasons"] for r in lines}["guard-1"] == ["lacks_fire"]

    sent = await client.post(f"/api/v1/incidents/{incident['id']}/dispatch", headers=dispatcher)
    assert sent.status_code == 200, sent.text
    assert (sent.json()["stage"], sent.json()["unit_id"]) == ("dispatched", "car-1")

    detail = (await client.get(f"/api/v1/incidents/{incident['id']}", headers=dispatcher)).json()
    assert [s["action"] for s in detail["history"]] == ["open", "triage", "dispatch"]
    assert detail["assignments"][0]["responder_id"] == "car-1" and detail["assignments"][0]["eta_s"] > 0
    timers = {t["interval"]: t for t in detail["timers"]}
    assert timers["dispatch"]["ended_at"] is not None and not timers["dispatch"]["breached"]
    assert timers["response"]["ended_at"] is None  # running until someone is on scene

    for action in ({"action": "arrive"}, {"action": "dispose", "disposition": "put out"}):
        moved = await client.post(f"/api/v1/incidents/{incident['id']}/actions", json=action, headers=dispatcher)
        assert moved.status_code == 200, moved.text

    exported = await client.get(f"/api/v1/incidents/{incident['id']}/export.csv", headers=dispatcher)
    [row] = list(csv.DictReader(io.StringIO(exported.text)))
    assert row["stage"] == "disposed" and float(row["response_s"]) >= 0 and row["unit_id"] == "car-1"
    feature = (await client.get(f"/api/v1/incidents/{incident['id']}/export.geojson", headers=dispatcher)).json()
    assert feature["geometry"]["coordinates"] == [121.251, 31.371]
    assert [s["action"] for s in feature["properties"]["steps"]][-1] == "dispose"
    collection = (await client.get("/api/v1/incidents/export.geojson", headers=dispatcher)).json()
    assert [f["id"] for f in collection["features"]] == [incident["id"]]

    kpis = (await client.get("/api/v1/kpis?group=type", headers=dispatcher)).json()
    [fire] = [g for g in kpis["groups"] if g["group"] == "fire"]
    assert fire["intervals"]["response"]["count"] == 1


async def test_two_dispatchers_one_unit_one_409_naming_its_assignment(
    db_url: str, app_factory: AppFactory, key_headers: HeadersFactory
) -> None:
    app, client = await node(app_factory, db_url)
    operator = await key_headers(app, Role.OPERATOR)
    dispatcher = await key_headers(app, Role.DISPATCHER)
    await client.post(
        "/api/v1/responders/import", content=RESPONDERS_CSV, headers={**operator, "Content-Type": "text/csv"}
    )
    ids = []
    for lon in (121.24, 121.26):
        made = await client.post(
            "/api/v1/incidents", json={"type": "dispute", "lon": lon, "lat": 31.37}, headers=operator
        )
        ids.append(made.json()["incident"]["id"])
    answers = await asyncio.gather(
        *(
            client.post(
                f"/api/v1/incidents/{i}/actions", json={"action": "dispatch", "unit_id": "car-1"}, headers=dispatcher
            )
            for i in ids
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 409]
    won = next(a for a in answers if a.status_code == 200).json()["id"]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "dispatch.responder_busy" and problem["assignment"]["incident_id"] == won

    wrong = await client.post(f"/api/v1/incidents/{won}/actions", json={"action": "close"}, headers=dispatcher)
    assert wrong.status_code == 409 and wrong.json()["code"] == "dispatch.invalid_transition"
    assert "arrive" in wrong.json()["allowed"]
    incomplete = await client.post(f"/api/v1/incidents/{won}/actions", json={"action": "cancel"}, headers=dispatcher)
    assert incomplete.status_code == 422 and incomplete.json()["code"] == "dispatch.step_incomplete"
    reader = await key_headers(app, Role.READER)
    assert (await client.post(f"/api/v1/incidents/{won}/dispatch", headers=reader)).status_code == 403


async def test_positions_are_checked_and_community_responders_answer_through_their_link(
    sqlite_url: str, app_factory: AppFactory, key_headers: HeadersFactory
) -> None:
    app, client = await node(app_factory, sqlite_url)
    operator = await key_headers(app, Role.OPERATOR)
    dispatcher = await key_headers(app, Role.DISPATCHER)
    unit = await key_headers(app, Role.RESPONDER)
    await client.post(
        "/api/v1/responders/import", content=RESPONDERS_CSV, headers={**operator, "Content-Type": "text/csv"}
    )
    now = datetime.now(UTC).isoformat()
    ok = await client.post(
        "/api/v1/responders/car-2/position", json={"lon": 121.26, "lat": 31.38, "fix_at": now}, headers=unit
    )
    assert ok.status_code == 204, ok.text
    assert (await client.get("/api/v1/responders/car-2", headers=unit)).json()["lon"] == 121.26
    far = await client.post("/api/v1/responders/car-2/position", json={"lon": 122.5, "lat": 31.9}, headers=unit)
    assert far.status_code == 422 and far.json()["code"] == "dispatch.bad_position"
    stale = await client.post(
        "/api/v1/responders/car-2/position",
        json={"lon": 121.26, "lat": 31.38, "fix_at": "2026-01-01T00:00:00+00:00"},
        headers=unit,
    )
    assert stale.status_code == 422 and "stale" in stale.json()["detail"]
    ghost = await client.post("/api/v1/responders/ghost/position", json={"lon": 121.26, "lat": 31.38}, headers=unit)
    assert ghost.status_code == 404 and ghost.json()["code"] == "dispatch.responder_not_found"

    made = await client.post(
        "/api/v1/incidents", json={"type": "medical", "community": "c-7", "address": "Building 3"}, headers=operator
    )
    incident_id = made.json()["incident"]["id"]
    link = await client.post(f"/api/v1/incidents/{incident_id}/task-link?responder_id=guard-1", headers=dispatcher)
    token = link.json()["token"]
    accepted = await client.post("/api/v1/tasks/accept", json={"token": token})
    assert accepted.status_code == 200 and accepted.json()["unit_id"] == "guard-1"
    arrived = await client.post("/api/v1/tasks/arrive", json={"token": token})
    reported = await client.post("/api/v1/tasks/report", json={"token": token, "outcome": "helped the resident"})
    assert (arrived.status_code, reported.json()["stage"]) == (200, "disposed")
    history = (await client.get(f"/api/v1/incidents/{incident_id}", headers=dispatcher)).json()["history"]
    assert history[-1]["actor"] == "responder:guard-1" and history[-1]["note"] == "helped the resident"
    forged = await client.post("/api/v1/tasks/accept", json={"token": token[:-4] + "AAAA"})
    assert forged.status_code == 403 and forged.json()["code"] == "dispatch.bad_link"
