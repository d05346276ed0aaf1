"""The whole loop in one node: a device message over the ingest path -> rule -> stored alert (CAP) -> signed webhook
delivery to a real HTTP receiver -> the alert's `delivered` hop; every hop time on the alert."""

from __future__ import annotations

import time

import orjson
from standardwebhooks import Webhook

from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sim.district import build_district
from safecity.warning.cap import MsgType
from safecity.warning.model import AlertState
from safecity.warning.notify.subscriptions import Channel, SubscriptionCreate
from tests.integration.warning.notify_helpers import free_port, http_receiver, wait_for

DISTRICT = build_district(devices=600)


async def test_smoke_pair_alert_is_stored_delivered_and_timed(sqlite_url: str) -> None:
    building = next(
        b
        for b in DISTRICT.places.level("building")
        if sum(1 for d in DISTRICT.devices if d["kind"] == "smoke" and d["building"] == b.id) >= 2
    )
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
        # The CAP message is this alert's: its first raise (or its latest repeat), about this rule, in both languages.
        cap = await runtime.alerts.cap_of(alert.id)
        assert cap.identifier == (alert.id if alert.count == 1 else f"{alert.id}-u{alert.count}")
        assert cap.msg_type is (MsgType.ALERT if alert.count == 1 else MsgType.UPDATE)
        assert [info.language for info in cap.infos] == ["zh-CN", "en-US"]
        assert all(("safecity:rule", "fire.smoke_pair") in info.parameters for info in cap.infos)
    finally:
        await runtime.stop()


async def test_open_windows_survive_a_restart_without_a_snapshot(sqlite_url: str) -> None:
    building = next(
        b
        for b in DISTRICT.places.level("building")
        if sum(1 for d in DISTRICT.devices if d["kind"] == "smoke" and d["building"] == b.id) >= 2
    )
    first, second = [d for d in DISTRICT.devices if d["kind"] == "smoke" and d["building"] == building.id][:2]
    settings = Settings(database={"url": sqlite_url}, log_json=False)

    async def alarm(runtime: Runtime, device: dict[str, object], message_id: str) -> None:
        topic = f"safecity/{device['community']}/smoke/{device['id']}"
        await runtime.mqtt_route(topic, orjson.dumps({"id": message_id, "ts": time.time(), "alarm": True}))
        await runtime.bus.drain()
        await runtime.writer.flush()

    before = Runtime(settings, tagger=DISTRICT.tag_index())
    await before.start()
    await before.devices.upsert_many(DISTRICT.devices)
    await alarm(before, first, "a1")
    assert before.warning is not None
    assert before.warning.status()["raised"] == 1  # the single-detector alarm rule
    await before.stop()

    after = Runtime(settings, tagger=DISTRICT.tag_index())
    await after.start()
    try:
        assert after.warning is not None
        assert after.warning.status()["raised"] == 0  # the replay re-raised nothing
        await alarm(after, second, "a2")
        pairs = [a for a in (await after.alerts.list()).items if a.rule_id == "fire.smoke_pair"]
        # The first detector's alarm came back from the event store, so the second one completes the pair.
        assert len(pairs) == 1
        assert pairs[0].building == building.id
    finally:
        await after.stop()
