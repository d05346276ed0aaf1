"""A correlation alert over HTTP lists the devices that joined it and its completing message id; cooldown
suppressions show in /metrics. On SQLite and PostgreSQL (the alerts table's new columns are migrated on both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from safecity.kernel.envelope import Envelope, make_envelope
from safecity.sensing.model import EventKind, SensorEvent, Tags, event_key
from safecity.sharing.keys import Role

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)

PACK = """
rules:
  - id: fire.rooms
    kind: correlation
    title: {zh: 同一楼栋多个烟感报警, en: Smoke detectors alarm in one building}
    category: Fire
    severity: Severe
    group_by: building
    within: 60s
    cooldown: 300s
    group_window: 60s
    require:
      - {events: [smoke], when: data.alarm == true, count: 2, distinct: device}
"""


def smoke(device: str, seconds: float, message_id: str) -> Envelope:
    at = T0 + timedelta(seconds=seconds)
    payload = SensorEvent(
        device_id=device,
        kind=EventKind.SMOKE,
        tags=Tags(town="t1", community="c1", building="b1", device_kind="smoke"),
        message_id=message_id,
        state="alarm",
        data={"alarm": True},
    )
    return make_envelope(event_key(EventKind.SMOKE), payload, source="test", occurred_at=at, received_at=at)


async def test_alert_lists_its_detectors_and_message_id_over_http(
    db_url: str, app_factory: Any, key_headers: Any, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(PACK, encoding="utf-8")
    app, client = await app_factory(db_url, warning={"rules": str(rules)})
    runtime = app.state.runtime
    sent = [smoke("d1", 0, "m-1"), smoke("d2", 10, "m-2"), smoke("d3", 20, "m-3")]
    for env in sent:
        await runtime.bus.publish(env)
    await runtime.bus.drain()
    headers = await key_headers(app, Role.OPERATOR)
    page = (await client.get("/api/v1/alerts", headers=headers)).json()
    (alert,) = page["items"]
    detail: dict[str, Any] = (await client.get(f"/api/v1/alerts/{alert['id']}", headers=headers)).json()
    for body in (alert, detail):
        assert body["devices"] == ["d1", "d2", "d3"]
        assert [c["event_id"] for c in body["contributors"]] == [env.id for env in sent]
        assert body["trigger_message_id"] == "m-3"
        assert body["count"] == 2  # raised by d2, updated by d3
    assert datetime.fromisoformat(detail["contributors"][2]["at"]) == T0 + timedelta(seconds=20)

    # A new pair 100 s after the last firing is inside the cooldown: not raised, but counted where one can see it.
    await runtime.bus.publish(smoke("d4", 120, "m-4"))
    await runtime.bus.publish(smoke("d5", 125, "m-5"))
    await runtime.bus.drain()
    assert (await client.get("/api/v1/alerts", headers=headers)).json()["total"] == 1
    metrics = (await client.get("/metrics")).text
    assert 'safecity_warning_suppressed_total{reason="cooldown",rule="fire.rooms"} 1.0' in metrics
