"""A delivery channel added from this module only: registered, it is accepted by the subscription model, checked,
masked, given its default target, delivered through the outbox, listed in the docs; unregistered, it is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from pydantic import ValidationError

from safecity import docs_gen
from safecity.kernel.bus import MemoryBus
from safecity.kernel.settings import NotifySettings
from safecity.store.engine import create_engine, upgrade
from safecity.warning.notify import channels
from safecity.warning.notify.channels import ChannelComponent, ChannelContext, InvalidSubscription
from safecity.warning.notify.outbox import Delivery, Sender
from safecity.warning.notify.service import NotifyConfig, NotifyService
from safecity.warning.notify.subscriptions import Subscription, SubscriptionCreate, masked_target
from tests.integration.warning.notify_helpers import make_alert, raise_alert, wait_for


@dataclass
class ToySender:
    """Keeps what it was asked to deliver."""

    sent: list[tuple[str, Delivery]] = field(default_factory=list)

    async def send(self, sub: Subscription, delivery: Delivery) -> None:
        self.sent.append((sub.target, delivery))


def _check(target: str, ctx: ChannelContext) -> None:
    if not target.startswith("toy:"):
        raise InvalidSubscription(reason="a toy target starts with toy:")


def _default(config: NotifySettings) -> str:
    return "toy:lobby"


def _mask(target: str) -> str:
    return "toy:***"


TOY_SENDER = ToySender()


def _sender(ctx: ChannelContext) -> Sender:
    return TOY_SENDER


TOY = ChannelComponent(
    key="toy",
    doc="Rings the toy bell named by the target (`toy:NAME`).",
    sender=_sender,
    check_target=_check,
    default_target=_default,
    mask_target=_mask,
)


@pytest.fixture
def toy() -> Iterator[ToySender]:
    TOY_SENDER.sent.clear()
    channels.register(TOY)
    try:
        yield TOY_SENDER
    finally:
        channels.unregister("toy")


@pytest.fixture
async def notify(sqlite_url: str, toy: ToySender) -> AsyncIterator[NotifyService]:
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    bus = MemoryBus()
    await bus.start()
    svc = NotifyService(engine, bus, NotifyConfig(backoff_base_s=0.05, backoff_max_s=0.2))
    await svc.start()
    yield svc
    await svc.stop()
    await bus.close()
    await engine.dispose()


async def test_a_toy_channel_delivers_end_to_end(notify: NotifyService, toy: ToySender) -> None:
    sub, secret = await notify.create(SubscriptionCreate(name="bell", channel="toy"))
    assert (sub.channel, sub.target, secret) == ("toy", "toy:lobby", None)
    assert masked_target(sub.channel, "toy:secret-bell") == "toy:***"
    with pytest.raises(InvalidSubscription):
        await notify.create(SubscriptionCreate(name="bad", channel="toy", target="http://example.test/"))

    alert = make_alert()
    await raise_alert(notify.bus, alert)
    await wait_for(lambda: len(toy.sent) == 1)
    target, delivery = toy.sent[0]
    assert target == "toy:lobby"
    assert delivery.body["alert"]["alert_id"] == alert.alert_id
    await wait_for(lambda: notify.dispatcher.stats.delivered == 1)
    [row] = await notify.deliveries(subscription_id=sub.id)
    assert row["state"] == "delivered"


def test_a_registered_channel_is_in_the_model_schema_and_docs(toy: ToySender) -> None:
    assert "toy" in SubscriptionCreate.model_json_schema()["properties"]["channel"]["enum"]
    assert "- **`toy`**: Rings the toy bell" in docs_gen.notify_channels()
    with pytest.raises(ValueError, match="already registered"):
        channels.register(TOY)


def test_an_unregistered_channel_is_refused() -> None:
    assert "toy" not in channels.CHANNELS
    with pytest.raises(ValidationError, match="unknown channel 'toy'"):
        SubscriptionCreate(name="bell", channel="toy")
    assert "toy" not in SubscriptionCreate.model_json_schema()["properties"]["channel"]["enum"]
    with pytest.raises(ValueError, match="not a registered plug-in channel"):
        channels.unregister("webhook")
