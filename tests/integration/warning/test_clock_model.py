"""One clock model: the same stream replayed fast, paced in real time and delayed by an hour raises the same alerts
live (the warning service on the bus) and in the backtest over the stored events (real SQLite).

Time is driven, not slept: the service runs on a clock the test moves, and the test steps that clock to every wall
time the engine asks to be woken at (`next_deadline`), as the service's own timer loop would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safecity.kernel.bus import MemoryBus
from safecity.kernel.envelope import Envelope, make_envelope
from safecity.sensing.model import EventKind, SensorEvent, Tags, event_key
from safecity.store.engine import create_engine, upgrade
from safecity.store.events import EventRepo
from safecity.store.writer import EventWriter
from safecity.warning.backtest import backtest_firings
from safecity.warning.engine import Firing
from safecity.warning.model import AlertRaised
from safecity.warning.rules import RulePack, parse_pack
from safecity.warning.service import WarningService

T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
LATENESS_S = 10.0
SOURCE = "node-c001"  # a community node's stream, forwarded upward

PACK = """
rules:
  - id: hb.missing
    kind: absence
    title: {zh: 心跳缺失, en: Heartbeat missing}
    expect: {events: [heartbeat]}
    within: 90s
  - id: door.left_open
    kind: absence
    title: {zh: 门未关闭, en: Door left open}
    after: {events: [door], when: "state == 'open'"}
    expect: {events: [door], when: "state == 'closed'"}
    within: 3m
  - id: crowd.held
    kind: threshold
    title: {zh: 人群持续过密, en: Crowd dense for long}
    events: [crowd]
    when: value > 100.0
    hold: 2m
  - id: fire.pair
    kind: correlation
    title: {zh: 疑似火情, en: Suspected fire}
    group_by: building
    within: 60s
    require:
      - {events: [smoke], when: data.alarm == true, count: 2, distinct: device}
"""


@dataclass(frozen=True)
class Ev:
    """One event of the stream: seconds after T0, kind, device and what it says."""

    at: float
    kind: EventKind
    device: str
    state: str | None = None
    value: float | None = None
    alarm: bool | None = None


def stream() -> list[Ev]:
    """Ten minutes of a community: heartbeats (h2 stops at 240 s, h1 at 600 s), doors, a crowd, a smoke pair."""
    evs = [Ev(float(t), EventKind.HEARTBEAT, "h1") for t in range(0, 601, 30)]
    evs += [Ev(float(t) + 5, EventKind.HEARTBEAT, "h2") for t in range(0, 241, 30)]
    evs += [
        Ev(60, EventKind.DOOR, "g1", state="open"),
        Ev(120, EventKind.DOOR, "g1", state="closed"),  # closed in time: nothing
        Ev(200, EventKind.DOOR, "g2", state="open"),  # never closed: fires at 380 s
        Ev(100, EventKind.CROWD, "c1", value=150.0),
        Ev(160, EventKind.CROWD, "c1", value=40.0),  # broke the hold: nothing
        Ev(300, EventKind.CROWD, "c1", value=150.0),
        Ev(350, EventKind.CROWD, "c1", value=160.0),  # held from 300 s: fires at 420 s
        Ev(400, EventKind.SMOKE, "s1", alarm=True),
        Ev(410, EventKind.SMOKE, "s2", alarm=True),
    ]
    return sorted(evs, key=lambda e: (e.at, e.device))


def envelope(n: int, e: Ev, received: datetime) -> Envelope:
    """The bus message of event number `n` (same id in every run), received at `received`."""
    payload = SensorEvent(
        device_id=e.device,
        kind=e.kind,
        tags=Tags(town="t1", community="c1", building="b1", device_kind=str(e.kind)),
        state=e.state,
        value=e.value,
        data={"alarm": e.alarm} if e.alarm is not None else {},
    )
    at = T0 + timedelta(seconds=e.at)
    return make_envelope(
        event_key(e.kind), payload, source=SOURCE, occurred_at=at, received_at=received, envelope_id=f"01JZ{n:022d}"
    )


Alert = tuple[Any, ...]


def key_of(rule_id: str, group_key: str, new: bool, count: int, first: datetime, last: datetime, trig: Any) -> Alert:
    return (rule_id, group_key, new, count, first, last, tuple(trig))


def from_payload(env: Envelope) -> Alert:
    p = env.payload
    assert isinstance(p, AlertRaised)
    new = env.key == "alert.raised"
    return key_of(p.rule_id, p.group_key, new, p.count, p.first_at, p.last_at, p.trigger_event_ids)


def from_firing(f: Firing) -> Alert:
    return key_of(f.rule.id, f.group_key, f.new, f.count, f.first_at, f.last_at, f.trigger_event_ids)


class Clock:
    """The wall clock the service reads; the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def run_live(pack: RulePack, wall_of: Callable[[Ev], datetime], end: datetime) -> list[Alert]:
    """Publish the stream, each event at wall time `wall_of(e)`, stepping the clock through every timer on the way."""
    bus = MemoryBus()
    await bus.start()
    got: list[Envelope] = []

    async def keep(env: Envelope) -> None:
        got.append(env)

    await bus.subscribe("alert.>", keep)
    clock = Clock(wall_of(stream()[0]))
    service = WarningService(bus, pack, now=clock, lateness_s=LATENESS_S)
    await service.start()

    async def step_to(wall: datetime) -> None:
        # What the timer loop does while nothing arrives: wake at each deadline the engine names, fire it.
        while (due := service.engine.next_deadline()) is not None and due <= wall:
            clock.at = max(clock.at, due)
            await service.fire_due()
            await bus.drain()
        clock.at = max(clock.at, wall)

    for n, e in enumerate(stream()):
        await step_to(wall_of(e))
        await bus.publish(envelope(n, e, clock.at))
        await bus.drain()
    await step_to(end)
    await service.stop()
    await bus.close()
    return sorted(from_payload(env) for env in got)


async def run_backtest(pack: RulePack, db_url: str, wall_of: Callable[[Ev], datetime], end: datetime) -> list[Alert]:
    """Store the stream as it arrived (received_at = wall time), then backtest it."""
    await upgrade(db_url)
    engine = create_engine(db_url)
    try:
        async with EventWriter(engine, interval_ms=10, max_rows=500) as writer:
            for n, e in enumerate(stream()):
                await writer.add(envelope(n, e, wall_of(e)))
        repo = EventRepo(engine)
        firings = [f async for f in backtest_firings(pack, repo, T0 - timedelta(minutes=1), end, lateness_s=LATENESS_S)]
    finally:
        await engine.dispose()
    return sorted(from_firing(f) for f in firings)


EXPECTED = {  # rule -> (group, event time of the firing)
    ("hb.missing", "hb.missing:h2", T0 + timedelta(seconds=245 + 90)),
    ("door.left_open", "door.left_open:g2", T0 + timedelta(seconds=200 + 180)),
    ("crowd.held", "crowd.held:c1", T0 + timedelta(seconds=300 + 120)),
    ("fire.pair", "fire.pair:b1", T0 + timedelta(seconds=410)),
    ("hb.missing", "hb.missing:h1", T0 + timedelta(seconds=600 + 90)),  # the end of the stream: fired by silence
}

FAST_AT = T0 + timedelta(days=2)  # replayed two days later, as fast as it goes


def fast(_: Ev) -> datetime:
    return FAST_AT


def paced(e: Ev) -> datetime:
    return T0 + timedelta(seconds=e.at + 0.2)


def late(e: Ev) -> datetime:
    return T0 + timedelta(hours=1, seconds=e.at)


@pytest.mark.parametrize("stored", ["fast", "paced", "late"])
async def test_fast_paced_and_late_streams_raise_the_same_alerts_live_and_in_the_backtest(
    tmp_path: Path, stored: str
) -> None:
    pack = parse_pack(PACK, "clock.yaml")
    ways = {"fast": fast, "paced": paced, "late": late}
    end = {"fast": FAST_AT, "paced": T0, "late": T0 + timedelta(hours=1)}
    live = {name: await run_live(pack, wall_of, end[name] + timedelta(minutes=30)) for name, wall_of in ways.items()}
    assert {(a[0], a[1], a[5]) for a in live["paced"]} == EXPECTED
    assert all(a[2] for a in live["paced"])  # each fired once: no alert raised then updated by every late event
    assert live["fast"] == live["paced"] == live["late"]
    url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    replayed = await run_backtest(pack, url, ways[stored], end[stored] + timedelta(minutes=30))
    assert replayed == live["paced"]
