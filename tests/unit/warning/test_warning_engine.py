"""Rule engine: every rule kind (positive and negative), grouping, cooldown, suppression, schedules, snapshots."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safecity.kernel.envelope import Envelope, make_envelope
from safecity.sensing.model import DEVICE_OFFLINE, DeviceKind, DeviceOffline, EventKind, SensorEvent, Tags, event_key
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning.engine import Engine, EventView
from safecity.warning.rules import RulePack, load_builtin, parse_pack

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)  # a Monday, 20:00 in Shanghai
KEY = Pseudonymizer(b"unit-test-pseudonym-key!")


def ev(
    kind: str,
    device: str,
    at: float,
    *,
    building: str | None = "b1",
    community: str = "c1",
    state: str | None = None,
    value: float | None = None,
    data: dict[str, Any] | None = None,
    lon: float | None = None,
    lat: float | None = None,
    plate: str | None = None,
) -> Envelope:
    """An `event.<kind>` envelope at T0 + `at` seconds."""
    payload = SensorEvent(
        device_id=device,
        kind=EventKind(kind),
        tags=Tags(town="t1", community=community, building=building, device_kind=kind),
        state=state,
        value=value,
        data=data or {},
        lon=lon,
        lat=lat,
        pseudonyms={"plate": KEY("plate", plate)} if plate else {},
    )
    when = T0 + timedelta(seconds=at)
    return make_envelope(event_key(EventKind(kind)), payload, source="test", occurred_at=when, received_at=when)


def pack(body: str) -> RulePack:
    """A pack from YAML rules (indented list items under `rules:`)."""
    return parse_pack(body, "test.yaml", pseudonymize=KEY)


def engine(body: str) -> Engine:
    counter = itertools.count(1)
    return Engine(pack(body), new_id=lambda: f"A{next(counter)}")


HEAD = "title: {zh: 测试, en: test}"

SMOKE_PAIR = f"""
rules:
  - id: pair
    kind: correlation
    {HEAD}
    group_by: building
    within: 60s
    cooldown: 300s
    group_window: 1s
    require:
      - events: [smoke]
        when: data.alarm == true
        count: 2
        distinct: device
"""


def alarm(device: str, at: float, building: str = "b1", alarm: bool = True) -> Envelope:
    return ev("smoke", device, at, building=building, data={"alarm": alarm}, state="alarm" if alarm else "normal")


def test_correlation_fires_on_the_completing_event_of_two_different_detectors() -> None:
    e = engine(SMOKE_PAIR)
    assert e.process(alarm("d1", 0)) == []
    assert e.process(alarm("d1", 10)) == []  # the same detector twice is not a pair
    second = alarm("d2", 50)
    (f,) = e.process(second)
    assert f.new and f.rule.id == "pair" and f.group_key == "pair:b1"
    assert f.trigger_event_ids[-1] == second.id and len(f.trigger_event_ids) == 2
    assert f.event is not None and f.event.id == second.id


def test_correlation_negative_cases() -> None:
    e = engine(SMOKE_PAIR)
    assert e.process(alarm("d1", 0)) == []
    assert e.process(alarm("d2", 61)) == []  # 61 s apart: outside the window
    assert e.process(alarm("d3", 0, building="b2")) == []
    assert e.process(alarm("d4", 5, building="b3")) == []  # other building
    assert e.process(alarm("d5", 130, alarm=False)) == []  # no alarm
    assert e.stats.fired == 0


def test_correlation_cooldown_suppresses_then_fires_again_after_it() -> None:
    e = engine(SMOKE_PAIR)
    e.process(alarm("d1", 0))
    assert len(e.process(alarm("d2", 10))) == 1
    assert e.process(alarm("d3", 20)) == []  # inside the 300 s cooldown
    assert e.stats.suppressed == 1
    e.process(alarm("d1", 400))
    (f,) = e.process(alarm("d2", 410))
    assert f.new and f.alert_id == "A2"


def test_correlation_of_several_kinds() -> None:
    e = engine(f"""
rules:
  - id: combo
    kind: correlation
    {HEAD}
    group_by: community
    within: 2m
    require:
      - {{events: [smoke], when: "state == 'alarm'"}}
      - {{events: [door], when: "state == 'open'"}}
      - {{events: [crowd], when: "value > 100.0"}}
""")
    assert e.process(ev("smoke", "s1", 0, state="alarm")) == []
    assert e.process(ev("door", "g1", 30, state="closed")) == []
    assert e.process(ev("door", "g1", 40, state="open")) == []
    assert e.process(ev("crowd", "c1", 50, value=20.0)) == []
    (f,) = e.process(ev("crowd", "c1", 60, value=150.0))
    assert f.group_key == "combo:c1" and len(f.trigger_event_ids) == 3


def test_threshold_single_repeat_and_hold() -> None:
    e = engine(f"""
rules:
  - id: hot
    kind: threshold
    {HEAD}
    events: [smoke]
    when: has(data.temp) && double(data.temp) > 70.0
  - id: thrice
    kind: threshold
    {HEAD}
    events: [door]
    when: state == "open"
    count: 3
    within: 5m
  - id: held
    kind: threshold
    {HEAD}
    events: [crowd]
    when: value > 100.0
    hold: 2m
""")
    assert e.process(ev("smoke", "s1", 0, data={"temp": 70})) == []  # not above 70
    assert e.process(ev("smoke", "s1", 1, data={})) == []
    assert [f.rule.id for f in e.process(ev("smoke", "s1", 2, data={"temp": 71.5}))] == ["hot"]
    for at in (0, 100, 400):  # three opens, but over more than 5 minutes
        assert e.process(ev("door", "g1", at, state="open")) == []
    assert e.process(ev("door", "g1", 410, state="open")) == []
    (f,) = e.process(ev("door", "g1", 420, state="open"))
    assert f.rule.id == "thrice" and len(f.trigger_event_ids) == 3
    assert e.process(ev("crowd", "c1", 0, value=150.0)) == []
    assert e.process(ev("crowd", "c1", 60, value=90.0)) == []  # dropped below: the hold restarts
    assert e.process(ev("crowd", "c1", 70, value=150.0)) == []
    assert e.process(ev("crowd", "c1", 150, value=150.0)) == []
    (f,) = e.process(ev("crowd", "c1", 190, value=160.0))
    assert f.rule.id == "held"


def test_hold_fires_from_the_timer_without_a_further_event() -> None:
    e = engine(f"""
rules:
  - id: held
    kind: threshold
    {HEAD}
    events: [crowd]
    when: value > 100.0
    hold: 2m
""")
    e.process(ev("crowd", "c1", 0, value=150.0))
    assert e.next_deadline() == T0 + timedelta(minutes=2)
    assert e.due(T0 + timedelta(seconds=119)) == []
    (f,) = e.due(T0 + timedelta(seconds=121))
    assert f.event is None and f.rule.id == "held"


ABSENCE = f"""
rules:
  - id: quiet
    kind: absence
    {HEAD}
    expect: {{events: [heartbeat]}}
    within: 5m
  - id: left_open
    kind: absence
    {HEAD}
    after: {{events: [door], when: "state == 'open'"}}
    expect: {{events: [door], when: "state == 'closed'"}}
    within: 3m
"""


def test_absence_fires_when_the_expected_event_is_missing() -> None:
    e = engine(ABSENCE)
    e.process(ev("heartbeat", "h1", 0))
    e.process(ev("heartbeat", "h1", 200))  # re-arms to 500
    assert e.due(T0 + timedelta(seconds=400)) == []
    (f,) = e.due(T0 + timedelta(seconds=501))
    assert f.rule.id == "quiet" and f.group_key == "quiet:h1"
    assert e.due(T0 + timedelta(seconds=2000)) == []  # fires once


def test_absence_after_a_trigger_and_its_negative_case() -> None:
    e = engine(ABSENCE)
    e.process(ev("door", "g1", 0, state="open"))
    e.process(ev("door", "g1", 100, state="closed"))  # closed in time
    e.process(ev("door", "g2", 0, state="open"))
    firings = e.due(T0 + timedelta(minutes=10))
    assert [f.group_key for f in firings] == ["left_open:g2"]


def test_sequence_in_order_within_the_window() -> None:
    body = f"""
rules:
  - id: seq
    kind: sequence
    {HEAD}
    group_by: building
    within: 2m
    steps:
      - {{events: [door], when: "state == 'open'"}}
      - {{events: [smoke], when: "state == 'alarm'"}}
"""
    e = engine(body)
    assert e.process(ev("smoke", "s1", 0, state="alarm")) == []  # B before A: nothing
    assert e.process(ev("door", "g1", 10, state="open")) == []
    (f,) = e.process(ev("smoke", "s1", 60, state="alarm"))
    assert f.rule.id == "seq"
    e2 = engine(body)
    e2.process(ev("door", "g1", 0, state="open"))
    assert e2.process(ev("smoke", "s1", 200, state="alarm")) == []  # too late


ZONE = "[[121.0, 31.0], [121.1, 31.0], [121.1, 31.1], [121.0, 31.1]]"


@pytest.mark.parametrize("trigger", ["enter", "exit", "dwell"])
def test_geofence(trigger: str) -> None:
    extra = "dwell: 5m" if trigger == "dwell" else ""
    e = engine(f"""
rules:
  - id: fence
    kind: geofence
    {HEAD}
    events: [parking]
    when: state == "occupied"
    zone: {{name: lane, polygon: {ZONE}}}
    trigger: {trigger}
    {extra}
""")
    out = lambda at, state="occupied": ev("parking", "p1", at, state=state, lon=121.2, lat=31.05)  # noqa: E731
    inn = lambda at, state="occupied": ev("parking", "p1", at, state=state, lon=121.05, lat=31.05)  # noqa: E731
    assert e.process(out(0)) == []
    entered = e.process(inn(10))
    assert [f.rule.id for f in entered] == (["fence"] if trigger == "enter" else [])
    if trigger == "enter":
        assert entered[0].area is not None and entered[0].area.polygon is not None
    assert e.process(inn(100)) == []
    dwelt = e.process(inn(400))
    assert len(dwelt) == (1 if trigger == "dwell" else 0)
    left = e.process(inn(500, state="free"))  # free counts as outside
    assert len(left) == (1 if trigger == "exit" else 0)


def test_geofence_dwell_fires_from_the_timer() -> None:
    e = engine(f"""
rules:
  - id: fence
    kind: geofence
    {HEAD}
    events: [parking]
    zone: {{name: lane, polygon: {ZONE}}}
    trigger: dwell
    dwell: 2m
""")
    e.process(ev("parking", "p1", 0, lon=121.05, lat=31.05))
    (f,) = e.due(T0 + timedelta(minutes=3))
    assert f.area is not None and f.area.description == "lane"


HOT = f"""
watchlists:
  stolen: {{values: [沪A12345]}}
rules:
  - id: hot
    kind: hotlist
    {HEAD}
    watchlist: stolen
"""


def test_hotlist_matches_the_pseudonym_and_keeps_no_clear_plate() -> None:
    p = pack(HOT)
    assert "沪A12345" not in p.spec.model_dump_json()
    e = Engine(p)
    assert e.process(ev("checkpoint", "k1", 0, plate="沪B00000")) == []
    (f,) = e.process(ev("checkpoint", "k1", 1, plate="沪A12345"))
    assert f.rule.id == "hot" and "沪A12345" not in f.group_key
    (g,) = e.process(ev("checkpoint", "k2", 30, plate="沪A12345"))
    assert not g.new and g.count == 2 and g.alert_id == f.alert_id


def test_hotlist_with_another_key_does_not_match() -> None:
    other = parse_pack(HOT, "t.yaml", pseudonymize=Pseudonymizer(b"another-key-000000"))
    assert Engine(other).process(ev("checkpoint", "k1", 1, plate="沪A12345")) == []


def test_trend_rise_over_the_window() -> None:
    e = engine(f"""
rules:
  - id: surge
    kind: trend
    {HEAD}
    events: [crowd]
    rise_pct: 50
    over: 10m
    min_value: 10
""")
    assert e.process(ev("crowd", "c1", 0, value=100.0)) == []
    assert e.process(ev("crowd", "c1", 60, value=140.0)) == []  # +40 %
    (f,) = e.process(ev("crowd", "c1", 120, value=151.0))
    assert f.rule.id == "surge"
    e2 = engine(f"""
rules:
  - id: surge
    kind: trend
    {HEAD}
    events: [crowd]
    rise_pct: 50
    over: 10m
""")
    e2.process(ev("crowd", "c1", 0, value=100.0))
    assert e2.process(ev("crowd", "c1", 700, value=200.0)) == []  # the low point left the window


def test_grouping_updates_one_alert_with_a_counter() -> None:
    e = engine(f"""
rules:
  - id: hot
    kind: threshold
    {HEAD}
    events: [smoke]
    when: state == "alarm"
    group_by: building
    group_window: 5m
""")
    first = e.process(ev("smoke", "s1", 0, state="alarm"))[0]
    second = e.process(ev("smoke", "s2", 60, state="alarm"))[0]
    assert first.new and not second.new and second.alert_id == first.alert_id and second.count == 2
    assert second.first_at == T0 and second.last_at == T0 + timedelta(seconds=60)
    third = e.process(ev("smoke", "s1", 60 + 301, state="alarm"))[0]
    assert third.new and third.alert_id != first.alert_id and third.count == 1


def test_suppressed_by_another_rule_open_alert() -> None:
    e = engine(f"""
rules:
  - id: pair
    kind: correlation
    {HEAD}
    group_by: building
    within: 60s
    require: [{{events: [smoke], when: "state == 'alarm'", count: 2, distinct: device}}]
  - id: single
    kind: threshold
    {HEAD}
    events: [smoke]
    when: state == "alarm"
    group_by: building
    suppressed_by: [pair]
""")
    assert [f.rule.id for f in e.process(ev("smoke", "s1", 0, state="alarm"))] == ["single"]
    assert [f.rule.id for f in e.process(ev("smoke", "s2", 10, state="alarm"))] == ["pair"]
    (update,) = e.process(ev("smoke", "s3", 20, state="alarm"))
    assert update.rule.id == "pair" and not update.new and update.count == 2
    assert e.stats.suppressed == 2  # "single" on s2 and s3
    assert [f.rule.id for f in e.process(ev("smoke", "s9", 20, building="b9", state="alarm"))] == ["single"]


def test_schedule_by_time_weekday_and_holiday() -> None:
    body = f"""
calendars:
  holidays: [2026-03-03]
rules:
  - id: night
    kind: threshold
    {HEAD}
    events: [door]
    when: state == "open"
    schedule: {{from: "22:00", to: "06:00", tz: Asia/Shanghai, days: [mon, tue, wed, thu, fri],
                calendar: holidays, holidays: disarmed}}
"""
    e = engine(body)
    # T0 is Monday 20:00 in Shanghai: not armed yet.
    assert e.process(ev("door", "g1", 0, state="open")) == []
    # Monday 23:00: armed.
    assert len(e.process(ev("door", "g2", 3 * 3600, state="open"))) == 1
    # Tuesday 02:00 still belongs to Monday night: armed.
    assert len(e.process(ev("door", "g3", 6 * 3600, state="open"))) == 1
    # Tuesday 23:00 is a holiday night: disarmed.
    assert e.process(ev("door", "g4", 27 * 3600, state="open")) == []
    # Saturday 23:00: not a listed weekday.
    assert e.process(ev("door", "g5", (5 * 24 + 3) * 3600, state="open")) == []
    assert e.stats.unscheduled == 3


def test_scope_limits_a_rule_to_communities() -> None:
    e = engine(f"""
rules:
  - id: scoped
    kind: threshold
    {HEAD}
    events: [door]
    scope: {{communities: [c2]}}
""")
    assert e.process(ev("door", "g1", 0)) == []
    assert len(e.process(ev("door", "g1", 1, community="c2"))) == 1


def test_device_offline_rule_of_the_default_pack() -> None:
    e = Engine(load_builtin("default", pseudonymize=KEY))
    payload = DeviceOffline(
        device_id="d1", kind=DeviceKind.SMOKE, tags=Tags(community="c1"), last_seen=None, deadline=T0
    )
    (f,) = e.process(make_envelope(DEVICE_OFFLINE, payload, source="test", occurred_at=T0, received_at=T0))
    assert f.rule.id == "infra.device_offline"


def test_snapshot_restore_keeps_open_windows_and_timers() -> None:
    body = SMOKE_PAIR + ABSENCE.replace("rules:\n", "")
    p = pack(body)
    e = Engine(p)
    e.process(alarm("d1", 0))
    e.process(ev("heartbeat", "h1", 0))
    blob = e.snapshot()
    restored = Engine.restore(pack(body), blob)
    assert restored.stats.restored_rules == 3 and restored.open_windows() == e.open_windows()
    (f,) = restored.process(alarm("d2", 30))  # pairs with the alarm seen before the restart
    assert f.rule.id == "pair"
    assert [x.rule.id for x in restored.due(T0 + timedelta(minutes=6))] == ["quiet"]
    # A changed rule starts clean.
    changed = Engine.restore(pack(body.replace("within: 60s", "within: 90s")), blob)
    assert changed.stats.dropped_rules == 1 and changed.process(alarm("d2", 30)) == []


def test_state_is_bounded_and_evictions_are_counted() -> None:
    e = Engine(pack(SMOKE_PAIR), max_keys=10)
    for i in range(50):
        e.process(alarm("d1", i, building=f"b{i}"))
    assert e.open_windows() == 10 and e.stats.evicted_keys == 40


def test_condition_errors_count_as_no_match() -> None:
    e = engine(f"""
rules:
  - id: v
    kind: threshold
    {HEAD}
    events: [crowd]
    when: value > 10.0
""")
    assert e.process(ev("crowd", "c1", 0, value=None)) == []
    assert e.stats.condition_errors == 1


def test_event_view_from_row_matches_the_envelope() -> None:
    env = ev("smoke", "s1", 0, data={"alarm": True}, lon=121.0, lat=31.0)
    p = env.payload
    row = {
        "id": env.id, "key": env.key, "occurred_at": env.occurred_at, "device_id": p.device_id,
        "town": "t1", "community": "c1", "building": "b1", "device_kind": "smoke", "lon": 121.0, "lat": 31.0,
        "value": None, "state": None, "data": {"alarm": True}, "pseudonyms": {}, "source": "test",
    }  # fmt: skip
    a, b = EventView.from_envelope(env), EventView.from_row(row)
    assert a.cel() == b.cel() and a.t == b.t


FIRE_ROOMS = f"""
rules:
  - id: fire
    kind: correlation
    {HEAD}
    group_by: building
    within: 60s
    cooldown: 300s
    group_window: 60s
    require:
      - events: [smoke]
        when: data.alarm == true
        count: 2
        distinct: device
"""


def test_a_third_detector_in_the_window_updates_the_open_alert_and_joins_it() -> None:
    """Cooldown holds back new alerts only: the third detector updates the open alert and is listed on it."""
    e = engine(FIRE_ROOMS)
    first = alarm("d1", 0)
    assert e.process(first) == []
    second = alarm("d2", 10)
    (raised,) = e.process(second)
    assert raised.new and [c[:2] for c in raised.contributors] == [("d1", first.id), ("d2", second.id)]
    third = alarm("d3", 20)
    (update,) = e.process(third)
    assert not update.new and update.alert_id == raised.alert_id and update.count == 2
    assert [c[:2] for c in update.contributors] == [("d1", first.id), ("d2", second.id), ("d3", third.id)]
    assert update.contributors[2][2] == T0 + timedelta(seconds=20)
    # The same detector again adds no device; the alert is still updated (count is of firings).
    (again,) = e.process(alarm("d2", 30))
    assert again.count == 3 and [c[0] for c in again.contributors] == ["d1", "d2", "d3"]
    assert e.stats.suppressed == 0


def test_cooldown_suppresses_a_new_alert_and_counts_it_per_rule() -> None:
    e = engine(FIRE_ROOMS)
    e.process(alarm("d1", 0))
    (raised,) = e.process(alarm("d2", 10))
    e.process(alarm("d3", 100))  # the window holds only d3 (d1, d2 are 90 s old): no pair
    assert e.process(alarm("d4", 110)) == []  # a pair 100 s after the last firing: a new alert, in the cooldown
    assert e.stats.suppressed_by_rule == {"fire": {"cooldown": 1}} and e.stats.suppressed == 1
    e.process(alarm("d5", 400))
    (later,) = e.process(alarm("d6", 410))
    assert later.new and later.alert_id != raised.alert_id
    assert [c[0] for c in later.contributors] == ["d5", "d6"]


def test_absence_timers_follow_the_source_watermark_not_the_wall_clock() -> None:
    """Heartbeats an hour old arriving now raise nothing at once; the timer fires when the source's event time (or its
    silence) passes the deadline, at the deadline in event time."""
    e = Engine(pack(ABSENCE), lateness=10.0)
    wall = T0 + timedelta(hours=1)
    for at in (0, 200):
        (env,) = [ev("heartbeat", "h1", at)]
        assert e.process(env, arrived=(wall + timedelta(seconds=at)).timestamp()) == []
        assert e.due(wall + timedelta(seconds=at)) == []  # old code: the 5 min deadline passed an hour ago
    # Another device of the same source moves its watermark past h1's deadline (200 s + 5 min) + lateness.
    assert e.process(ev("heartbeat", "h2", 505), arrived=(wall + timedelta(seconds=505)).timestamp()) == []
    (f,) = e.process(ev("heartbeat", "h2", 511), arrived=(wall + timedelta(seconds=511)).timestamp())
    assert f.group_key == "quiet:h1" and f.last_at == T0 + timedelta(seconds=500)
    # A late heartbeat of h1 (behind the watermark) arms no timer that would fire at once.
    assert e.process(ev("heartbeat", "h1", 100), arrived=(wall + timedelta(seconds=512)).timestamp()) == []
    assert e.stats.behind_watermark == 1 and e.stats.late_timers == 1
    # Silence: nothing more arrives after wall + 512 s; h2's timer (511 s + 5 min) fires once the wall clock has run
    # on as far past the last arrival as the deadline lies past the newest event, plus the lateness.
    assert e.due(wall + timedelta(seconds=512 + 300 + 9)) == []
    (g,) = e.due(wall + timedelta(seconds=512 + 300 + 10))
    assert g.group_key == "quiet:h2" and g.last_at == T0 + timedelta(seconds=811)
