"""Alerts over HTTP on SQLite and PostgreSQL: list/filter, read with hops and steps, lifecycle by role, CAP, feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from lxml import etree

from safecity.kernel import clock
from safecity.kernel.envelope import make_envelope
from safecity.sensing.model import Tags
from safecity.sharing.keys import Role
from safecity.warning import cap
from safecity.warning.alerts import public_id
from safecity.warning.model import (
    ALERT_RAISED,
    AlertRaised,
    Area,
    Audience,
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


def raised(
    alert_id: str,
    *,
    severity: Severity = Severity.SEVERE,
    town: str = "town-a",
    scope: Audience = Audience.PUBLIC,
    rule_id: str = "smoke-two-detectors",
) -> AlertRaised:
    """An alert as the engine raises it."""
    return AlertRaised(
        alert_id=alert_id,
        rule_id=rule_id,
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
        scope=scope,
    )


ATOM = {"a": "http://www.w3.org/2005/Atom"}


async def _service(app: FastAPI) -> Any:
    """The runtime's alert service (the one the API's alerts port is)."""
    return app.state.runtime.alerts


async def _seed(app: FastAPI) -> None:
    service = await _service(app)
    await service.store(raised(A1))
    await service.store(raised(A2, severity=Severity.MINOR, town="town-b"))


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
    """Only Public alerts are in the keyless feed, at unguessable ids; a resolved one is an AllClear Update
    referencing the original; every linked message is XSD-valid and expires; Restricted ones are not found."""
    app, client = db_app_client
    service = await _service(app)
    await service.store(raised(A1))
    await service.store(raised(A2, severity=Severity.MINOR, town="town-b"))
    hotlist = "01JDZ0000000000000000000A3"
    await service.store(raised(hotlist, scope=Audience.RESTRICTED, rule_id="security.hotlist_vehicle"))
    operator = await key_headers(app, Role.OPERATOR)
    await client.post(f"/api/v1/alerts/{A2}/acknowledge", headers=operator)
    await client.post(f"/api/v1/alerts/{A2}/resolve", json={"feedback": "看到了"}, headers=operator)

    r = await client.get("/cap/feed.atom")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    feed = etree.fromstring(r.content)
    links = feed.xpath("a:entry/a:link/@href", namespaces=ATOM)
    secret = app.state.runtime.settings.security.pseudonym_key.get_secret_value().encode()
    assert links == [f"http://testserver/cap/alerts/{public_id(secret, a)}.xml" for a in (A2, A1)]
    assert hotlist not in r.text and "看到了" not in r.text and "unit" not in r.text

    schema = cap.load_schema(shared_data / "cap" / "schema" / "CAP-v1.2.xsd")
    messages = {}
    for link in links:
        xml = await client.get(link.removeprefix("http://testserver"))
        assert xml.status_code == 200 and xml.headers["content-type"].startswith(cap.CAP_MEDIA_TYPE)
        _valid(schema, xml.content)
        message = cap.parse_xml(xml.content, schema=schema)
        assert message.scope is cap.Scope.PUBLIC
        assert [i.language for i in message.infos] == ["zh-CN", "en-US"]
        assert all(i.expires is not None and i.expires > message.sent for i in message.infos)
        assert message.infos[0].areas[0].polygons[0] == RING
        messages[message.identifier] = message
    resolved = messages[f"{public_id(secret, A2)}-resolved"]
    assert resolved.msg_type is cap.MsgType.UPDATE and resolved.infos[0].response_types == ["AllClear"]
    assert [ref.identifier for ref in resolved.references] == [public_id(secret, A2)]
    assert messages[public_id(secret, A1)].msg_type is cap.MsgType.ALERT

    # Internal ids, ids with a forged tag and Restricted alerts (even with a valid tag) are all just "not found".
    for path in (
        f"/cap/alerts/{A1}.xml",
        f"/cap/alerts/{A1}-{'0' * 32}.xml",
        f"/cap/alerts/{public_id(secret, hotlist)}.xml",
        f"/cap/alerts/{public_id(b'another district key', A1)}.xml",
    ):
        assert (await client.get(path)).status_code == 404, path


async def test_public_cap_feed_is_paged_and_bounded_by_time(
    db_app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """RFC 5005 paging: `next` walks to older entries and `prev` back, no alert lost or repeated; alerts last
    changed before the feed's window are not in it."""
    app, client = db_app_client
    service = await _service(app)
    ids = [f"01JDZ00000000000000000{n:04d}" for n in range(7)]
    base = clock.now()
    for n, alert_id in enumerate(ids):
        await service.store(raised(alert_id), stored_at=base - timedelta(minutes=n))
    old = "01JDZ0000000000000000000ZZ"
    await service.store(raised(old), stored_at=base - timedelta(days=8))

    def page_of(body: bytes) -> tuple[list[str], dict[str, str]]:
        feed = etree.fromstring(body)
        hrefs = feed.xpath("a:entry/a:link/@href", namespaces=ATOM)
        found = [h.rsplit("/", 1)[1].split("-", 1)[0] for h in hrefs]
        rels = {link.get("rel"): link.get("href") for link in feed.xpath("a:link", namespaces=ATOM)}
        return found, rels

    seen: list[str] = []
    pages: list[str] = []
    url: str | None = "/cap/feed.atom?limit=3"
    while url is not None:
        found, rels = page_of((await client.get(url)).content)
        assert rels["first"] == "http://testserver/cap/feed.atom?limit=3"
        assert ("prev" in rels) is bool(seen)
        pages.append(url)
        seen += found
        url = rels["next"].removeprefix("http://testserver") if "next" in rels else None
    assert seen == ids  # newest change first, every alert once, the 8-day-old one outside the window
    assert len(pages) == 3
    # From the last page, `prev` leads back to the page before it.
    _, rels = page_of((await client.get(pages[-1])).content)
    back, _ = page_of((await client.get(rels["prev"].removeprefix("http://testserver"))).content)
    assert back == ids[3:6]
    # A position past year 9999 is bad input, not a server error (schemathesis found it).
    far = await client.get("/cap/feed.atom?after=5546037682083615432.8JX5M00ADCR2BVFVTERZAJV98Z")
    assert far.status_code == 422 and far.headers["content-type"].startswith("application/problem+json")


async def test_alerts_from_the_bus_reach_the_api(
    app_client: tuple[FastAPI, httpx.AsyncClient], key_headers: Any
) -> None:
    """With the runtime's AlertService running, an alert.raised on the bus shows up in the list."""
    app, client = app_client
    runtime = app.state.runtime
    await runtime.bus.publish(make_envelope(ALERT_RAISED, raised(A1), source="engine"))
    headers = await key_headers(app, Role.OPERATOR)
    await runtime.bus.drain()
    assert (await client.get(f"/api/v1/alerts/{A1}", headers=headers)).json()["count"] == 1
