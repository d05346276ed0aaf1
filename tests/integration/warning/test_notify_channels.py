"""Channels against real receivers on loopback: MQTT (Mosquitto, QoS 1), e-mail (aiosmtpd via apprise mailto://),
chat (apprise json:// to a loopback HTTP server; WeCom/DingTalk/Feishu URLs are validated and their text rendered,
since their hosts are fixed in apprise and outside this machine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.header import decode_header, make_header

import aiomqtt
import orjson
import pytest
from aiosmtpd.controller import Controller

from safecity.kernel.bus import MemoryBus
from safecity.kernel.errors import InvalidInput
from safecity.store.engine import create_engine, upgrade
from safecity.warning.model import Severity
from safecity.warning.notify.chat import render
from safecity.warning.notify.service import NotifyConfig, NotifyService
from safecity.warning.notify.subscriptions import Channel, Locale, SubscriptionCreate
from tests.integration.warning.notify_helpers import (
    Inbox,
    free_port,
    http_receiver,
    make_alert,
    raise_alert,
    wait_for,
)


@pytest.fixture
async def notify(sqlite_url: str, mqtt_broker: tuple[str, int]) -> AsyncIterator[NotifyService]:
    """A started notify service on SQLite, pointed at the test broker."""
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    bus = MemoryBus()
    await bus.start()
    host, port = mqtt_broker
    cfg = NotifyConfig(allow_loopback=True, backoff_base_s=0.05, backoff_max_s=0.2, mqtt_host=host, mqtt_port=port)
    svc = NotifyService(engine, bus, cfg)
    await svc.start()
    yield svc
    await svc.stop()
    await bus.close()
    await engine.dispose()


async def test_mqtt_topic_by_severity_and_community(
    notify: NotifyService, mqtt_broker: tuple[str, int], unique_name: str
) -> None:
    prefix = f"test-{unique_name}/alerts"
    await notify.create(SubscriptionCreate(name="mqtt", channel=Channel.MQTT, target=prefix))
    host, port = mqtt_broker
    async with aiomqtt.Client(host, port, identifier=f"rx-{unique_name}") as client:
        await client.subscribe(f"{prefix}/#", qos=1)
        alert = make_alert(severity=Severity.EXTREME, community="c-07")
        await raise_alert(notify.bus, alert)
        async with asyncio.timeout(30):
            message = await anext(aiter(client.messages))
    assert str(message.topic) == f"{prefix}/extreme/c-07"
    assert message.qos == 1
    body = orjson.loads(message.payload)  # type: ignore[arg-type]
    assert body["type"] == "new"
    assert body["alert"]["alert_id"] == alert.alert_id
    assert body["alert"]["hops"]["delivered"]


async def test_email_through_apprise_to_local_smtp(notify: NotifyService) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = f"mailto://127.0.0.1:{port}?mode=insecure&from=alerts@safecity.test&to=duty@safecity.test"
        await notify.create(SubscriptionCreate(name="duty mail", channel=Channel.EMAIL, target=url, locale=Locale.EN))
        alert = make_alert()
        await raise_alert(notify.bus, alert)
        await wait_for(lambda: len(inbox.messages) == 1)
    finally:
        controller.stop()
    envelope = inbox.messages[0]
    assert envelope.rcpt_tos == ["duty@safecity.test"]
    mail = message_from_bytes(envelope.content)
    assert str(make_header(decode_header(mail["Subject"]))) == "Smoke alarm"
    text = mail.get_payload(decode=True) if not mail.is_multipart() else mail.get_payload(0).get_payload(decode=True)
    assert b"Severity: Severe" in text
    assert alert.alert_id.encode() in text


async def test_chat_through_apprise_json_to_loopback(notify: NotifyService) -> None:
    async with http_receiver(free_port()) as receiver:
        url = f"json://127.0.0.1:{receiver.port}/hook"
        await notify.create(SubscriptionCreate(name="group bot", channel=Channel.CHAT, target=url))
        await raise_alert(notify.bus, make_alert())
        await wait_for(lambda: len(receiver.requests) == 1)
    body = orjson.loads(receiver.requests[0][1])
    assert body["title"] == "烟感报警"
    assert "级别：严重" in body["message"]


async def test_chat_targets_are_checked(notify: NotifyService) -> None:
    for url in ("wecombot://abc123", "dingtalk://token123", "feishu://token123"):
        sub, secret = await notify.create(SubscriptionCreate(name=url, channel=Channel.CHAT, target=url))
        assert secret is None and sub.target == url
    with pytest.raises(InvalidInput):
        await notify.create(SubscriptionCreate(name="bad", channel=Channel.CHAT, target="mailto://x@y.z"))
    with pytest.raises(InvalidInput):
        await notify.create(SubscriptionCreate(name="bad", channel=Channel.CHAT, target="json://evil.example.com/x"))
    with pytest.raises(InvalidInput):
        await notify.create(SubscriptionCreate(name="bad", channel=Channel.WEBHOOK, target="http://evil.example.com/x"))


def test_messages_are_localized() -> None:
    import msgspec

    body = {"type": "escalation", "alert": msgspec.to_builtins(make_alert())}
    title_zh, text_zh = render(body, Locale.ZH)
    title_en, text_en = render(body, Locale.EN)
    assert title_zh == "【升级】烟感报警"
    assert title_en == "[Escalated] Smoke alarm"
    assert "地点：t-01 / c-01 / b-1" in text_zh
    assert "Place: t-01 / c-01 / b-1" in text_en
