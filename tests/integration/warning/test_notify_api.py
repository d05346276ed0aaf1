"""HTTP API of notify on a real uvicorn server: subscriptions CRUD by role (secrets never returned), and the live
alert WebSocket (auth by ?key= or header, role check, filters, durable per-subscription delivery)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import websockets

from safecity.api import notify as notify_api
from safecity.api.app import create_app
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sharing.keys import Role
from safecity.warning.model import Severity
from safecity.warning.notify.service import NotifyConfig, NotifyService
from tests.integration.warning.notify_helpers import free_port, make_alert, raise_alert, wait_for


@pytest.fixture
async def node(sqlite_url: str) -> AsyncIterator[dict[str, Any]]:
    """A runtime with a notify service, served by uvicorn on a free loopback port."""
    runtime = Runtime(Settings(database={"url": sqlite_url}, log_json=False))
    runtime.notify = NotifyService(  # type: ignore[attr-defined]
        runtime.engine, runtime.bus, NotifyConfig(allow_loopback=True, backoff_base_s=0.05, backoff_max_s=0.2)
    )
    app = create_app(runtime.api_services(), extra_routers=[notify_api.router])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started, 60)
    await runtime.notify.start()  # type: ignore[attr-defined]
    keys = {role: (await runtime.keys.create(f"t {role}", role)).key for role in Role}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        yield {"runtime": runtime, "port": port, "keys": keys, "client": client}
    await runtime.notify.stop()  # type: ignore[attr-defined]
    server.should_exit = True
    await task


async def test_subscription_crud_by_role_without_secrets(node: dict[str, Any]) -> None:
    client: httpx.AsyncClient = node["client"]
    keys = node["keys"]
    op = {"X-API-Key": keys[Role.OPERATOR]}
    body = {"name": "hook", "channel": "webhook", "target": "http://127.0.0.1:9/hook?token=abc"}
    assert (
        await client.post("/api/v1/subscriptions", json=body, headers={"X-API-Key": keys[Role.RESPONDER]})
    ).status_code == 403
    assert (await client.post("/api/v1/subscriptions", json=body)).status_code == 401
    created = await client.post("/api/v1/subscriptions", json=body, headers=op)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["secret"].startswith("whsec_") and sub["has_secret"] is True
    assert sub["target"] == "http://127.0.0.1:9/hook"
    listed = await client.get("/api/v1/subscriptions", headers={"X-API-Key": keys[Role.ADMIN]})
    assert [s["id"] for s in listed.json()] == [sub["id"]]
    assert "secret" not in listed.json()[0] and b"whsec_" not in listed.content and b"token=abc" not in listed.content
    chat = {"name": "bot", "channel": "chat", "target": "dingtalk://secrettoken123"}
    chat_sub = (await client.post("/api/v1/subscriptions", json=chat, headers=op)).json()
    assert chat_sub["target"] == "dingtalk://***" and chat_sub["secret"] is None
    patched = await client.patch(f"/api/v1/subscriptions/{sub['id']}", json={"enabled": False}, headers=op)
    assert patched.json()["enabled"] is False
    bad = await client.post("/api/v1/subscriptions", json={**body, "target": "http://example.com/x"}, headers=op)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["code"] == "notify.host_not_allowed"
    assert (await client.delete(f"/api/v1/subscriptions/{sub['id']}", headers=op)).status_code == 200
    missing = await client.get(f"/api/v1/subscriptions/{sub['id']}", headers=op)
    assert missing.status_code == 404 and missing.json()["code"] == "subscription.not_found"


async def test_live_websocket_filters_and_auth(node: dict[str, Any]) -> None:
    base = f"ws://127.0.0.1:{node['port']}/api/v1/alerts/live"
    keys = node["keys"]
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(f"{base}?key={keys[Role.CITIZEN]}"):
            pass
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(base):
            pass
    runtime = node["runtime"]
    severe_only = f"{base}?key={keys[Role.DISPATCHER]}&min_severity=Severe&communities=c-01"
    async with (
        websockets.connect(severe_only) as ws,
        websockets.connect(base, additional_headers={"X-API-Key": keys[Role.RESPONDER]}) as ws_all,
    ):
        await wait_for(lambda: len(runtime.notify.hub.clients) == 2)
        minor = make_alert(severity=Severity.MINOR)
        severe = make_alert()
        await raise_alert(runtime.bus, minor)
        await raise_alert(runtime.bus, severe)
        async with asyncio.timeout(30):
            got = orjson.loads(await ws.recv())
            first_all = orjson.loads(await ws_all.recv())
            second_all = orjson.loads(await ws_all.recv())
        assert got["alert"]["alert_id"] == severe.alert_id
        assert got["alert"]["hops"]["delivered"]
        assert {first_all["alert"]["alert_id"], second_all["alert"]["alert_id"]} == {minor.alert_id, severe.alert_id}


async def test_websocket_subscription_is_durable(node: dict[str, Any]) -> None:
    client: httpx.AsyncClient = node["client"]
    keys = node["keys"]
    runtime = node["runtime"]
    created = await client.post(
        "/api/v1/subscriptions",
        json={"name": "console", "channel": "websocket"},
        headers={"X-API-Key": keys[Role.OPERATOR]},
    )
    sub_id = created.json()["id"]
    alert = make_alert()
    # Nobody is connected: the delivery waits in the outbox (retrying) until a client for it comes.
    await raise_alert(runtime.bus, alert)

    async def tried() -> bool:
        rows = await runtime.notify.deliveries(subscription_id=sub_id)
        return bool(rows) and rows[0]["attempts"] >= 1 and rows[0]["state"] == "pending"

    await wait_for(tried)
    url = f"ws://127.0.0.1:{node['port']}/api/v1/alerts/live?key={keys[Role.OPERATOR]}&subscription={sub_id}"
    async with websockets.connect(url) as ws, asyncio.timeout(30):
        got = orjson.loads(await ws.recv())
    assert got["alert"]["alert_id"] == alert.alert_id

    async def delivered() -> bool:
        # The row is marked after the frame is sent: it may land just after the client has read it.
        path = f"/api/v1/subscriptions/{sub_id}/deliveries"
        deliveries = await client.get(path, headers={"X-API-Key": keys[Role.ADMIN]})
        return bool(deliveries.json()[0]["state"] == "delivered")

    await wait_for(delivered)
