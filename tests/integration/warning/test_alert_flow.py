"""The whole loop in one node: a device message over the ingest path -> rule -> stored alert (CAP) -> signed webhook
delivery to a real HTTP receiver -> the alert's `delivered` hop; every hop time on the alert."""

from __future__ import annotations

import time

import orjson
from standardwebhooks import Webhook

from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sim.district import build_district
from safecity.warning.model import AlertState
from safecity.warning.notify.subscriptions import Channel, SubscriptionCreate
from tests.integration.warning.notify_helpers import free_port, http_receiver, wait_for

DISTRICT = build_district(devices=600)


async def test_smoke_pair_alert_is_stored_delivered_and_timed(sqlite_url: str) -> None:
    building = next(b for b in DISTRICT.places.level("building") if sum(
        1 for d in DISTRICT.devices if d["kind"] == "smoke" and d["building"] == b.id) >= 2)
    smoke = [d for d in DISTRICT.devices if d["kind"] == "smoke" and d["building"] == building.id][:2]
    settings = Settings(database={"url": sqlite_url}, log_json=False, notify={"allow_loopback": True})
    runtime = Runtime(settings, tagger=DISTRICT.tag_index())
    await runtime.start()
    try:
        await runtime.devices.upsert_many(DISTRICT.devices)
        port = free_port()
        async with http_receiver(port) as receiver:
            _, secret = await runtime.notify.create(
                SubscriptionCreate(name="duty desk", channel=Channel.WEBHOOK, target=receiver.url)
            )
            assert secret is not None
            now = time.time()
            for i, device in enumerate(smoke):
                topic = f"safecity/{device['community']}/smoke/{device['id']}"
                await runtime.mqtt_route(topic, orjson.dumps({"id": f"s{i}", "ts": now, "alarm": True}))

            async def delivered() -> bool:
                page = await runtime.alerts.list()
                pairs = [a for a in page.items if a.rule_id == "fire.smoke_pair"]
                return bool(pairs) and "delivered" in pairs[0].hops and bool(receiver.requests)

            await wait_for(delivered, 20)
        alert = next(a for a in (await runtime.alerts.list()).items if a.rule_id == "fire.smoke_pair")
        assert alert.state == AlertState.NEW
        assert alert.building == building.id
        assert {"occurred", "received", "tagged", "fired", "stored", "delivered"} <= set(alert.hops)
        assert alert.latency_ms["occurred_to_fired"] >= 0
        headers, body = next(r for r in receiver.requests if b"fire.smoke_pair" in r[1])
        # The receiver can verify the standardwebhooks signature with the secret it was given once.
        Webhook(secret).verify(body, headers)
        cap = await runtime.alerts.cap_of(alert.id)
        assert cap is not None
    finally:
        await runtime.stop()
