"""Alerts carry the sender's message id of their completing event (the Node-RED contract's `trigger_id`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safecity.kernel.bus import MemoryBus
from safecity.kernel.envelope import Envelope, make_envelope
from safecity.sensing.model import EventKind, SensorEvent, Tags, event_key
from safecity.warning.model import AlertRaised
from safecity.warning.rules import load_builtin
from safecity.warning.service import WarningService

T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def smoke(device: str, at: datetime, message_id: str | None, *, alarm: bool, temp: float = 25.0) -> Envelope:
    """A smoke event of building b1 as the pipeline publishes it."""
    payload = SensorEvent(
        device_id=device,
        kind=EventKind.SMOKE,
        tags=Tags(town="t1", community="c1", building="b1", device_kind="smoke"),
        message_id=message_id,
        data={"alarm": alarm, "temp": temp},
    )
    return make_envelope(event_key(EventKind.SMOKE), payload, source="test", occurred_at=at, received_at=at)


async def test_alert_names_the_message_id_of_its_completing_event() -> None:
    bus = MemoryBus()
    await bus.start()
    alerts: list[AlertRaised] = []

    async def keep(env: Envelope) -> None:
        assert isinstance(env.payload, AlertRaised)
        alerts.append(env.payload)

    await bus.subscribe("alert.>", keep)
    service = WarningService(bus, load_builtin("nodered_peer"))
    await service.start()
    await bus.publish(smoke("d1", T0, "m-1", alarm=True))
    await bus.publish(smoke("d2", T0 + timedelta(seconds=5), "m-2", alarm=True))
    await bus.publish(smoke("d3", T0 + timedelta(seconds=6), None, alarm=False, temp=90.0))
    await bus.drain()
    await service.stop()
    by_rule = {a.rule_id: a for a in alerts}
    assert by_rule["peer.smoke_pair"].trigger_message_id == "m-2"
    assert by_rule["peer.high_temp"].trigger_message_id is None
    await bus.close()
