"""SLA targets: the most specific target wins; timers run from a stage's start and breach past their limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from safecity.dispatch.kpi import StageTimes
from safecity.dispatch.sla import start_windows, timers
from safecity.kernel.dispatch_settings import INTERVALS, AreaType, SlaSettings, Target

T0 = datetime(2026, 12, 3, 8, tzinfo=UTC)
S = timedelta(seconds=1)


def test_defaults_are_the_issue_targets_and_rural_towns_get_ten_minutes() -> None:
    sla = SlaSettings(rural_towns=frozenset({"huating"}))
    assert sla.limits_for(2, sla.area_of("anting")) == {"warn": 1.0, "dispatch": 60.0, "response": 300.0}
    assert sla.limits_for(2, sla.area_of("huating"))["response"] == 600.0
    assert sla.area_of(None) is AreaType.URBAN


def test_the_most_specific_target_wins_per_interval() -> None:
    sla = SlaSettings(
        targets=[
            Target(limits={"dispatch": 60, "response": 300}),
            Target(priority=1, limits={"dispatch": 30}),
            Target(priority=1, area=AreaType.RURAL, limits={"dispatch": 45}),
            Target(area=AreaType.RURAL, limits={"dispatch": 90}),
        ]
    )
    assert sla.limits_for(1, AreaType.URBAN) == {"dispatch": 30, "response": 300}
    assert sla.limits_for(1, AreaType.RURAL) == {"dispatch": 45, "response": 300}
    assert sla.limits_for(3, AreaType.RURAL) == {"dispatch": 90, "response": 300}


def test_a_target_for_an_unknown_interval_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown interval"):
        Target(limits={"arrive": 60})


def test_timers_run_from_the_stage_start_and_breach_past_the_limit() -> None:
    times = StageTimes(opened_at=T0, dispatched_at=T0 + 75 * S)
    found = {t.interval: t for t in timers(times, {"dispatch": 60, "response": 300, "warn": 1})}
    assert set(found) == {"dispatch", "response"}  # no perceived_at: no warn timer
    assert found["dispatch"].breached(T0 + 80 * S) and found["dispatch"].elapsed_s(T0 + 999 * S) == 75
    running = found["response"]
    assert running.ended_at is None and running.due_at == T0 + 300 * S
    assert not running.breached(T0 + 300 * S) and running.breached(T0 + 301 * S)


@given(
    limit_sets=st.lists(
        st.dictionaries(st.sampled_from(sorted(INTERVALS)), st.floats(1, 86_400), min_size=1), min_size=1, max_size=4
    ),
    pick=st.data(),
    since_s=st.floats(0, 100_000),
    gap_s=st.floats(1, 100_000),
)
def test_a_timer_that_runs_out_between_two_checks_starts_inside_its_window(
    limit_sets: list[dict[str, float]], pick: st.DataObject, since_s: float, gap_s: float
) -> None:
    base = datetime(2026, 12, 3, tzinfo=UTC)
    since, now = base + timedelta(seconds=since_s), base + timedelta(seconds=since_s + gap_s)
    limits = pick.draw(st.sampled_from(limit_sets))
    name = pick.draw(st.sampled_from(sorted(limits)))
    # A start whose limit is reached in (since, now].
    due = since + (now - since) * pick.draw(st.floats(0.001, 1))
    start = due - timedelta(seconds=limits[name])
    ranges = start_windows(limit_sets, since, now)[INTERVALS[name][0]]
    assert any(after < start <= until for after, until in ranges)
    # Each range is as long as the time between the checks, whatever the limit.
    assert {until - after for after, until in ranges} == {now - since}
