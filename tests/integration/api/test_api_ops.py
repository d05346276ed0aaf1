"""Operations endpoints: /healthz, /readyz (database, bus, broker), /metrics."""

from __future__ import annotations

import asyncio
import socket

import httpx
from fastapi import FastAPI


def _closed_port() -> int:
    # Bound then released: nothing listens there for the rest of the test.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_health_ready_metrics(db_app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = db_app_client
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "bus", "tasks"}
    assert all(c["ok"] for c in body["checks"].values())
    app.state.runtime.metrics.events_in.labels("test", "smoke").inc(3)
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'safecity_events_in_total{kind="smoke",source="test"} 3.0' in metrics.text


async def test_ready_fails_when_the_broker_is_down(app_factory, sqlite_url: str) -> None:
    port = _closed_port()
    mqtt = {"enabled": True, "host": "127.0.0.1", "port": port, "client_id": "safecity-test-down"}
    _, client = await app_factory(sqlite_url, mqtt=mqtt)
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False


async def test_ready_with_a_live_broker(
    app_factory, sqlite_url: str, mqtt_broker: tuple[str, int], unique_name: str
) -> None:
    host, port = mqtt_broker
    # A client id of its own: a shared id makes parallel runs take each other's session over.
    mqtt = {"enabled": True, "host": host, "port": port, "client_id": f"safecity-test-{unique_name}"}
    app, client = await app_factory(sqlite_url, mqtt=mqtt)
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"]["ok"] is True
    # Let the runtime's MQTT client finish subscribing before teardown stops it: cancelling aiomqtt mid-subscribe
    # can stall Runtime.stop() (client timeout=None; reported to the lead).
    await asyncio.wait_for(app.state.runtime.mqtt.connected.wait(), 30)


async def test_ready_fails_when_the_bus_is_down(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = app_client
    await app.state.runtime.bus.close()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["bus"]["ok"] is False


async def test_metrics_report_the_bus_backlog_per_subscription(app_client) -> None:
    _, client = app_client
    text = (await client.get("/metrics")).text
    assert 'safecity_bus_lag{subscription="store-writer"}' in text
