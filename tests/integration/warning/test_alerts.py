"""AlertService on real SQLite and PostgreSQL: storing from the bus, lifecycle steps, hops, CAP of stored alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import xmlschema
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel.bus import MemoryBus
from safecity.kernel.envelope import Envelope, make_envelope
from safecity.kernel.errors import SafeCityError
from safecity.sensing.model import Tags
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.store.engine import create_engine, upgrade
from safecity.warning import cap
from safecity.warning.alerts import (
    CLOSED_STATES,
    TRANSITIONS,
    Action,
    AlertNotFound,
    AlertService,
    AlertTransitionInvalid,
    next_state,
)
from safecity.warning.engine import Firing
from safecity.warning.model import (
    ALERT_RAISED,
    ALERT_STATE_CHANGED,
    ALERT_UPDATED,
    AlertRaised,
    AlertState,
    Area,
    Audience,
    Category,
    Certainty,
    Circle,
    Severity,
    Text,
    Urgency,
)
from safecity.warning.rules import RuleError, builtin_pack_path, load_builtin, never_public_reason, parse_pack
from safecity.warning.service import WarningService

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)


def raised(alert_id: str = "01JDZ0000000000000000000AA", *, count: int = 1, **kw: Any) -> AlertRaised:
    """A smoke alert as the engine raises it, with per-hop times."""
    last = T0 + timedelta(seconds=10 * (count - 1))
    values: dict[str, Any] = {
        "alert_id": alert_id,
        "rule_id": "smoke-two-detectors",
        "group_key": "bldg-3",
        "headline": Text(zh="烟感报警", en="Smoke alarm"),
        "description": Text(zh="两个烟感报警。", en="Two smoke detectors alarmed."),
        "category": Category.FIRE,
        "severity": Severity.SEVERE,
        "urgency": Urgency.IMMEDIATE,
        "certainty": Certainty.LIKELY,
        "opens_incident": True,
        "tags": Tags(town="jiading-town", community="comm-7", building="bldg-3"),
        "area": Area(description="3 号楼", circle=Circle(lon=121.27, lat=31.38, radius_m=200)),
        "trigger_event_ids": [f"ev-{i}" for i in range(count)],
        "count": count,
        "first_at": T0,
        "last_at": last,
        "hops": {
            "occurred": last,
            "received": last + timedelta(milliseconds=3),
            "tagged": last + timedelta(milliseconds=4),
            "fired": last + timedelta(milliseconds=6),
        },
    }
    values.update(kw)
    return AlertRaised(**values)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database on SQLite and on PostgreSQL."""
    await upgrade(db_url)
    eng = create_engine(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    """A started in-process bus."""
    b = MemoryBus()
    await b.start()
    yield b
    await b.close()


@pytest.fixture
async def service(engine: AsyncEngine, bus: MemoryBus) -> AsyncIterator[AlertService]:
    """A started AlertService (subscribed to alert.raised / alert.updated)."""
    svc = AlertService(engine, bus, node_id="test-hub", tier="district")
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture(scope="module")
def schema(shared_data: Path) -> Any:
    """The official CAP 1.2 XSD."""
    return cap.load_schema(shared_data / "cap" / "schema" / "CAP-v1.2.xsd")


async def test_raised_then_updated_from_the_bus(service: AlertService, bus: MemoryBus) -> None:
    """alert.raised stores the alert (stored hop stamped); alert.updated moves count and last_at, same id."""
    await bus.publish(make_envelope(ALERT_RAISED, raised(), source="engine"))
    await bus.drain()
    first = await service.get("01JDZ0000000000000000000AA")
    assert (first.state, first.count, first.town, first.building) == (AlertState.NEW, 1, "jiading-town", "bldg-3")
    assert first.headline == {"zh": "烟感报警", "en": "Smoke alarm"}
    assert set(first.hops) == {"occurred", "received", "tagged", "fired", "stored"}
    assert first.latency_ms["occurred_to_fired"] == 6.0
    assert first.latency_ms["received_to_tagged"] == 1.0
    assert first.area is not None and first.area["circle"]["radius_m"] == 200

    await service.acknowledge(first.id, "op-1")
    await bus.publish(make_envelope(ALERT_UPDATED, raised(count=3), source="engine"))
    await bus.drain()
    updated = await service.get(first.id)
    assert (updated.count, updated.last_at) == (3, T0 + timedelta(seconds=20))
    assert updated.trigger_event_ids == ["ev-0", "ev-1", "ev-2"]
    assert updated.state is AlertState.ACKNOWLEDGED  # a repeat never resets the lifecycle
    assert updated.first_at == T0

    # An older message arriving late (raised after updated) does not move the alert back.
    await service.store(raised(count=2))
    assert (await service.get(first.id)).count == 3
    page = await service.list()
    assert page.total == 1


async def test_lifecycle_steps_are_stored_and_published(service: AlertService, bus: MemoryBus) -> None:
    """acknowledge -> assign -> resolve: each step has actor, feedback, time; each is published on the bus."""
    seen: list[Envelope] = []

    async def collect(envelope: Envelope) -> None:
        seen.append(envelope)

    await bus.subscribe(ALERT_STATE_CHANGED.name, collect)
    await service.store(raised())
    alert_id = "01JDZ0000000000000000000AA"
    await service.acknowledge(alert_id, "op-1", "seen on camera 4")
    await service.assign(alert_id, "disp-1", "unit-12")
    done = await service.resolve(alert_id, "unit-12", "false alarm: cooking smoke")
    assert done.state is AlertState.RESOLVED
    assert done.assignee == "unit-12"
    assert [(s.state, s.actor, s.feedback) for s in done.steps] == [
        (AlertState.ACKNOWLEDGED, "op-1", "seen on camera 4"),
        (AlertState.ASSIGNED, "disp-1", None),
        (AlertState.RESOLVED, "unit-12", "false alarm: cooking smoke"),
    ]
    assert done.steps[1].assignee == "unit-12"
    assert all(s.at.tzinfo is not None for s in done.steps)
    await bus.drain()
    assert [e.payload.state for e in seen] == [AlertState.ACKNOWLEDGED, AlertState.ASSIGNED, AlertState.RESOLVED]
    assert seen[0].context.actor == "op-1" and seen[0].context.correlation_id == alert_id

    # Closed stays closed.
    for action in Action:
        with pytest.raises(AlertTransitionInvalid):
            await service.transition(alert_id, action, "op-1", feedback="again", assignee="x")
    assert len((await service.get(alert_id)).steps) == 3


async def test_invalid_transitions_and_unknown_alerts(service: AlertService) -> None:
    """Resolve before acknowledge is refused (409); an unknown id is 404; cancel closes an open alert."""
    await service.store(raised())
    alert_id = "01JDZ0000000000000000000AA"
    with pytest.raises(AlertTransitionInvalid) as err:
        await service.resolve(alert_id, "resp-1", "done")
    assert err.value.status == 409 and err.value.code == "alert.invalid_transition"
    with pytest.raises(AlertNotFound):
        await service.acknowledge("01JDZ00000000000000000NONE", "op-1")
    cancelled = await service.cancel(alert_id, "op-1", "duplicate of another alert")
    assert cancelled.state is AlertState.CANCELLED
    assert cancelled.steps[-1].feedback == "duplicate of another alert"
    with pytest.raises(AlertTransitionInvalid):
        await service.acknowledge(alert_id, "op-1")


async def test_list_filters_and_pagination(service: AlertService) -> None:
    """Filter by state, severity, category, town, community and since; newest first; pages add up."""
    for i in range(5):
        await service.store(
            raised(
                f"01JDZ00000000000000000000{i}",
                severity=Severity.SEVERE if i % 2 else Severity.MINOR,
                tags=Tags(town="t-a" if i < 3 else "t-b", community=f"c-{i}"),
                last_at=T0 + timedelta(minutes=i),
                category=Category.FIRE if i else Category.SECURITY,
            )
        )
    await service.acknowledge("01JDZ000000000000000000002", "op-1")
    assert (await service.list()).total == 5
    assert [a.id[-1] for a in (await service.list()).items] == ["4", "3", "2", "1", "0"]
    assert (await service.list(state=AlertState.ACKNOWLEDGED)).total == 1
    assert (await service.list(severity=Severity.SEVERE)).total == 2
    assert (await service.list(category=Category.SECURITY)).total == 1
    assert (await service.list(town="t-b")).total == 2
    assert [a.id[-1] for a in (await service.list(community="c-3")).items] == ["3"]
    assert (await service.list(since=T0 + timedelta(minutes=3))).total == 2
    page = await service.list(limit=2, offset=2)
    assert (page.total, [a.id[-1] for a in page.items]) == (5, ["2", "1"])


async def test_delivered_hop_and_latency(service: AlertService) -> None:
    """A channel stamps `delivered` once; the alert then shows stored -> delivered latency."""
    await service.store(raised(), stored_at=T0 + timedelta(milliseconds=8))
    await service.stamp_hop("01JDZ0000000000000000000AA", "delivered", T0 + timedelta(milliseconds=11))
    await service.stamp_hop("01JDZ0000000000000000000AA", "delivered", T0 + timedelta(seconds=5))  # kept first
    alert = await service.get("01JDZ0000000000000000000AA")
    assert alert.latency_ms["stored_to_delivered"] == 3.0
    assert alert.latency_ms["fired_to_stored"] == 2.0


async def test_cap_of_stored_alerts_is_valid(service: AlertService, schema: xmlschema.XMLSchema) -> None:
    """Alert, Update (a repeat), resolved Update and Cancel messages validate; each references the original and
    carries `<expires>`; Restricted messages say so (scope and restriction)."""
    alert_id, resolved_id = "01JDZ0000000000000000000AA", "01JDZ0000000000000000000AB"
    await service.store(raised(scope=Audience.PUBLIC))
    messages = [await service.cap_of(alert_id)]
    await service.store(raised(count=2, scope=Audience.PUBLIC))
    messages.append(await service.cap_of(alert_id))
    await service.cancel(alert_id, "op-1", "false alarm")
    messages.append(await service.cap_of(alert_id))
    await service.store(raised(resolved_id, scope=Audience.PUBLIC))
    await service.acknowledge(resolved_id, "op-1")
    await service.resolve(resolved_id, "op-1", "put out")
    messages.append(await service.cap_of(resolved_id))
    kinds = [cap.MsgType.ALERT, cap.MsgType.UPDATE, cap.MsgType.CANCEL, cap.MsgType.UPDATE]
    assert [m.msg_type for m in messages] == kinds
    ids = [alert_id, f"{alert_id}-u2", f"{alert_id}-cancel", f"{resolved_id}-resolved"]
    assert [m.identifier for m in messages] == ids
    original = cap.Reference(sender="safecity@test-hub", identifier=alert_id, sent=T0)
    assert messages[1].references == messages[2].references == [original]
    assert messages[3].references == [cap.Reference(sender="safecity@test-hub", identifier=resolved_id, sent=T0)]
    assert messages[3].infos[0].response_types == ["AllClear"]
    assert messages[3].infos[0].urgency is Urgency.PAST
    for message in messages:
        xml = cap.render_xml(message)
        errors = list(schema.iter_errors(etree.fromstring(xml).getroottree()))
        assert errors == [], errors[0] if errors else None
        parsed = cap.parse_xml(xml, schema=schema)
        assert parsed.identifier == message.identifier
        assert parsed.scope is cap.Scope.PUBLIC and parsed.restriction is None
        expires = (message.sent + timedelta(hours=24)).replace(microsecond=0)  # CAP times have whole seconds
        assert all(i.expires == expires for i in parsed.infos)
    circle = messages[0].infos[0].areas[0].circles[0]
    assert cap.circle_to_cap(circle) == "31.38,121.27 0.2"
    page = await service.feed()
    assert [(a.id, m.msg_type) for a, m in page.entries] == [
        (resolved_id, cap.MsgType.UPDATE),
        (alert_id, cap.MsgType.CANCEL),
    ]

    restricted_id = "01JDZ0000000000000000000AC"
    await service.store(raised(restricted_id, group_key="hotlist"))  # no scope: Restricted
    restricted = cap.render_xml(await service.cap_of(restricted_id))
    errors = list(schema.iter_errors(etree.fromstring(restricted).getroottree()))
    assert errors == [], errors[0] if errors else None
    parsed = cap.parse_xml(restricted, schema=schema)
    assert parsed.scope is cap.Scope.RESTRICTED and parsed.restriction
    assert restricted_id not in [a.id for a, _ in (await service.feed()).entries]


# --- lifecycle invariants ------------------------------------------------------------------------------------------


@given(st.lists(st.sampled_from(Action), max_size=12))
@settings(max_examples=300, deadline=None)
def test_random_action_sequences_never_reach_an_invalid_state(actions: list[Action]) -> None:
    """From `new`, any sequence of actions (refused ones skipped) stays in the state machine; closed stays closed."""
    state = AlertState.NEW
    closed_at: AlertState | None = None
    for action in actions:
        try:
            new = next_state(state, action)
        except SafeCityError:
            continue
        assert closed_at is None, f"{action} moved a closed alert ({closed_at})"
        sources, target = TRANSITIONS[action]
        assert state in sources and new is target
        assert new is not AlertState.NEW  # nothing leads back to new
        state = new
        if state in CLOSED_STATES:
            closed_at = state
    assert state in set(AlertState)


async def test_a_random_sequence_in_the_database_matches_the_pure_machine(service: AlertService) -> None:
    """A fixed pseudo-random sequence applied through the service gives the same states as next_state."""
    import random

    rng = random.Random(7)
    for n in range(4):
        alert_id = f"01JDZ0000000000000000000B{n}"
        await service.store(raised(alert_id))
        expected = AlertState.NEW
        for _ in range(6):
            action = rng.choice(list(Action))
            try:
                expected = next_state(expected, action)
                ok = True
            except AlertTransitionInvalid:
                ok = False
            if ok:
                got = await service.transition(alert_id, action, "op", feedback="f", assignee="u-1")
                assert got.state is expected
            else:
                with pytest.raises(AlertTransitionInvalid):
                    await service.transition(alert_id, action, "op", feedback="f", assignee="u-1")
        final = await service.get(alert_id)
        assert final.state is expected
        assert [s.state for s in final.steps][-1:] in ([], [expected])


async def test_delivered_stamps_are_written_in_one_flush(service: AlertService) -> None:
    """Noted deliveries are stamped together: the earliest time wins, a stamp is never moved, and an alert not
    stored yet keeps its stamp for a later flush."""
    ids_ = [f"01JDZ0000000000000000000B{c}" for c in "ABC"]
    await service.store(raised(ids_[0]), stored_at=T0)
    await service.store(raised(ids_[1]), stored_at=T0)
    await service.stamp_hop(ids_[1], "delivered", T0 + timedelta(milliseconds=3))
    service.note_delivered(ids_[0], T0 + timedelta(milliseconds=20))
    service.note_delivered(ids_[0], T0 + timedelta(milliseconds=9))  # an earlier channel: its time is kept
    service.note_delivered(ids_[1], T0 + timedelta(milliseconds=50))
    service.note_delivered(ids_[2], T0 + timedelta(milliseconds=7))  # not stored yet
    await service.flush_delivered()
    first, second = await service.get(ids_[0]), await service.get(ids_[1])
    assert first.latency_ms["stored_to_delivered"] == 9.0
    assert second.latency_ms["stored_to_delivered"] == 3.0
    with pytest.raises(AlertNotFound):
        await service.get(ids_[2])

    await service.store(raised(ids_[2]), stored_at=T0)
    await service.flush_delivered()
    assert (await service.get(ids_[2])).latency_ms["stored_to_delivered"] == 7.0


# --- audience: the default pack walked through the feed -------------------------------------------------------------


async def test_default_pack_states_every_audience_and_only_public_rules_reach_the_feed(
    service: AlertService, bus: MemoryBus
) -> None:
    """Every default rule says who sees it; hotlist, security-device and infrastructure rules are Restricted; one
    alert per rule, built as the warning service builds it, leaves only the Public ones in the public feed."""
    path = builtin_pack_path("default")
    stated = {r["id"]: r.get("audience") for r in yaml.safe_load(path.read_text(encoding="utf-8"))["rules"]}
    assert None not in stated.values(), stated
    pack = load_builtin(pseudonymize=Pseudonymizer(b"k" * 32))
    never_public = {r.id for r in pack.rules if never_public_reason(r) is not None}
    assert {"security.hotlist_vehicle", "security.night_intrusion", "infra.device_offline"} <= never_public
    assert all(r.audience is Audience.RESTRICTED for r in pack.rules if r.id in never_public)
    public = {r.id for r in pack.rules if r.audience is Audience.PUBLIC}
    assert public, "the default pack publishes something"

    warning = WarningService(bus, pack)
    ids: dict[str, str] = {}
    for n, rule in enumerate(pack.rules):
        alert_id = f"01JDZ00000000000000000R{n:03d}"
        ids[alert_id] = rule.id
        firing = Firing(
            rule=rule,
            alert_id=alert_id,
            new=True,
            group_key=f"{rule.id}:x",
            trigger_event_ids=["ev-1"],
            count=1,
            contributors=[],
            first_at=T0,
            last_at=T0,
            tags=Tags(town="jiading-town", community="comm-7", building="bldg-3"),
            area=Area(description="3 号楼", circle=Circle(lon=121.27, lat=31.38, radius_m=50)),
            event=None,
        )
        await service.store(warning.to_envelope(firing).payload)
    feed = await service.feed(limit=500)
    assert {ids[a.id] for a, _ in feed.entries} == public
    assert all(m.scope is cap.Scope.PUBLIC for _, m in feed.entries)
    for alert_id, rule_id in ids.items():
        message = await service.cap_of(alert_id)
        assert message.scope.value == ("Public" if rule_id in public else "Restricted")


@pytest.mark.parametrize(
    "rule",
    [
        "{id: h, kind: hotlist, audience: Public, title: {zh: a, en: a}, watchlist: w}",
        "{id: o, kind: threshold, audience: Public, category: Infra, title: {zh: a, en: a}, events: [smoke]}",
        "{id: d, kind: threshold, audience: Public, title: {zh: a, en: a}, events: [device.offline]}",
        "{id: c, kind: correlation, audience: Public, title: {zh: a, en: a}, within: 5m,"
        " require: [{events: [smoke]}, {events: [door]}]}",
    ],
)
def test_never_public_rules_cannot_be_made_public(rule: str) -> None:
    text = f"version: 1\nwatchlists: {{w: {{field: plate, hashes: ['{'a' * 64}']}}}}\nrules:\n  - {rule}\n"
    with pytest.raises(RuleError) as refused:
        parse_pack(text, "pack.yaml")
    assert "never public" in str(refused.value.issues)
