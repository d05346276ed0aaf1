"""Service-level targets of the loop and their timers (pure): per priority and area type, how long each stage may take.

A target is a KPI interval (`safecity.dispatch.kpi.INTERVALS`) with a limit. While the interval's start is known and
its end is not, a timer runs to `start + limit`; when it passes, the incident is in breach (the service raises an
alert through the warning engine once per incident and interval).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from safecity.dispatch.kpi import StageTimes
from safecity.kernel.dispatch_settings import INTERVALS


@dataclass(frozen=True, slots=True)
class Timer:
    """One interval's clock for one incident."""

    interval: str
    limit_s: float
    started_at: datetime
    due_at: datetime
    ended_at: datetime | None

    def breached(self, now: datetime) -> bool:
        """Whether the interval took (or has run) longer than its limit."""
        return (self.ended_at or now) > self.due_at

    def elapsed_s(self, now: datetime) -> float:
        """Seconds so far (or in all, once ended)."""
        return ((self.ended_at or now) - self.started_at).total_seconds()


def timers(times: StageTimes, limits: dict[str, float]) -> list[Timer]:
    """Timers of every limited interval whose start is known (running or ended), in `INTERVALS` order."""
    found = []
    for name in INTERVALS:
        if name not in limits:
            continue
        start_field, end_field = INTERVALS[name]
        start: datetime | None = getattr(times, start_field)
        if start is None:
            continue
        due = start + timedelta(seconds=limits[name])
        found.append(Timer(name, limits[name], start, due, getattr(times, end_field)))
    return found


def start_windows(
    limit_sets: Iterable[dict[str, float]], since: datetime, now: datetime
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per stage-time field that starts a limited interval: the ranges (after, until] its value lies in when one of
    its timers reached its limit in (since, now], one range per limit that the targets (`limit_sets`) give its
    intervals. They may hold incidents whose own limit is another one: `timers` tells them apart."""
    limits_of: dict[str, set[float]] = {}
    for limits in limit_sets:
        for name, limit in limits.items():
            limits_of.setdefault(INTERVALS[name][0], set()).add(limit)
    return {
        name: [(since - timedelta(seconds=limit), now - timedelta(seconds=limit)) for limit in sorted(limits)]
        for name, limits in limits_of.items()
    }
