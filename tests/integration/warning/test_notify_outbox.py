"""Outbox delivery on real SQLite and PostgreSQL: signed webhooks to loopback receivers, endpoint isolation, retries
then dead letters, restart durability, coalesced updates, escalation and its cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from safecity.kernel.bus import MemoryBus
from safecity.store.engine import create_engine, upgrade
from safecity.warning.notify.service import NotifyConfig, NotifyService
from safecity.warning.notify.subscriptions import Channel, SubscriptionCreate
from tests.integration.warning.notify_helpers import (
    acknowledge,
    free_port,
    http_receiver,
    make_alert,
    raise_alert,
    silent_server,
    wait_for,
)

FAST = {
    "allow_loopback": True,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.2,
    "poll_interval_s": 0.1,
}


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[dict[str, Any]]:
    """A migrated database, an engine and a bus; services made in a test are stopped after it."""
    await upgrade(db_url)
    engine = create_engine(db_url)
    bus = MemoryBus()
    await bus.start()
    services: list[NotifyService] = []

    async def service(**config: Any) -> NotifyService:
        svc = NotifyService(engine, bus, NotifyConfig(**{**FAST, **config}))
        await svc.start()
        services.append(svc)
        return svc

    yield {"engine": engine, "bus": bus, "service": service, "services": services}
    for svc in services:
        await svc.stop()
    await bus.close()
    await engine.dispose()


async def webhook(svc: NotifyService, url: str, name: str, **extra: Any) -> tuple[str, str]:
    sub, secret = await svc.create(SubscriptionCreate(name=name, channel=Channel.WEBHOOK, target=url, **extra))
    assert secret is not None and secret.startswith("whsec_")
    return sub.id, secret


async def rows(svc: NotifyService, sub_id: str) -> list[dict[str, Any]]:
    return await svc.deliveries(subscription_id=sub_id)


async def test_signed_webhooks_isolation_retries_and_dead_letters(env: dict[str, Any]) -> None:
    # A fixed 1 s limit (no growth after timeouts): the hung endpoint's rows die in 3 s each.
    svc = await env["service"](max_attempts=3, attempt_timeout_s=1.0, attempt_timeout_max_s=1.0)
    async with (
        http_receiver(free_port()) as good,
        http_receiver(free_port(), status=500) as failing,
        silent_server() as hung,
    ):
        good_id, secret = await webhook(svc, good.url, "good")
        failing_id, _ = await webhook(svc, failing.url, "answers 500")
        closed_id, _ = await webhook(svc, f"http://127.0.0.1:{free_port()}/hook", "closed port")
        hung_id, _ = await webhook(svc, f"http://127.0.0.1:{hung}/hook", "never answers")
        alerts = [make_alert() for _ in range(5)]
        for alert in alerts:
            await raise_alert(env["bus"], alert)

        await wait_for(lambda: len(good.requests) == 5)
        # Isolation: the good endpoint got everything while the hung one is still on its first attempts.
        hung_rows = await rows(svc, hung_id)
        assert any(r["state"] == "pending" for r in hung_rows)

        verifier = Webhook(secret)
        got = []
        for headers, body in good.requests:
            verified = verifier.verify(body, headers)
            assert verified["alert"]["hops"]["delivered"]
            got.append(verified["alert"]["alert_id"])
            assert headers["webhook-id"]
        assert sorted(got) == sorted(a.alert_id for a in alerts)
        with pytest.raises(Exception, match="No matching signature"):
            Webhook(secret).verify(good.requests[0][1].replace(b"Smoke", b"Smoky"), good.requests[0][0])

        async def all_dead() -> bool:
            states = [r["state"] for s in (failing_id, closed_id, hung_id) for r in await rows(svc, s)]
            return len(states) == 15 and set(states) == {"dead"}

        await wait_for(all_dead, 60)
        failing_rows = await rows(svc, failing_id)
        assert {r["last_error"] for r in failing_rows} == {"Delivery failed: HTTP 500"}
        assert max(r["attempts"] for r in failing_rows) == 3
        assert all("Connect" in r["last_error"] for r in await rows(svc, closed_id))
        assert all("Timeout" in r["last_error"] for r in await rows(svc, hung_id))
        good_rows = await rows(svc, good_id)
        assert {r["state"] for r in good_rows} == {"delivered"}
        assert all(r["delivered_at"] is not None and r["attempts"] == 1 for r in good_rows)
        # The 500 receiver was really asked, once per attempt (first attempt, then deferred rows retried).
        assert len(failing.requests) >= 3


async def test_a_slow_receiver_gets_one_webhook_id_and_is_delivered_not_dead(env: dict[str, Any]) -> None:
    # The receiver takes 0.6 s; the first attempt may take 0.2 s. Each attempt that times out was still handled.
    svc = await env["service"](max_attempts=5, attempt_timeout_s=0.2, attempt_timeout_max_s=5.0)
    async with http_receiver(free_port(), delay_s=0.6) as slow:
        sub_id, secret = await webhook(svc, slow.url, "slow")
        alert = make_alert()
        await raise_alert(env["bus"], alert)

        async def settled() -> bool:
            return any(r["state"] != "pending" for r in await rows(svc, sub_id))

        await wait_for(settled, 60)
        [row] = await rows(svc, sub_id)
        assert row["state"] == "delivered", row["last_error"]
        assert row["attempts"] >= 2  # the first attempt timed out
        # Every attempt reached the receiver with the same id and a valid signature: it can dedupe on `webhook-id`.
        assert len(slow.requests) == row["attempts"]
        assert {headers["webhook-id"] for headers, _ in slow.requests} == {row["id"]}
        verifier = Webhook(secret)
        assert {verifier.verify(body, headers)["alert"]["alert_id"] for headers, body in slow.requests} == {
            alert.alert_id
        }


async def test_pending_rows_survive_a_restart(env: dict[str, Any]) -> None:
    port = free_port()
    first = await env["service"](backoff_base_s=1.0, backoff_max_s=1.0, backoff_jitter=0.0, max_attempts=50)
    sub_id, secret = await webhook(first, f"http://127.0.0.1:{port}/hook", "comes back later")
    alert = make_alert()
    await raise_alert(env["bus"], alert)

    async def tried() -> bool:
        found = await rows(first, sub_id)
        return bool(found) and found[0]["attempts"] >= 1

    await wait_for(tried)
    await first.stop()
    env["services"].remove(first)
    assert (await rows(first, sub_id))[0]["state"] == "pending"

    async with http_receiver(port) as receiver:
        second = await env["service"]()
        await wait_for(lambda: len(receiver.requests) == 1)
        body = Webhook(secret).verify(receiver.requests[0][1], receiver.requests[0][0])
        assert body["alert"]["alert_id"] == alert.alert_id
        await wait_for(lambda: second.dispatcher.stats.delivered == 1)
        assert (await rows(second, sub_id))[0]["state"] == "delivered"


async def test_no_claim_per_delivery_and_no_wait_for_rows_queued_behind_a_busy_lane(env: dict[str, Any]) -> None:
    """Rows this node commits are leased to it at insert and handed to the dispatcher from memory: no claim
    transaction per delivery (there was one per commit before). A row committed while its subscription's lane was
    busy goes as soon as the lane is done, not at the next poll (30 s here)."""
    svc = await env["service"](poll_interval_s=30.0)
    async with http_receiver(free_port(), delay_s=0.3) as receiver:
        await webhook(svc, receiver.url, "slow endpoint")
        await wait_for(lambda: svc.dispatcher.stats.claims >= 1)  # the look at start-up
        before = svc.dispatcher.stats.claims
        for n in range(1, 4):
            await raise_alert(env["bus"], make_alert())
            await wait_for(lambda n=n: svc.dispatcher.stats.delivered == n)  # type: ignore[misc]
            await wait_for(lambda: svc.dispatcher.busy_lanes() == 0)  # the next alert must not arrive mid-lane
        assert svc.dispatcher.stats.claims - before == 0

        await raise_alert(env["bus"], make_alert())
        await wait_for(lambda: len(receiver.requests) == 4)  # the lane is sending (its answer takes 0.3 s)
        await raise_alert(env["bus"], make_alert())
        await wait_for(lambda: svc.dispatcher.stats.delivered == 5, 5)


async def test_a_slow_webhook_endpoint_gets_several_requests_at_once(env: dict[str, Any]) -> None:
    """A lane keeps `lane_in_flight` requests open to its endpoint (on as many kept-alive connections), not one."""
    svc = await env["service"](lane_in_flight=3)
    async with http_receiver(free_port(), delay_s=0.3) as receiver:
        sub_id, secret = await webhook(svc, receiver.url, "slow endpoint")
        alerts = [make_alert() for _ in range(12)]
        for alert in alerts:
            await raise_alert(env["bus"], alert)
        await wait_for(lambda: svc.dispatcher.stats.delivered == 12, 20)
        assert receiver.most == 3
        verifier = Webhook(secret)
        got = [verifier.verify(body, headers)["alert"]["alert_id"] for headers, body in receiver.requests]
        assert sorted(got) == sorted(a.alert_id for a in alerts)
        assert {r["state"] for r in await rows(svc, sub_id)} == {"delivered"}


async def test_redelivered_message_is_enqueued_once(env: dict[str, Any]) -> None:
    from safecity.kernel.envelope import make_envelope
    from safecity.warning.model import ALERT_RAISED

    svc = await env["service"]()
    async with http_receiver(free_port()) as receiver:
        sub_id, _ = await webhook(svc, receiver.url, "once")
        envelope = make_envelope(ALERT_RAISED, make_alert(), source="test")
        # The bus redelivers after a crash (at-least-once): the outbox id is derived, so the second is a no-op.
        await svc.handle(envelope)
        await svc.handle(envelope)
        await wait_for(lambda: len(receiver.requests) == 1)
        assert len(await rows(svc, sub_id)) == 1


async def test_filters_choose_subscriptions(env: dict[str, Any]) -> None:
    from safecity.warning.model import Severity
    from safecity.warning.notify.subscriptions import AreaFilter, CircleFilter, SubscriptionFilter

    svc = await env["service"]()
    async with http_receiver(free_port()) as near, http_receiver(free_port()) as far:
        flt_near = SubscriptionFilter(
            area=AreaFilter(circle=CircleFilter(lon=121.4705, lat=31.2305, radius_m=200)),
            min_severity=Severity.SEVERE,
            communities=["c-01"],
        )
        flt_far = SubscriptionFilter(area=AreaFilter(circle=CircleFilter(lon=121.60, lat=31.30, radius_m=200)))
        await webhook(svc, near.url, "near", filter=flt_near)
        await webhook(svc, far.url, "far", filter=flt_far)
        minor = make_alert(severity=Severity.MINOR)
        severe = make_alert()
        await raise_alert(env["bus"], minor)
        await raise_alert(env["bus"], severe)
        await wait_for(lambda: len(near.requests) == 1)
        await env["bus"].drain()
        assert orjson.loads(near.requests[0][1])["alert"]["alert_id"] == severe.alert_id
        assert far.requests == []


async def test_escalation_goes_to_next_responder_unless_acknowledged(env: dict[str, Any]) -> None:
    svc = await env["service"]()
    async with http_receiver(free_port()) as duty, http_receiver(free_port()) as chief:
        chief_id, _ = await webhook(svc, chief.url, "chief")
        duty_id, _ = await webhook(svc, duty.url, "duty officer", escalate_after_s=1.5, escalate_to=chief_id)
        ignored = make_alert()
        acked = make_alert()
        await raise_alert(env["bus"], ignored)
        await raise_alert(env["bus"], acked)
        await acknowledge(env["bus"], acked.alert_id)
        await wait_for(lambda: len(duty.requests) == 2)
        # The chief gets his own copies (he is subscribed too) and, later, the escalation of the ignored alert.

        def escalations() -> list[dict[str, Any]]:
            bodies = [orjson.loads(b) for _, b in chief.requests]
            return [b for b in bodies if b["type"] == "escalation"]

        await wait_for(lambda: len(escalations()) == 1)
        escalation = escalations()[0]
        assert escalation["alert"]["alert_id"] == ignored.alert_id
        assert escalation["escalated_from"] == duty_id
        chief_rows = await svc.deliveries(alert_id=acked.alert_id, subscription_id=chief_id)
        by_kind = {r["kind"]: r["state"] for r in chief_rows}
        assert by_kind["alert.escalated"] == "cancelled"
