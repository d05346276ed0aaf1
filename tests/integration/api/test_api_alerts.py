"""Alerts over HTTP on SQLite and PostgreSQL: list/filter, read with hops and steps, lifecycle by role, CAP, feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from lxml import etree

from safecity.kernel.envelope import make_envelope
from safecity.sensing.model import Tags
from safecity.sharing.keys import Role
from safecity.warning import cap
from safecity.warning.model import (
    ALERT_RAISED,
    AlertRaised,
    Area,
    Category,
    Certainty,
    Severity,
    Text,
    Urgency,
)

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
A1 = "01JDZ0000000000000000000A1"
A2 = "01JDZ0000000000000000000A2"
RING = [(121.26, 31.37), (121.28, 31.37), (121.28, 31.39), (121.26, 31.39), (121.26, 31.37)]


def raised(alert_id: str, *, severity: Severity = Severity.SEVERE, town: str = "town-a") -> AlertRaised:
    """An alert as the engine raises it."""
    return AlertRaised(
        alert_id=alert_id,
        rule_id="smoke-two-detectors",
        group_key=alert_id,
        headline=Text(zh="烟感报警", en="Smoke alarm"),
        description=Text(zh="两个烟感报警。", en="Two smoke detectors alarmed."),
        category=Category.FIRE,
        severity=severity,
        urgency=Urgency.IMMEDIATE,
        certainty=Certainty.LIKELY,
        opens_incident=True,
        tags=Tags(town=town, community="comm-1", building="bldg-1"),
        area=Area(description="1 号楼", polygon=RING),
        trigger_event_ids=["ev-1"],
        count=1,
        first_at=T0,
        last_at=T0,
        hops={"occurred": T0, "received": T0 + timedelta(milliseconds=2), "fired": T0 + timedelta(milliseconds=5)},
    )


async def _seed(app: FastAPI) -> None:
    runtime = app.state.runtime
    service = getattr(runtime, "alerts", None)
    if service is None:  # until the runtime owns one, the API builds it on first use
        from safecity.warning.alerts import AlertService

        service = AlertService(runtime.engine, runtime.bus, node_id=runtime.settings.node_id)
        app.state.alerts = service
    await service.store(raised(A1))
    await service.store(raised(A2, severity=Severity.MINOR, town="town-b"))


class _Req:
    """Just enough of a request for `alert_service` (app.state)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app


def _valid(schema: Any, xml: bytes) -> None:
    errors = list(schema.iter_errors(etree.fromstring(xml).getroottree()))
    assert errors == [], errors[0] if errors else None


async def test_alert_lifecycle_over_http(
    db_app_client: tuple[FastAPI, httpx.AsyncClient], key_headers: Any, shared_data: Path
) -> None:
    """List and filter; acknowledge / assign / resolve with feedback; steps and hops in the detail; CAP valid."""
    app, client = db_app_client
    await _seed(app)
    operator = await key_headers(app, Role.OPERATOR)
    dispatcher = await key_headers(app, Role.DISPATCHER)
    responder = await key_headers(app, Role.RESPONDER)
    reader = await key_headers(app, Role.READER)

    page = (await client.get("/api/v1/alerts", headers=reader)).json()
    assert page["total"] == 2
    assert [a["id"] for a in (await client.get("/api/v1/alerts?severity=Minor", headers=reader)).json()["items"]] == [
        A2
    ]
    assert (await client.get("/api/v1/alerts?town=town-a&state=new", headers=reader)).json()["total"] == 1
    since = (T0 + timedelta(seconds=1)).isoformat()
    assert (await client.get("/api/v1/alerts", params={"since": since}, headers=reader)).json()["total"] == 0
    naive = await client.get("/api/v1/alerts", params={"since": "2026-12-01T08:00:00"}, headers=reader)
    assert naive.status_code == 422

    # Roles: a reader may not acknowledge; a responder may not assign or cancel.
    assert (await client.post(f"/api/v1/alerts/{A1}/acknowledge", headers=reader)).status_code == 403
    r = await client.post(f"/api/v1/alerts/{A1}/assign", json={"assignee": "u-1"}, headers=responder)
    assert r.status_code == 403
    assert (
        await client.post(f"/api/v1/alerts/{A1}/cancel", json={"reason": "x"}, headers=responder)
    ).status_code == 403

    # Resolve before acknowledge: 409 problem.
    r = await client.post(f"/api/v1/alerts/{A1}/resolve", json={"feedback": "done"}, headers=responder)
    assert r.status_code == 409
    assert r.json()["code"] == "alert.invalid_transition"

    r = await client.post(f"/api/v1/alerts/{A1}/acknowledge", json={"feedback": "看到了"}, headers=responder)
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    r = await client.post(f"/api/v1/alerts/{A1}/assign", json={"assignee": "unit-12"}, headers=dispatcher)
    assert r.json()["assignee"] == "unit-12"
    r = await client.post(f"/api/v1/alerts/{A1}/resolve", json={"feedback": "厨房油烟，误报"}, headers=responder)
    assert r.status_code == 200
    detail = (await client.get(f"/api/v1/alerts/{A1}", headers=operator)).json()
    assert detail["state"] == "resolved"
    assert [(s["state"], s["actor"], s["feedback"]) for s in detail["steps"]] == [
        ("acknowledged", "test responder", "看到了"),
        ("assigned", "test dispatcher", None),
        ("resolved", "test responder", "厨房油烟，误报"),
    ]
    assert set(detail["hops"]) == {"occurred", "received", "fired", "stored"}
    assert detail["latency_ms"]["occurred_to_fired"] == 5.0

    # Cancel the other alert; bad bodies and ids are 422, unknown ids 404.
    assert (await client.post(f"/api/v1/alerts/{A2}/cancel", json={}, headers=operator)).status_code == 422
    r = await client.post(f"/api/v1/alerts/{A2}/cancel", json={"reason": "演练"}, headers=operator)
    assert r.json()["state"] == "cancelled"
    assert (await client.get("/api/v1/alerts/not-an-id", headers=operator)).status_code == 422
    missing = await client.get("/api/v1/alerts/01JDZ00000000000000000ZZZZ", headers=operator)
    assert missing.status_code == 404 and missing.json()["code"] == "alert.not_found"

    # CAP of both, XSD-valid: the cancelled one is a Cancel referencing the original.
    schema = cap.load_schema(shared_data / "cap" / "schema" / "CAP-v1.2.xsd")
    r = await client.get(f"/api/v1/alerts/{A2}.cap", headers=reader)
    assert r.status_code == 200 and r.headers["content-type"].startswith(cap.CAP_MEDIA_TYPE)
    _valid(schema, r.content)
    parsed = cap.parse_xml(r.content, schema=schema)
    assert parsed.msg_type is cap.MsgType.CANCEL
    assert parsed.references[0].identifier == A2
    assert (await client.get(f"/api/v1/alerts/{A1}.cap")).status_code == 401


async def test_public_cap_feed(
    db_app_client: tuple[FastAPI, httpx.AsyncClient], key_headers: Any, shared_data: Path
) -> None:
    """The Atom index lists open alerts without a key; each entry's link serves XSD-valid CAP."""
    app, client = db_app_client
    await _seed(app)
    operator = await key_headers(app, Role.OPERATOR)
    await client.post(f"/api/v1/alerts/{A2}/acknowledge", headers=operator)
    await client.post(f"/api/v1/alerts/{A2}/resolve", json={"feedback": "ok"}, headers=operator)

    r = await client.get("/cap/feed.atom")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    feed = etree.fromstring(r.content)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    links = feed.xpath("a:entry/a:link/@href", namespaces=ns)
    assert links == [f"http://testserver/cap/alerts/{A1}.xml"]  # the resolved one left the feed
    assert "看到了" not in r.text and "unit" not in r.text

    schema = cap.load_schema(shared_data / "cap" / "schema" / "CAP-v1.2.xsd")
    for link in links:
        xml = await client.get(link.removeprefix("http://testserver"))
        assert xml.status_code == 200 and xml.headers["content-type"].startswith(cap.CAP_MEDIA_TYPE)
        _valid(schema, xml.content)
        message = cap.parse_xml(xml.content, schema=schema)
        assert message.identifier == A1
        assert [i.language for i in message.infos] == ["zh-CN", "en-US"]
        assert message.infos[0].areas[0].polygons[0] == RING
    assert (await client.get("/cap/alerts/01JDZ00000000000000000ZZZZ.xml")).status_code == 404


async def test_alerts_from_the_bus_reach_the_api(
    app_client: tuple[FastAPI, httpx.AsyncClient], key_headers: Any
) -> None:
    """With the runtime's AlertService running, an alert.raised on the bus shows up in the list."""
    app, client = app_client
    runtime = app.state.runtime
    if getattr(runtime, "alerts", None) is None:
        # Until the runtime owns and starts one, start it here the way the runtime will.
        from safecity.api.alerts import alert_service

        service = alert_service(_Req(app))  # type: ignore[arg-type]
        await service.start()
    await runtime.bus.publish(make_envelope(ALERT_RAISED, raised(A1), source="engine"))
    headers = await key_headers(app, Role.OPERATOR)
    await runtime.bus.drain()
    assert (await client.get(f"/api/v1/alerts/{A1}", headers=headers)).json()["count"] == 1
