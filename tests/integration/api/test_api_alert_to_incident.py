"""An operator turns an alert into an incident: the alert's place, times and events carried over, once per alert,
by role; the same incident back when the alert already opened one."""

from __future__ import annotations

from msgspec.structs import replace
from tests.integration.api.conftest import AppFactory, HeadersFactory
from tests.integration.api.test_api_alerts import A1, A2, raised

from safecity.sharing.keys import Role

A3 = "01JDZ0000000000000000000A3"


async def test_an_alert_becomes_one_incident(
    app_factory: AppFactory, sqlite_url: str, key_headers: HeadersFactory
) -> None:
    app, client = await app_factory(sqlite_url)
    alerts = app.state.runtime.alerts
    # A single smoke alarm's rule does not open incidents itself: the operator does.
    await alerts.store(replace(raised(A1, rule_id="fire.smoke_alarm"), opens_incident=False))
    operator = await key_headers(app, Role.OPERATOR)
    made = await client.post(f"/api/v1/alerts/{A1}/incident", headers=operator)
    assert made.status_code == 200, made.text
    incident = made.json()["incident"]
    assert incident["alert_id"] == A1
    assert incident["origin"] == "alert"
    assert incident["type"] == "fire"  # the dispatch settings map fire.* rules to fire
    assert incident["priority"] == 1
    assert (round(incident["lon"], 6), round(incident["lat"], 6)) == (121.27, 31.38)  # the polygon centre
    assert incident["warned_at"] is not None and incident["perceived_at"] is not None
    detail = (await client.get(f"/api/v1/incidents/{incident['id']}", headers=operator)).json()
    refs = {(e["kind"], e["ref"]) for e in detail["history"][0]["evidence"]}
    assert {("alert", A1), ("event", "ev-1")} <= refs
    again = await client.post(f"/api/v1/alerts/{A1}/incident", headers=operator)
    assert again.json()["incident"]["id"] == incident["id"]


async def test_who_may_turn_an_alert_into_an_incident(
    app_factory: AppFactory, sqlite_url: str, key_headers: HeadersFactory
) -> None:
    app, client = await app_factory(sqlite_url)
    await app.state.runtime.alerts.store(replace(raised(A2), opens_incident=False))
    for role, status in ((Role.READER, 403), (Role.RESPONDER, 403), (Role.DISPATCHER, 200)):
        answer = await client.post(f"/api/v1/alerts/{A2}/incident", headers=await key_headers(app, role))
        assert answer.status_code == status, (role, answer.text)
    # A rule the alert-type table does not name ("smoke-two-detectors") still gives a valid (unknown) type.
    assert answer.json()["incident"]["type"] == "smoke_two_detectors"
    missing = await client.post(f"/api/v1/alerts/{A3}/incident", headers=await key_headers(app, Role.OPERATOR))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    bad = await client.post("/api/v1/alerts/not-an-id/incident", headers=await key_headers(app, Role.OPERATOR))
    assert bad.status_code == 422
