"""Responder ranking (eligibility, penalties, unroutable last) and duplicate proposals."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from safecity.dispatch.dedupe import Facts, merge_proposals
from safecity.dispatch.recommend import (
    Candidate,
    RankSettings,
    ResponderKind,
    ResponderStatus,
    Travel,
    Travels,
    plainly_eligible,
    rank,
    shortlist,
)
from safecity.kernel.dispatch_settings import DedupeSettings

NOW = datetime(2026, 12, 3, 8, tzinfo=UTC)
S = timedelta(seconds=1)
SETTINGS = RankSettings(stale_after_s=120, stale_penalty_s=180, preempt_penalty_s=120, limit=10)


def unit(uid: str, **changes: object) -> Candidate:
    base = Candidate(
        id=uid,
        kind=ResponderKind.POLICE,
        status=ResponderStatus.AVAILABLE,
        capabilities=frozenset({"patrol"}),
        fix_at=NOW - 10 * S,
    )
    return replace(base, **changes)


def test_nearest_available_capable_unit_ranks_first_and_the_rest_say_why_not() -> None:
    candidates = [
        unit("near-busy", status=ResponderStatus.ON_SCENE),
        unit("near-stale", fix_at=NOW - 600 * S),
        unit("far"),
        unit("medic", capabilities=frozenset({"patrol", "first_aid"})),
        unit("lost"),
        unit("guard", kind=ResponderKind.COMMUNITY, on_duty=False),
    ]
    travel = {
        "near-busy": Travel(eta_s=30),
        "near-stale": Travel(eta_s=60, snap_m=12.0),
        "far": Travel(eta_s=200),
        "medic": Travel(eta_s=220),
        "guard": Travel(eta_s=10),
        "lost": Travel(eta_s=None, unroutable="too_far_from_road"),
    }
    ranked = rank(candidates, travel, priority=2, needs=frozenset({"patrol"}), now=NOW, settings=SETTINGS)
    assert [r.id for r in ranked] == ["far", "medic", "near-stale", "guard", "near-busy", "lost"]
    stale = next(r for r in ranked if r.id == "near-stale")
    assert stale.stale and stale.score_s == 240 and stale.snap_m == 12.0
    assert {r.id: r.reasons for r in ranked if not r.eligible} == {
        "guard": ("off_duty",),
        "near-busy": ("status_on_scene",),
        "lost": ("unroutable_too_far_from_road",),
    }
    only_medics = rank(candidates, travel, priority=2, needs=frozenset({"first_aid"}), now=NOW, settings=SETTINGS)
    assert [r.id for r in only_medics if r.eligible] == ["medic"]


def test_a_unit_busy_on_a_less_urgent_incident_may_be_taken_with_a_penalty() -> None:
    busy = unit("busy", status=ResponderStatus.EN_ROUTE, busy_priority=3, busy_incident="INC-9")
    travel = {"busy": Travel(eta_s=50), "free": Travel(eta_s=100)}
    urgent = rank([busy, unit("free")], travel, priority=1, needs=frozenset(), now=NOW, settings=SETTINGS)
    assert [(r.id, r.score_s, r.preempts) for r in urgent] == [("free", 100, None), ("busy", 170, "INC-9")]
    same = rank([busy, unit("free")], travel, priority=3, needs=frozenset(), now=NOW, settings=SETTINGS)
    assert [(r.id, r.eligible) for r in same] == [("free", True), ("busy", False)]


def test_a_responder_without_a_position_is_unroutable_not_an_error() -> None:
    [line] = rank([unit("ghost")], {}, priority=1, needs=frozenset(), now=NOW, settings=SETTINGS)
    assert not line.eligible and line.reasons == ("unroutable_no_position",)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(ResponderStatus)),
            st.one_of(st.none(), st.floats(0, 3600)),
            st.integers(0, 1000),
            st.booleans(),
        ),
        max_size=30,
    )
)
def test_eligible_lines_are_ordered_by_score_and_meet_every_rule(
    rows: list[tuple[ResponderStatus, float | None, int, bool]],
) -> None:
    candidates = [
        unit(f"u{i}", status=status, fix_at=NOW - age * S, capabilities=frozenset({"x"} if cap else set()))
        for i, (status, _, age, cap) in enumerate(rows)
    ]
    travel = {
        f"u{i}": Travel(eta_s=eta, unroutable=None if eta is not None else "off_map")
        for i, (_, eta, _, _) in enumerate(rows)
    }
    ranked = rank(candidates, travel, priority=2, needs=frozenset({"x"}), now=NOW, settings=SETTINGS)
    eligible = [r for r in ranked if r.eligible]
    assert ranked[: len(eligible)] == eligible
    assert [r.score_s for r in eligible] == sorted(r.score_s for r in eligible if r.score_s is not None)
    for r in eligible:
        assert r.status is ResponderStatus.AVAILABLE and r.eta_s is not None
        assert r.score_s == r.eta_s + (180 if r.stale else 0)
    expected = sum(1 for status, eta, _, cap in rows if status is ResponderStatus.AVAILABLE and eta is not None and cap)
    assert len(eligible) == min(expected, SETTINGS.limit)
    assert len(ranked) - len(eligible) == min(len(rows) - expected, SETTINGS.limit)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(ResponderStatus)),
            # Few distinct times, so ties on time and on score (id order decides) are common.
            st.one_of(st.none(), st.sampled_from([0.0, 30.0, 60.0, 90.0, 120.5, 180.0, 240.0, 300.0])),
            st.one_of(st.none(), st.sampled_from([0, 60, 119, 120, 121, 600])),
            st.booleans(),
            st.booleans(),
            st.one_of(st.none(), st.integers(1, 4)),
        ),
        max_size=40,
    ),
    st.integers(1, 5),
    st.integers(1, 3),
)
def test_ranking_the_shortlist_gives_the_list_ranking_everyone_gives(
    rows: list[tuple[ResponderStatus, float | None, int | None, bool, bool, int | None]], limit: int, priority: int
) -> None:
    settings = SETTINGS.model_copy(update={"limit": limit})
    needs = frozenset({"x"})
    candidates = [
        unit(
            f"u{i:02d}",
            status=status,
            fix_at=None if age is None else NOW - age * S,
            capabilities=frozenset({"x"} if cap else set()),
            on_duty=duty,
            busy_priority=busy,
            busy_incident=None if busy is None else f"INC-{i}",
        )
        for i, (status, _, age, cap, duty, busy) in enumerate(rows)
    ]
    travel = Travels(
        {c.id: eta for c, (_, eta, *_) in zip(candidates, rows, strict=True)},
        unroutable={c.id: "off_map" for c, (_, eta, *_) in zip(candidates, rows, strict=True) if eta is None},
    )
    everyone = rank(candidates, travel, priority=priority, needs=needs, now=NOW, settings=settings)
    keep = shortlist(
        [c.id for c in candidates],
        [plainly_eligible(c.status, c.capabilities, c.on_duty, needs) for c in candidates],
        [c.fix_at for c in candidates],
        travel.etas,
        now=NOW,
        settings=settings,
    )
    short = [c for c in candidates if c.id in keep]
    assert rank(short, travel, priority=priority, needs=needs, now=NOW, settings=settings) == everyone
    # Only the plainly eligible are ever left out, and at most `limit` of them stay (more only when tied).
    plain = [c for c in candidates if plainly_eligible(c.status, c.capabilities, c.on_duty, needs)]
    assert {c.id for c in candidates} - keep <= {c.id for c in plain}


def test_travels_build_each_travel_when_read_and_match_ready_made_ones() -> None:
    ready = {
        "a": Travel(eta_s=12.5, route=((121.0, 31.0), (121.1, 31.1)), snap_m=3.0),
        "b": Travel(eta_s=None, snap_m=900.0, unroutable="no_routable_edge"),
        "c": Travel(eta_s=40.0),
    }
    lazy = Travels.of(ready)
    assert dict(lazy) == ready and len(lazy) == 3 and "b" in lazy and "z" not in lazy
    assert lazy.etas == {"a": 12.5, "b": None, "c": 40.0}
    assert lazy.get("z") is None


def facts(iid: str, minutes: float, lon: float, kind: str = "fire", building: str | None = None) -> Facts:
    return Facts(iid, kind, NOW + timedelta(minutes=minutes), (lon, 31.3), building)


def test_a_new_incident_near_an_open_one_of_its_type_is_proposed_for_merge() -> None:
    settings = DedupeSettings(distance_m=200, window_s=900, auto_merge_types=frozenset({"alarm"}))
    open_ = [
        facts("A", 0, 121.2500),  # same place
        facts("B", 0, 121.2515),  # about 140 m east
        facts("C", 0, 121.2600),  # about 950 m east
        facts("D", -30, 121.2500),  # too long ago
        facts("E", 0, 121.2500, kind="medical"),
        facts("F", 0, 121.3000, building="b-7"),  # far, but the same building
    ]
    proposals = merge_proposals(facts("N", 5, 121.2500, building="b-7"), open_, settings)
    assert [p.into for p in proposals] == ["A", "B", "F"]
    assert proposals[0].after_s == 300 and not proposals[0].automatic
    assert 100 < (proposals[1].distance_m or 0) < 200
    alarm = merge_proposals(facts("N", 1, 121.25, "alarm"), [facts("Z", 0, 121.25, "alarm")], settings)
    assert [(p.into, p.automatic) for p in alarm] == [("Z", True)]
    assert merge_proposals(facts("N", 1, 121.25), [facts("N", 0, 121.25)], settings) == []
