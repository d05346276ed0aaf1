"""The dispatch service on SQLite and PostgreSQL with a real in-process bus and a real road network: the whole loop
with every stage time, one winner when two dispatchers send one unit, diversion to a department and its outcome,
duplicates, pre-emption, positions, alerts opening incidents, SLA breaches and KPIs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.dispatch import service as service_module
from safecity.dispatch.incident import (
    BadPosition,
    IncidentDraft,
    IncidentNotFound,
    MergeTargetClosed,
    ResponderBusy,
    ResponderNotFound,
    StepIn,
)
from safecity.dispatch.lifecycle import Action, InvalidTransition, Stage
from safecity.dispatch.recommend import ResponderStatus
from safecity.dispatch.responders import ResponderIn
from safecity.dispatch.service import DispatchService
from safecity.dispatch.sla import start_windows
from safecity.dispatch.travel import RoadTravel
from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.service import RoadService
from safecity.geo.road.synthetic import synthetic_network
from safecity.kernel.bus import MemoryBus
from safecity.kernel.dispatch_settings import DedupeSettings, DispatchSettings, SlaSettings, Target
from safecity.kernel.envelope import Envelope, make_envelope
from safecity.kernel.settings import RoadSettings
from safecity.sensing.model import EventKind, SensorEvent, Tags, event_key
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.store.engine import create_engine, upgrade
from safecity.store.incidents import IncidentRepo
from safecity.store.tables import incidents
from safecity.warning.alerts import AlertService
from safecity.warning.model import (
    ALERT_RAISED,
    AlertRaised,
    Area,
    Category,
    Certainty,
    Circle,
    Severity,
    Text,
    Urgency,
)
from safecity.warning.rules import load_builtin
from safecity.warning.service import WarningService

T0 = datetime(2026, 12, 3, 8, tzinfo=UTC)
CENTER = (121.25, 31.37)
ROADS = RoadSettings(synthetic=True, synthetic_nodes=2_500, synthetic_center=CENTER)


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    return synthetic_network(2_500, center=CENTER, spacing_m=ROADS.synthetic_spacing_m)


@pytest.fixture
async def roads(graph: RoadGraph) -> AsyncIterator[RoadService]:
    service = RoadService(ROADS)
    service.preload(graph)
    await service.start()
    yield service
    await service.close()


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(db_url)
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus()
    await bus.start()
    yield bus
    await bus.close()


def make_service(
    engine: AsyncEngine, bus: MemoryBus, roads: RoadService | None = None, **settings: object
) -> DispatchService:
    return DispatchService(
        engine,
        bus,
        DispatchSettings(**settings),  # type: ignore[arg-type]
        pseudonymize=Pseudonymizer(b"k" * 32),
        link_key=b"l" * 32,
        travel=RoadTravel(roads) if roads is not None else None,
    )


def unit(uid: str, *, lon: float | None = None, lat: float | None = None, caps: str = "patrol fire") -> ResponderIn:
    return ResponderIn(
        id=uid, kind="police", unit_type="car", station="anting-ps", capabilities=caps.split(), lon=lon, lat=lat
    )  # type: ignore[arg-type]


def call(kind: str = "fire", **changes: object) -> IncidentDraft:
    fields: dict[str, object] = {
        "type": kind,
        "lon": 121.251,
        "lat": 31.371,
        "summary": "smoke",
        "caller": "13800138000",
    }
    fields.update(changes)
    return IncidentDraft(**fields)  # type: ignore[arg-type]


async def collect(bus: MemoryBus, pattern: str) -> list[Envelope]:
    seen: list[Envelope] = []

    async def keep(env: Envelope) -> None:
        seen.append(env)

    await bus.subscribe(pattern, keep)
    return seen


async def test_the_whole_loop_keeps_every_stage_time_and_frees_the_unit(engine: AsyncEngine, bus: MemoryBus) -> None:
    service = make_service(engine, bus)
    changes = await collect(bus, "incident.>")
    statuses = await collect(bus, "responder.status_changed")
    await service.import_responders([unit("car-1")])
    opened = await service.open(call(), actor="op:1", now=T0)
    assert opened.incident.stage is Stage.TRIAGED and opened.incident.priority == 1  # the triage table's fire line
    incident_id = opened.incident.id
    steps = [
        (StepIn(action=Action.DISPATCH, unit_id="car-1"), "dispatched_at"),
        (StepIn(action=Action.DEPART), "en_route_at"),
        (StepIn(action=Action.ARRIVE), "on_scene_at"),
        (StepIn(action=Action.DISPOSE, disposition="extinguished"), "disposed_at"),
        (StepIn(action=Action.CLOSE, feedback="caller thanked the crew"), "closed_at"),
    ]
    for i, (step, stamp) in enumerate(steps, start=1):
        incident = await service.act(incident_id, step, actor="op:1", now=T0 + timedelta(minutes=i))
        assert getattr(incident, stamp) == T0 + timedelta(minutes=i)
    assert incident.stage is Stage.CLOSED and incident.triaged_at == T0 and incident.unit_id == "car-1"
    history = await service.history(incident_id)
    assert [s.action for s in history] == ["open", "triage", "dispatch", "depart", "arrive", "dispose", "close"]
    assert history[-1].note == "caller thanked the crew" and history[2].unit_id == "car-1"
    assert (await service.responder("car-1")).status is ResponderStatus.AVAILABLE
    [assignment] = await service.assignments(incident_id)
    assert assignment["outcome"] == "disposed" and assignment["released_at"] == T0 + timedelta(minutes=4)
    await bus.drain()
    assert [e.payload.type for e in changes if e.key == "incident.changed"] == ["new"] + ["update"] * 5 + ["end"]  # type: ignore[attr-defined]
    assert [e.payload.status.value for e in statuses] == ["dispatched", "en_route", "on_scene", "available"]  # type: ignore[attr-defined]


async def test_the_caller_number_is_kept_only_as_a_pseudonym(engine: AsyncEngine, bus: MemoryBus) -> None:
    service = make_service(engine, bus)
    opened = await service.open(call(caller="+86 138-0013-8000"), actor="op:1", now=T0)
    assert opened.incident.caller == Pseudonymizer(b"k" * 32)("caller", "+86 138-0013-8000")
    async with engine.connect() as conn:
        for table in ("incidents", "incident_steps"):
            dump = " ".join(str(r) for r in (await conn.execute(text(f"SELECT * FROM {table}"))).all())
            assert "138" not in dump.replace(opened.incident.caller or "", "")


async def test_two_dispatchers_sending_one_unit_at_once_get_one_success_and_one_409(
    engine: AsyncEngine, bus: MemoryBus
) -> None:
    service = make_service(engine, bus)
    await service.import_responders([unit("car-7")])
    first = (await service.open(call(lon=121.20, lat=31.30), actor="op:1", now=T0)).incident
    second = (await service.open(call(kind="dispute", lon=121.30, lat=31.40), actor="op:2", now=T0)).incident
    results = await asyncio.gather(
        service.act(first.id, StepIn(action=Action.DISPATCH, unit_id="car-7"), actor="op:1"),
        service.act(second.id, StepIn(action=Action.DISPATCH, unit_id="car-7"), actor="op:2"),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    refusals = [r for r in results if isinstance(r, ResponderBusy)]
    assert len(wins) == 1 and len(refusals) == 1, results
    assert refusals[0].status == 409
    assert refusals[0].extensions["assignment"]["incident_id"] == wins[0].id
    loser = second if wins[0].id == first.id else first
    assert (await service.get(loser.id)).stage is Stage.TRIAGED  # the refused step left nothing behind


async def test_a_refused_action_names_the_allowed_ones_and_changes_nothing(engine: AsyncEngine, bus: MemoryBus) -> None:
    service = make_service(engine, bus)
    incident = (await service.open(call(), actor="op:1", now=T0)).incident
    with pytest.raises(InvalidTransition) as refused:
        await service.act(incident.id, StepIn(action=Action.ARRIVE), actor="op:1")
    assert refused.value.status == 409 and "dispatch" in refused.value.extensions["allowed"]
    with pytest.raises(ResponderNotFound):
        await service.act(incident.id, StepIn(action=Action.DISPATCH, unit_id="nobody"), actor="op:1")
    after = await service.get(incident.id)
    assert after.version == incident.version and after.stage is Stage.TRIAGED


async def test_a_department_matter_is_diverted_and_its_outcome_closes_the_incident(
    engine: AsyncEngine, bus: MemoryBus
) -> None:
    service = make_service(engine, bus)
    incident = (await service.open(call("water_leak", summary="pipe burst"), actor="op:1", now=T0)).incident
    assert incident.stage is Stage.DIVERTED and incident.service_code == "water.leak" and incident.department == "water"
    closed = await service.department_update(
        incident.id, status="closed", notes="valve replaced", agency="water", now=T0 + timedelta(hours=2)
    )
    assert closed.stage is Stage.CLOSED and closed.closed_at == T0 + timedelta(hours=2)
    history = await service.history(incident.id)
    assert history[-1].actor == "department:water" and history[-1].note == "valve replaced"


async def test_a_duplicate_is_proposed_and_an_automatic_type_is_merged_keeping_both_histories(
    engine: AsyncEngine, bus: MemoryBus
) -> None:
    service = make_service(engine, bus)
    first = (await service.open(call(), actor="op:1", now=T0)).incident
    proposed = await service.open(call(lon=121.2512), actor="op:2", now=T0 + timedelta(minutes=2))
    assert [p.into for p in proposed.proposals] == [first.id] and proposed.incident.stage is Stage.TRIAGED
    far = await service.open(call(lon=121.30), actor="op:2", now=T0 + timedelta(minutes=3))
    assert far.proposals == []

    auto = make_service(engine, bus, dedupe=DedupeSettings(auto_merge_types=frozenset({"fire"})))
    merged = await auto.open(call(lon=121.2511), actor="op:3", now=T0 + timedelta(minutes=4))
    assert merged.incident.stage is Stage.MERGED and merged.incident.merged_into == first.id
    survivor = await service.history(first.id)
    assert survivor[-1].action == "absorb" and survivor[-1].evidence[0].ref == merged.incident.id
    assert [s.action for s in await service.history(merged.incident.id)] == ["open", "merge"]
    await service.act(first.id, StepIn(action=Action.CANCEL, reason="false alarm"), actor="op:1")
    with pytest.raises(MergeTargetClosed):
        await service.act(far.incident.id, StepIn(action=Action.MERGE, merged_into=first.id), actor="op:1")


async def test_a_duplicate_is_found_among_many_newer_open_incidents_by_place_or_building(
    engine: AsyncEngine, bus: MemoryBus
) -> None:
    """Duplicate detection asks only for the open incidents that can be near the new one (its building, or inside its
    distance's box): an old incident next to it is proposed however many newer ones are open elsewhere (the newest
    500 of the type were compared before, so this one was missed)."""
    service = make_service(engine, bus)
    first = (await service.open(call(building="b-1"), actor="op:1", now=T0)).incident
    async with engine.begin() as conn:
        repo = IncidentRepo(conn)
        template = await repo.get(first.id)
        assert template is not None
        opened = [T0 + timedelta(seconds=1 + i / 10) for i in range(600)]
        elsewhere = [
            {**template, "id": f"far-{i:04d}", "lon": 121.30 + i * 1e-4, "building": None, "opened_at": at}
            for i, at in enumerate(opened)
        ]
        await conn.execute(insert(incidents), elsewhere)
    near = await service.open(call(lon=121.2512), actor="op:2", now=T0 + timedelta(minutes=2))
    assert [p.into for p in near.proposals] == [first.id]
    same_building = await service.open(call(lon=121.20, building="b-1"), actor="op:2", now=T0 + timedelta(minutes=3))
    assert [p.into for p in same_building.proposals] == [first.id]
    assert (await service.open(call(lon=121.19), actor="op:2", now=T0 + timedelta(minutes=4))).proposals == []


async def test_a_unit_is_taken_from_a_less_urgent_incident_only_when_asked(engine: AsyncEngine, bus: MemoryBus) -> None:
    service = make_service(engine, bus)
    await service.import_responders([unit("car-1")])
    dispute = (await service.open(call("dispute", lon=121.3), actor="op:1", now=T0)).incident
    await service.act(dispute.id, StepIn(action=Action.DISPATCH, unit_id="car-1"), actor="op:1")
    fire = (await service.open(call("fire"), actor="op:1", now=T0)).incident
    with pytest.raises(ResponderBusy):
        await service.act(fire.id, StepIn(action=Action.DISPATCH, unit_id="car-1"), actor="op:1")
    taken = await service.act(fire.id, StepIn(action=Action.DISPATCH, unit_id="car-1", preempt=True), actor="op:1")
    assert taken.unit_id == "car-1"
    recalled = await service.get(dispute.id)
    assert recalled.stage is Stage.TRIAGED and recalled.unit_id is None
    assert (await service.history(dispute.id))[-1].action == "recall"
    with pytest.raises(ResponderBusy):  # a priority-1 fire is never pre-empted by a dispute
        await service.act(dispute.id, StepIn(action=Action.DISPATCH, unit_id="car-1", preempt=True), actor="op:1")


async def test_positions_are_checked_and_ranking_follows_the_road(
    engine: AsyncEngine, bus: MemoryBus, roads: RoadService
) -> None:
    service = make_service(engine, bus, roads)
    await service.import_responders([unit("near"), unit("far"), unit("nocap", caps="traffic"), unit("lost")])
    now = datetime.now(UTC)
    await service.report_position("near", 121.252, 31.372, now=now)
    await service.report_position("far", 121.27, 31.39, now=now)
    await service.report_position("nocap", 121.2515, 31.3712, now=now)
    with pytest.raises(BadPosition, match="too far"):
        await service.report_position("lost", 121.9, 31.9, now=now)
    with pytest.raises(BadPosition, match="stale"):
        await service.report_position("lost", 121.25, 31.37, fix_at=now - timedelta(hours=1), now=now)
    with pytest.raises(BadPosition, match="out of order"):
        await service.report_position("near", 121.25, 31.37, fix_at=now - timedelta(seconds=10), now=now)
    with pytest.raises(ResponderNotFound):
        await service.report_position("ghost", 121.25, 31.37, now=now)

    incident = (await service.open(call(), actor="op:1", now=now)).incident
    ranked = await service.recommend(incident.id, now=now)
    assert [r.id for r in ranked if r.eligible] == ["near", "far"]
    assert ranked[0].eta_s is not None and ranked[0].eta_s < ranked[1].eta_s  # type: ignore[operator]
    assert ranked[0].route and ranked[0].snap_m is not None
    by_id = {r.id: r for r in ranked}
    assert by_id["nocap"].reasons == ("lacks_fire",) and by_id["lost"].reasons == ("unroutable_no_position",)
    dispatched = await service.dispatch_best(incident.id, actor="op:1", now=now)
    assert dispatched.unit_id == "near"
    [assignment] = await service.assignments(incident.id)
    assert assignment["eta_s"] == pytest.approx(ranked[0].eta_s)


async def test_a_node_that_did_not_open_the_incident_recommends_the_same(
    engine: AsyncEngine, bus: MemoryBus, roads: RoadService
) -> None:
    """The opening node keeps the incident's type, priority and place; another node reads them from the database
    (a unit busy on a less urgent incident counts the same way on both)."""
    opener, other = make_service(engine, bus, roads), make_service(engine, bus, roads)
    await opener.import_responders([unit("near"), unit("far"), unit("busy")])
    now = datetime.now(UTC)
    for uid, lon in (("near", 121.252), ("far", 121.27), ("busy", 121.2512)):
        await opener.report_position(uid, lon, 31.372, now=now)
    dispute = (await opener.open(call("dispute", lon=121.3), actor="op:1", now=now)).incident
    await opener.act(dispute.id, StepIn(action=Action.DISPATCH, unit_id="busy"), actor="op:1", now=now)
    fire = (await opener.open(call("fire"), actor="op:1", now=now)).incident
    ranked = await opener.recommend(fire.id, now=now)
    assert ("busy", dispute.id) in [(r.id, r.preempts) for r in ranked if r.eligible]
    assert await other.recommend(fire.id, now=now) == ranked
    with pytest.raises(IncidentNotFound):
        await other.recommend("01JNOTANINCIDENT0000000000", now=now)


async def test_an_alert_whose_rule_opens_incidents_opens_one_once(engine: AsyncEngine, bus: MemoryBus) -> None:
    service = make_service(engine, bus)
    alert = AlertRaised(
        alert_id="01JALERT00000000000000000A",
        rule_id="fire.smoke_pair",
        group_key="b1",
        headline=Text(zh="烟感报警", en="Smoke"),
        description=Text(zh="两个烟感", en="two detectors"),
        category=Category.FIRE,
        severity=Severity.SEVERE,
        urgency=Urgency.IMMEDIATE,
        certainty=Certainty.LIKELY,
        opens_incident=True,
        tags=Tags(town="anting", community="c1", building="b1"),
        area=Area(description="b1", circle=Circle(lon=121.25, lat=31.37, radius_m=50)),
        trigger_event_ids=["E1", "E2"],
        count=1,
        first_at=T0,
        last_at=T0,
        hops={"fired": T0 + timedelta(milliseconds=300)},
    )
    envelope = make_envelope(ALERT_RAISED, alert, source="test")
    await service.on_alert(envelope)
    await service.on_alert(envelope)
    found, total = await service.list()
    assert total == 1
    incident = found[0]
    assert (incident.type, incident.origin, incident.alert_id) == ("fire", "alert", alert.alert_id)
    assert incident.perceived_at == T0 and incident.warned_at == T0 + timedelta(milliseconds=300)
    assert incident.building == "b1" and incident.stage is Stage.TRIAGED
    history = await service.history(incident.id)
    assert {e.ref for e in history[0].evidence} == {"E1", "E2", alert.alert_id}
    assert history[0].actor == "rule:fire.smoke_pair"


async def test_sla_breaches_are_reported_once_and_kpis_summarize_stages(engine: AsyncEngine, bus: MemoryBus) -> None:
    service = make_service(engine, bus)
    await service.import_responders([unit("car-1"), unit("car-2")])
    late = (await service.open(call(), actor="op:1", now=T0)).incident
    breaches = await service.check_sla(now=T0 + timedelta(seconds=61))
    assert [(i.id, t.interval) for i, t in breaches] == [(late.id, "dispatch")]
    assert await service.check_sla(now=T0 + timedelta(seconds=90)) == []
    for n, unit_id in enumerate(("car-1", "car-2")):
        start = T0 + timedelta(minutes=10 * n)
        incident = (await service.open(call(lon=121.2 + n / 10), actor="op:1", now=start)).incident
        for minutes, step in enumerate(
            [
                StepIn(action=Action.DISPATCH, unit_id=unit_id),
                StepIn(action=Action.ARRIVE),
            ],
            start=1,
        ):
            await service.act(incident.id, step, actor="op:1", now=start + timedelta(minutes=minutes * (n + 1)))
    kpis = await service.kpis(since=T0, until=T0 + timedelta(hours=1), group="type")
    response = kpis["fire"]["response"]
    assert response.count == 2 and response.median_s == pytest.approx((120 + 240) / 2)
    assert kpis["fire"]["dispatch"].count == 2
    by_station = await service.kpis(since=T0, until=T0 + timedelta(hours=1), group="station")
    assert set(by_station) == {"anting-ps"} and by_station["anting-ps"]["response"].count == 2


async def test_an_sla_check_reads_only_incidents_whose_timers_can_have_run_out(
    engine: AsyncEngine, bus: MemoryBus
) -> None:
    """After the first check, a check reads the incidents a timer of which reached its limit since the last one, or
    that changed since: not every open incident each time (130 ms of the event loop a check at about 2,000 open,
    measured with py-spy), while every breach is still reported once."""
    limits = {"warn": 1.0, "dispatch": 60.0}
    service = make_service(engine, bus, sla=SlaSettings(targets=[Target(limits=limits)]))
    old = (await service.open(call(), actor="op:1", now=T0)).incident
    assert [(i.id, t.interval) for i, t in await service.check_sla(now=T0 + timedelta(seconds=61))] == [
        (old.id, "dispatch")
    ]
    later = T0 + timedelta(minutes=20)
    new = (await service.open(call(lon=121.3), actor="op:1", now=later)).incident
    assert await service.check_sla(now=later + timedelta(seconds=30)) == []
    # Reaches its dispatch limit between two checks, long after the first: found.
    breaches = await service.check_sla(now=later + timedelta(seconds=90))
    assert [(i.id, t.interval) for i, t in breaches] == [(new.id, "dispatch")]
    # Opened with its warn interval (1 s) long over, before the last check's ranges: found because it changed.
    late = (
        await service.open(
            call(lon=121.35, perceived_at=later, warned_at=later + timedelta(seconds=5)),
            actor="op:1",
            now=later + timedelta(seconds=200),
        )
    ).incident
    breaches = await service.check_sla(now=later + timedelta(seconds=201))
    assert [(i.id, t.interval) for i, t in breaches] == [(late.id, "warn")]

    # What the next check reads: only the last one (its dispatch limit runs out in between), not the two in breach
    # and unchanged since.
    since, now = later + timedelta(seconds=201), later + timedelta(seconds=400)
    async with engine.connect() as conn:
        rows = await IncidentRepo(conn).sla_candidates(
            stages=["new", "triaged"],
            changed_since=since - timedelta(seconds=10),
            started=start_windows([limits], since, now),
        )
    assert [r["id"] for r in rows] == [late.id]
    assert [(i.id, t.interval) for i, t in await service.check_sla(now=now)] == [(late.id, "dispatch")]


async def test_the_breaches_reported_are_forgotten_once_their_incident_is_closed(
    engine: AsyncEngine, bus: MemoryBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "BREACHED_PRUNE_AT", 1)
    service = make_service(engine, bus, sla=SlaSettings(targets=[Target(limits={"dispatch": 60.0})]))
    first = (await service.open(call(), actor="op:1", now=T0)).incident
    second = (await service.open(call(lon=121.3), actor="op:1", now=T0)).incident
    assert len(await service.check_sla(now=T0 + timedelta(seconds=61))) == 2  # both missed their dispatch limit
    assert set(service._breached) == {first.id, second.id}  # both open: kept, and the limit is now twice that
    await service.act(first.id, StepIn(action=Action.CANCEL, reason="false alarm"), actor="op:1", now=T0)
    later = T0 + timedelta(minutes=10)
    more = [(await service.open(call(lon=121.2 + n / 100), actor="op:1", now=later)).incident for n in range(3)]
    # Five remembered, over the limit of four: the cancelled incident's are dropped; the second's breach is still
    # known, so it is not reported again.
    breaches = await service.check_sla(now=later + timedelta(seconds=61))
    assert sorted(i.id for i, _ in breaches) == sorted(i.id for i in more)
    assert set(service._breached) == {second.id, *(i.id for i in more)}
    assert await service.check_sla(now=later + timedelta(seconds=62)) == []


async def test_an_sla_breach_raises_an_alert_through_the_warning_engine(engine: AsyncEngine, bus: MemoryBus) -> None:
    warning = WarningService(
        bus, load_builtin("default", pseudonymize=Pseudonymizer(b"k" * 32)), pseudonymizer=Pseudonymizer(b"k" * 32)
    )
    await warning.start()
    alerts = await collect(bus, "alert.raised")
    service = make_service(engine, bus)
    now = datetime.now(UTC)
    incident = (await service.open(call(), actor="op:1", now=now - timedelta(seconds=90))).incident
    assert await service.publish_sla_breaches(now=now) == 1
    assert await service.publish_sla_breaches(now=now) == 0  # once per incident and interval
    await bus.drain()
    await warning.stop()
    [alert] = [a.payload for a in alerts if a.payload.rule_id == "dispatch.sla_breach"]  # type: ignore[attr-defined]
    assert alert.group_key.endswith(f"incident:{incident.id}")  # type: ignore[attr-defined]


async def test_closing_an_alerts_incident_resolves_the_alert_with_a_cap_update(
    engine: AsyncEngine, bus: MemoryBus
) -> None:
    alerts = AlertService(engine, bus, node_id="node-1")
    await alerts.start()
    service = make_service(engine, bus)
    service.resolve_alert = alerts.resolve_handled
    await bus.subscribe("alert.raised", service.on_alert)
    warning = WarningService(
        bus, load_builtin("default", pseudonymize=Pseudonymizer(b"k" * 32)), pseudonymizer=Pseudonymizer(b"k" * 32)
    )
    await warning.start()
    now = datetime.now(UTC)
    for n, device in enumerate(("sd-1", "sd-2")):
        event = SensorEvent(
            device_id=device,
            kind=EventKind.SMOKE,
            tags=Tags(town="anting", community="c1", building="b1", device_kind="smoke"),
            lon=121.25,
            lat=31.37,
            data={"alarm": True},
        )
        at = now + timedelta(seconds=n)
        await bus.publish(
            make_envelope(event_key(EventKind.SMOKE), event, source="test", occurred_at=at, received_at=at)
        )
    for _ in range(100):
        await bus.drain()
        found, total = await service.list()
        if total:
            break
        await asyncio.sleep(0.02)
    [incident] = found
    assert incident.origin == "alert" and incident.alert_id is not None
    await service.import_responders([unit("car-1")])
    for step in (
        StepIn(action=Action.DISPATCH, unit_id="car-1"),
        StepIn(action=Action.ARRIVE),
        StepIn(action=Action.DISPOSE, disposition="burnt toast"),
    ):
        await service.act(incident.id, step, actor="op:1")
    assert (await alerts.get(incident.alert_id)).state.value == "new"  # open until the incident closes
    await service.act(incident.id, StepIn(action=Action.CLOSE, feedback="no fire; resident informed"), actor="op:1")
    resolved = await alerts.get(incident.alert_id)
    assert resolved.state.value == "resolved"
    message = await alerts.cap_of(incident.alert_id)
    assert message.msg_type.value == "Update"
    await warning.stop()
    await alerts.stop()


async def place_units_a_and_b(service: DispatchService) -> datetime:
    """Units a (near the incidents `call()` opens) and b (farther away), placed now; returns that time."""
    await service.import_responders([unit("a"), unit("b")])
    now = datetime.now(UTC)
    await service.report_position("a", 121.252, 31.372, now=now)
    await service.report_position("b", 121.27, 31.39, now=now)
    return now


async def test_a_unit_moving_re_ranks_the_incidents_waiting_for_one(
    engine: AsyncEngine, bus: MemoryBus, roads: RoadService
) -> None:
    service = make_service(engine, bus, roads)
    changes = await collect(bus, "incident.recommendation_changed")
    now = await place_units_a_and_b(service)
    incident = (await service.open(call(), actor="op:1", now=now)).incident
    assert await service.rerank(now=now) == 1
    assert await service.rerank(now=now) == 0  # nothing moved: nothing published
    await service.report_position("b", 121.2511, 31.3711, now=now)  # b is now nearest
    assert await service.rerank(now=now) == 1
    await bus.drain()
    assert [[u.responder_id for u in e.payload.top] for e in changes] == [["a", "b"], ["b", "a"]]  # type: ignore[attr-defined]
    assert {e.payload.incident_id for e in changes} == {incident.id}  # type: ignore[attr-defined]


async def test_opening_an_incident_re_ranks_that_incident_only(
    engine: AsyncEngine, bus: MemoryBus, roads: RoadService
) -> None:
    service = make_service(engine, bus, roads)
    changes = await collect(bus, "incident.recommendation_changed")
    now = await place_units_a_and_b(service)
    first = (await service.open(call(), actor="op:1", now=now)).incident
    ranked: list[str] = []
    recommend = service.recommend

    async def counting(incident_id: str, **kw: object) -> object:
        ranked.append(incident_id)
        return await recommend(incident_id, **kw)  # type: ignore[arg-type]

    service.recommend = counting  # type: ignore[method-assign]
    loop = asyncio.create_task(service.rerank_loop(debounce_s=0.01))
    try:
        async with asyncio.timeout(10):
            while not changes:  # the units' moves asked for every waiting incident: the first is ranked
                await bus.drain()
                await asyncio.sleep(0.01)
            assert ranked == [first.id]
            ranked.clear()
            second = (await service.open(call(lon=121.26, lat=31.38), actor="op:1", now=now)).incident
            while len(changes) < 2:
                await bus.drain()
                await asyncio.sleep(0.01)
    finally:
        loop.cancel()
    assert ranked == [second.id]  # the first incident's ranking cannot have changed: it is not ranked again
    assert [e.payload.incident_id for e in changes] == [first.id, second.id]  # type: ignore[attr-defined]
