"""The demo's dispatch floor: responders on the synthetic district, calls coming in, a dispatcher sending the best
unit, units driving the road network to the scene, handling it and coming free, and departments closing the
incidents diverted to them over Open311. Alerts whose rule opens incidents join the same loop on their own.

Time runs `speedup` times faster on the road than on the clock, and no trip takes longer than `MAX_TRIP_S` on the
clock, so a unit is seen arriving within a minute.
Incidents opened from alerts are left to the command centre's operators for `alert_hold_s` before the floor's own
dispatcher takes them, and a unit that anyone dispatched (the command centre, the API) drives to its scene here too.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from safecity.dispatch.incident import IncidentDraft, StepIn
from safecity.dispatch.lifecycle import Action, Stage
from safecity.dispatch.responders import ResponderIn
from safecity.kernel import clock
from safecity.kernel.dispatch_settings import Route
from safecity.kernel.errors import SafeCityError

log = structlog.get_logger(__name__)

MAX_TRIP_S = 60.0  # the longest drive on the clock: a far unit still arrives while someone watches

CALL_TYPES = ("fire", "traffic_collision", "medical", "dispute", "intrusion", "water_leak", "noise", "road_damage")
CALL_WEIGHTS = (1, 3, 3, 4, 2, 1, 1, 1)


@dataclass
class _Trip:
    """A unit on its way: the route line, when it left and how long the road engine says it takes."""

    incident_id: str
    line: list[tuple[float, float]]
    left: datetime
    eta_s: float
    arrived: datetime | None = None
    on_scene_s: float = 60.0
    seen: set[str] = field(default_factory=set)


def _along(line: list[tuple[float, float]], share: float) -> tuple[float, float]:
    """The point `share` (0..1) of the way along a line, by vertex count (good enough for a map marker)."""
    if len(line) == 1 or share <= 0:
        return line[0]
    if share >= 1:
        return line[-1]
    pos = share * (len(line) - 1)
    i = int(pos)
    f = pos - i
    (x0, y0), (x1, y1) = line[i], line[i + 1]
    return (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)


class DispatchSimulator:
    """Drives the dispatch slice of a running node (its `dispatch`, `open311` and `roads`)."""

    def __init__(
        self,
        runtime: Any,
        *,
        seed: int = 7,
        call_every_s: float = 20.0,
        speedup: float = 5.0,
        alert_hold_s: float = 120.0,
    ) -> None:
        self.runtime = runtime
        self.alert_hold_s = alert_hold_s
        self.rng = random.Random(seed)
        self.call_every_s = call_every_s
        self.speedup = speedup
        self.trips: dict[str, _Trip] = {}
        self.diverted: dict[str, datetime] = {}
        self.pending: dict[str, datetime] = {}
        self.next_call: datetime | None = None
        self.calls = 0

    def _point(self) -> tuple[float, float]:
        graph = self.runtime.roads.network.graph
        node = self.rng.randrange(graph.n_nodes)
        return (float(graph.lon[node]), float(graph.lat[node]))

    async def setup(self) -> None:
        """Register the district's responders where they stand now."""
        dispatch = self.runtime.dispatch
        units: list[ResponderIn] = []
        for i in range(24):
            lon, lat = self._point()
            kind = "motorbike" if i % 4 == 3 else "car"
            caps = ["patrol", "traffic", "first_aid"] + (["fire"] if i % 3 == 0 else [])
            units.append(
                ResponderIn(
                    id=f"P{i + 1:02d}",
                    kind="police",
                    unit_type=kind,
                    station=f"ps-{i % 6 + 1}",
                    capabilities=caps,
                    lon=lon,
                    lat=lat,
                )
            )
        for i in range(4):
            lon, lat = self._point()
            units.append(
                ResponderIn(
                    id=f"G{i + 1:02d}",
                    kind="community",
                    unit_type="guard",
                    community=f"c-{i + 1}",
                    capabilities=["first_aid", "patrol"],
                    lon=lon,
                    lat=lat,
                )
            )
        report = await dispatch.import_responders(units)
        log.info("demo_responders", created=report.created, updated=report.updated)

    async def run(self) -> None:
        """Tick once a second until cancelled."""
        if not self.runtime.roads.loaded:
            log.warning("demo_dispatch_off", reason="no road network")
            return
        await self.setup()
        while True:
            try:
                await self.tick(clock.now())
            except SafeCityError as err:  # an operator (or the API) acted first: try again next tick
                log.info("demo_dispatch_skip", code=err.code)
            await asyncio.sleep(1.0)

    async def tick(self, now: datetime) -> None:
        """One second of the floor: a new call when due, dispatches, driving, handling and department answers."""
        dispatch = self.runtime.dispatch
        if self.next_call is None or now >= self.next_call:
            self.next_call = now + _seconds(self.rng.expovariate(1.0 / self.call_every_s))
            await self._call(now)
        waiting, _ = await dispatch.list(stages=(Stage.NEW, Stage.TRIAGED, Stage.REOPENED), limit=50)
        for incident in waiting:
            if incident.route is Route.DEPARTMENT:
                continue
            # Alerts are the command centre's to dispatch first; calls are the floor's own.
            wait = self.alert_hold_s if incident.origin == "alert" else self.rng.uniform(5, 15)
            due = self.pending.setdefault(incident.id, now + _seconds(wait))
            if now >= due:
                await self._dispatch(incident.id, now)
        diverted, _ = await dispatch.list(stages=(Stage.DIVERTED,), limit=50)
        for incident in diverted:
            due = self.diverted.setdefault(incident.id, now + _seconds(self.rng.uniform(30, 90)))
            if now >= due:
                await self.runtime.open311.update(
                    incident.id, status="closed", notes="repaired by the crew (simulated)", agency=incident.department
                )
                self.diverted.pop(incident.id, None)
        await self._adopt(now)
        for unit_id, trip in list(self.trips.items()):
            try:
                await self._drive(unit_id, trip, now)
            except SafeCityError as err:  # someone else moved the incident: the unit's trip ends here
                self.trips.pop(unit_id, None)
                log.info("demo_trip_ended", unit=unit_id, code=err.code)

    async def _call(self, now: datetime) -> None:
        lon, lat = self._point()
        kind = self.rng.choices(CALL_TYPES, CALL_WEIGHTS)[0]
        draft = IncidentDraft(
            type=kind,
            origin="call",
            lon=lon,
            lat=lat,
            summary=f"demo call {self.calls + 1}: {kind.replace('_', ' ')}",
            caller=f"138{self.rng.randrange(10**8):08d}",
        )
        await self.runtime.dispatch.open(draft, actor="operator:demo", now=now)
        self.calls += 1

    async def _dispatch(self, incident_id: str, now: datetime) -> None:
        dispatch = self.runtime.dispatch
        ranked = [r for r in await dispatch.recommend(incident_id, now=now, routes=1) if r.eligible]
        self.pending.pop(incident_id, None)
        if not ranked:
            return
        best = ranked[0]
        if best.preempts is not None:  # taken from a less urgent incident: that trip ends here
            self.trips.pop(best.id, None)
        await dispatch.act(
            incident_id,
            StepIn(action=Action.DISPATCH, unit_id=best.id, preempt=best.preempts is not None),
            actor="dispatcher:demo",
            now=now,
        )
        await dispatch.act(incident_id, StepIn(action=Action.DEPART), actor=f"unit:{best.id}", now=now)
        line = list(best.route) or [(0.0, 0.0)]
        self.trips[best.id] = _Trip(
            incident_id, line, now, self._trip_s(best.eta_s or 60.0), on_scene_s=self.rng.uniform(20, 60)
        )

    def _trip_s(self, road_s: float) -> float:
        """Seconds on the clock for a drive of `road_s` on the road."""
        return min(max(road_s / self.speedup, 5.0), MAX_TRIP_S)

    async def _adopt(self, now: datetime) -> None:
        """Drive the units someone else dispatched (the command centre, the API): depart, then the same trip.

        A unit still on its way whose incident no longer holds it (taken for a more urgent one, or recalled) stops
        that trip where it stands, so it sets off for its new incident now rather than once the old trip ends.
        """
        dispatch = self.runtime.dispatch
        # Each of these incidents holds a unit, so the page holds them all (a district has far fewer units).
        sent, _ = await dispatch.list(stages=(Stage.DISPATCHED, Stage.EN_ROUTE), limit=1000)
        holder = {incident.id: incident.unit_id for incident in sent}
        for unit_id, trip in list(self.trips.items()):
            if trip.arrived is None and holder.get(trip.incident_id) != unit_id:
                del self.trips[unit_id]
                log.info("demo_trip_ended", unit=unit_id, incident=trip.incident_id, reason="unit_reassigned")
        moving = {trip.incident_id for trip in self.trips.values()}
        for incident in sent:
            unit_id = incident.unit_id
            if incident.id in moving or unit_id is None or unit_id in self.trips or incident.lon is None:
                continue
            unit = await dispatch.responder(unit_id)
            if unit.lon is None or unit.lat is None or incident.lat is None:
                continue
            route = await self.runtime.roads.travel_time((unit.lon, unit.lat), (incident.lon, incident.lat))
            if incident.stage is Stage.DISPATCHED:
                await dispatch.act(incident.id, StepIn(action=Action.DEPART), actor=f"unit:{unit_id}", now=now)
            line = list(route.coordinates) or [(unit.lon, unit.lat), (incident.lon, incident.lat)]
            eta_s = self._trip_s(route.seconds)
            self.trips[unit_id] = _Trip(incident.id, line, now, eta_s, on_scene_s=self.rng.uniform(20, 60))
            log.info("demo_trip_adopted", unit=unit_id, incident=incident.id, eta_s=round(eta_s, 1))

    async def _drive(self, unit_id: str, trip: _Trip, now: datetime) -> None:
        dispatch = self.runtime.dispatch
        if trip.arrived is None:
            share = (now - trip.left).total_seconds() / trip.eta_s
            lon, lat = _along(trip.line, share)
            if trip.line[0] != (0.0, 0.0):
                await dispatch.report_position(unit_id, lon, lat, now=now)
            if share >= 1:
                trip.arrived = now
                await dispatch.act(trip.incident_id, StepIn(action=Action.ARRIVE), actor=f"unit:{unit_id}", now=now)
            return
        if (now - trip.arrived).total_seconds() >= trip.on_scene_s:
            del self.trips[unit_id]
            for step in (
                StepIn(action=Action.DISPOSE, disposition="handled on scene (simulated)"),
                StepIn(action=Action.CLOSE, feedback="caller informed (simulated)"),
            ):
                await dispatch.act(trip.incident_id, step, actor=f"unit:{unit_id}", now=now)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
