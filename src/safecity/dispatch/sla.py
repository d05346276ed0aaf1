"""Service-level targets of the loop and their timers (pure): per priority and area type, how long each stage may take.

A target is a KPI interval (`safecity.dispatch.kpi.INTERVALS`) with a limit. While the interval's start is known and
its end is not, a timer runs to `start + limit`; when it passes, the incident is in breach (the service raises an
alert through the warning engine once per incident and interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safecity.dispatch.kpi import INTERVALS, StageTimes


class AreaType(StrEnum):
    """How built-up the incident's area is (on-scene targets differ)."""

    URBAN = "urban"
    RURAL = "rural"


Seconds = Annotated[float, Field(gt=0)]


class Target(BaseModel):
    """Limits in seconds for some intervals, for incidents of `priority` (None: any) in `area` (None: any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    priority: int | None = Field(None, ge=1, le=9)
    area: AreaType | None = None
    limits: dict[str, Seconds]

    @field_validator("limits")
    @classmethod
    def _known_intervals(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(INTERVALS))
        if unknown:
            raise ValueError(f"unknown interval(s) {', '.join(unknown)}; known: {', '.join(INTERVALS)}")
        return value


def _default_targets() -> list[Target]:
    return [
        Target(limits={"warn": 1.0, "dispatch": 60.0}),
        Target(area=AreaType.URBAN, limits={"response": 300.0}),
        Target(area=AreaType.RURAL, limits={"response": 600.0}),
    ]


class SlaSettings(BaseModel):
    """Targets of the loop; the most specific matching target wins per interval (priority and area > one > none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[Target] = Field(default_factory=_default_targets)
    rural_towns: frozenset[str] = Field(frozenset(), description="Town ids whose incidents use the rural targets.")

    def limits_for(self, priority: int, area: AreaType) -> dict[str, float]:
        """The limit of each interval for an incident of `priority` in `area`."""
        chosen: dict[str, tuple[int, float]] = {}
        for target in self.targets:
            if target.priority not in (None, priority) or target.area not in (None, area):
                continue
            rank = (target.priority is not None) + (target.area is not None)
            for name, limit in target.limits.items():
                if name not in chosen or rank >= chosen[name][0]:
                    chosen[name] = (rank, limit)
        return {name: limit for name, (_, limit) in chosen.items()}

    def area_of(self, town: str | None) -> AreaType:
        """Rural when the town is listed as rural, else urban."""
        return AreaType.RURAL if town is not None and town in self.rural_towns else AreaType.URBAN


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
