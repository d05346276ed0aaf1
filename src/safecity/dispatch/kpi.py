"""Stage KPIs of incidents: how long each stage of the loop took, as count, median and 90th percentile per group (pure).

An incident's record keeps one time per stage (`StageTimes`); a KPI is an interval between two of them (`INTERVALS`).
Groups are whatever the caller keys records by: town, station, unit, department, type or priority.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from safecity.kernel.dispatch_settings import INTERVALS

G = TypeVar("G", bound=Hashable)


@dataclass(frozen=True, slots=True)
class StageTimes:
    """When an incident reached each stage (None when it has not, or the source does not say)."""

    perceived_at: datetime | None = None
    warned_at: datetime | None = None
    opened_at: datetime | None = None
    dispatched_at: datetime | None = None
    en_route_at: datetime | None = None
    on_scene_at: datetime | None = None
    disposed_at: datetime | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """Seconds one interval took over a group's incidents."""

    count: int
    median_s: float
    p90_s: float


def interval_s(times: StageTimes, name: str) -> float | None:
    """Seconds of interval `name` for one incident, or None when either end is missing."""
    start_field, end_field = INTERVALS[name]
    start: datetime | None = getattr(times, start_field)
    end: datetime | None = getattr(times, end_field)
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def p90(values: list[float]) -> float:
    """The 90th percentile by linear interpolation between closest ranks (numpy's default, 'inclusive')."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def summarize(values: list[float]) -> Summary:
    """Count, median and 90th percentile of some durations (at least one)."""
    return Summary(count=len(values), median_s=float(statistics.median(values)), p90_s=p90(values))


def stage_kpis(records: Iterable[tuple[G, StageTimes]]) -> dict[G, dict[str, Summary]]:
    """Per group, per interval: count, median and 90th percentile (intervals with no complete record are left out)."""
    samples: dict[G, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for group, times in records:
        for name in INTERVALS:
            seconds = interval_s(times, name)
            if seconds is not None:
                samples[group][name].append(seconds)
    return {group: {name: summarize(v) for name, v in by_name.items()} for group, by_name in samples.items()}
