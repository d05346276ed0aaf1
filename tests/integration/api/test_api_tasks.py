"""Community tasks through the warning slice's delivery channels, on a real node (SQLite and PostgreSQL): a guard's
webhook (a real HTTP server on loopback, Standard Webhooks signature checked) and a volunteer's e-mail (a real SMTP
server, aiosmtpd, through apprise) receive the task with a signed, expiring link; the link's page and its answers
land in the incident."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message
from typing import Any

import orjson
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook
from tests.integration.api.conftest import AppFactory, HeadersFactory
from tests.integration.warning.notify_helpers import Inbox, free_port, http_receiver, wait_for

from safecity.sharing.keys import Role

ROADS = {"synthetic": True, "synthetic_nodes": 2_500, "synthetic_center": (121.25, 31.37)}
FAST_NOTIFY = {"allow_loopback": True, "backoff_base_s": 0.05, "backoff_max_s": 0.2, "poll_interval_s": 0.1}
LINK = re.compile(r"https?://[^\s#]+/task#([A-Za-z0-9_.=-]+)")


def _text(mail: Message) -> str:
    part = mail.get_payload(0) if mail.is_multipart() else mail
    assert isinstance(part, Message)
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


async def test_a_guard_gets_its_task_by_webhook_and_answers_through_the_link(
    db_url: str, app_factory: AppFactory, key_headers: HeadersFactory
) -> None:
    async with http_receiver(free_port()) as receiver:
        app, client = await app_factory(
            db_url, roads=ROADS, notify=FAST_NOTIFY, dispatch={"task_link_base_url": "https://sc.example.test/"}
        )
        admin = await key_headers(app, Role.ADMIN)
        dispatcher = await key_headers(app, Role.DISPATCHER)
        made = await client.post(
            "/api/v1/subscriptions",
            json={"name": "guard-1", "channel": "webhook", "target": receiver.url, "filter": {"tasks_only": True}},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        sub_id, secret = made.json()["id"], made.json()["secret"]
        responders = (
            "id,kind,unit_type,capabilities,lon,lat,contact\n"
            f"guard-1,community,guard,first_aid,121.2505,31.3705,{sub_id}\n"
            "guard-2,community,volunteer,,121.2506,31.3706,\n"
        )
        imported = await client.post(
            "/api/v1/responders/import", content=responders, headers={**admin, "Content-Type": "text/csv"}
        )
        assert imported.json()["created"] == 2, imported.text
        incident_id = (
            await client.post(
                "/api/v1/incidents",
                json={"type": "medical", "community": "c-7", "address": "Building 3", "summary": "elderly fall"},
                headers=dispatcher,
            )
        ).json()["incident"]["id"]

        unreachable = await client.post(
            f"/api/v1/incidents/{incident_id}/tasks", json={"responder_id": "guard-2"}, headers=dispatcher
        )
        assert unreachable.status_code == 409 and unreachable.json()["code"] == "dispatch.responder_no_contact"
        sent = await client.post(
            f"/api/v1/incidents/{incident_id}/tasks", json={"responder_id": "guard-1"}, headers=dispatcher
        )
        assert sent.status_code == 202, sent.text
        assert sent.json()["subscription_id"] == sub_id and sent.json()["actions"] == ["accept", "arrive", "report"]
        await wait_for(lambda: len(receiver.requests) == 1)

    headers, raw = receiver.requests[0]
    Webhook(secret).verify(raw, headers)  # signed like an alert delivery
    task = orjson.loads(raw)["task"]
    assert (task["incident_id"], task["responder_id"], task["summary"]) == (incident_id, "guard-1", "elderly fall")
    link = LINK.fullmatch(task["link"])
    assert link is not None and task["link"].startswith("https://sc.example.test/task#")
    token = link[1]

    page = await client.get("/task")
    assert page.status_code == 200 and "/api/v1/tasks/view" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    viewed = await client.post("/api/v1/tasks/view", json={"token": token})
    assert viewed.status_code == 200, viewed.text
    assert (viewed.json()["stage"], viewed.json()["address"]) == ("triaged", "Building 3")

    accepted = await client.post("/api/v1/tasks/accept", json={"token": token})
    assert (accepted.status_code, accepted.json()["unit_id"]) == (200, "guard-1")
    await client.post("/api/v1/tasks/arrive", json={"token": token})
    reported = await client.post("/api/v1/tasks/report", json={"token": token, "outcome": "called the family"})
    assert reported.json()["stage"] == "disposed"
    history = (await client.get(f"/api/v1/incidents/{incident_id}", headers=dispatcher)).json()["history"]
    offered = next(h for h in history if h["action"] == "task_sent")
    assert offered["unit_id"] == "guard-1" and offered["evidence"] == [
        {"kind": "delivery", "ref": sent.json()["delivery_id"]}
    ]
    assert [h["actor"] for h in history[-3:]] == ["responder:guard-1"] * 3
    deliveries = await client.get(f"/api/v1/subscriptions/{sub_id}/deliveries", headers=admin)
    assert [(d["kind"], d["state"]) for d in deliveries.json()] == [("task", "delivered")]

    closed = await client.post(
        f"/api/v1/incidents/{incident_id}/tasks", json={"responder_id": "guard-1"}, headers=dispatcher
    )
    assert closed.status_code == 409 and closed.json()["code"] == "dispatch.invalid_transition"
    forged = await client.post("/api/v1/tasks/view", json={"token": token[:-4] + "AAAA"})
    assert forged.status_code == 403 and forged.json()["code"] == "dispatch.bad_link"


async def test_a_volunteer_dispatched_directly_gets_an_arrive_and_report_link_by_email(
    sqlite_url: str, app_factory: AppFactory, key_headers: HeadersFactory
) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app, client = await app_factory(sqlite_url, roads=ROADS, notify=FAST_NOTIFY)
        admin = await key_headers(app, Role.ADMIN)
        dispatcher = await key_headers(app, Role.DISPATCHER)
        mail_to = f"mailto://127.0.0.1:{port}?mode=insecure&from=tasks@safecity.test&to=volunteer@safecity.test"
        made = await client.post(
            "/api/v1/subscriptions",
            json={"name": "volunteer", "channel": "email", "target": mail_to, "filter": {"tasks_only": True}},
            headers=admin,
        )
        body = {"id": "vol-1", "kind": "community", "unit_type": "volunteer", "contact": made.json()["id"]}
        registered = await client.post(
            "/api/v1/responders/import",
            content=orjson.dumps({"type": "FeatureCollection", "features": [_feature(body, 121.2505, 31.3705)]}),
            headers={**admin, "Content-Type": "application/geo+json"},
        )
        assert registered.json()["created"] == 1, registered.text
        incident_id = (
            await client.post(
                "/api/v1/incidents",
                json={"type": "medical", "lon": 121.251, "lat": 31.371, "summary": "a resident needs help"},
                headers=dispatcher,
            )
        ).json()["incident"]["id"]
        dispatched = await client.post(
            f"/api/v1/incidents/{incident_id}/actions",
            json={"action": "dispatch", "unit_id": "vol-1"},
            headers=dispatcher,
        )
        assert dispatched.status_code == 200, dispatched.text
        await wait_for(lambda: len(inbox.messages) == 1)
    finally:
        controller.stop()
    text = _text(message_from_bytes(inbox.messages[0].content))
    assert "a resident needs help" in text and "到场、反馈结果" in text  # the subscription's default language: zh
    link = LINK.search(text)
    assert link is not None
    refused = await client.post("/api/v1/tasks/accept", json={"token": link[1]})
    assert refused.status_code == 403 and refused.json()["why"] == "wrong_action"  # already dispatched
    arrived = await client.post("/api/v1/tasks/arrive", json={"token": link[1]})
    assert arrived.json()["stage"] == "on_scene"


def _feature(properties: dict[str, Any], lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": properties}
