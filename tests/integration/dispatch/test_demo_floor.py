"""The demo's dispatch floor on a real SQLite store and road network: a unit the floor is driving to one incident and
that the command centre takes for a more urgent one sets off for the new scene on the floor's next tick."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.dispatch.incident import IncidentDraft, StepIn
from safecity.dispatch.lifecycle import Action, Stage
from safecity.dispatch.responders import ResponderIn
from safecity.dispatch.service import DispatchService
from safecity.dispatch.travel import RoadTravel
from safecity.geo.road.service import RoadService
from safecity.geo.road.synthetic import synthetic_network
from safecity.kernel.bus import MemoryBus
from safecity.kernel.dispatch_settings import DispatchSettings
from safecity.kernel.settings import RoadSettings
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.sim.dispatch import DispatchSimulator
from safecity.store.engine import create_engine, upgrade

CENTER = (121.25, 31.37)
ROADS = RoadSettings(synthetic=True, synthetic_nodes=900, synthetic_center=CENTER)


@pytest.fixture
async def floor(sqlite_url: str) -> AsyncIterator[DispatchSimulator]:
    await upgrade(sqlite_url)
    engine: AsyncEngine = create_engine(sqlite_url)
    bus = MemoryBus()
    await bus.start()
    roads = RoadService(ROADS)
    roads.preload(synthetic_network(900, center=CENTER, spacing_m=ROADS.synthetic_spacing_m))
    await roads.start()
    dispatch = DispatchService(
        engine,
        bus,
        DispatchSettings(),
        pseudonymize=Pseudonymizer(b"k" * 32),
        link_key=b"l" * 32,
        travel=RoadTravel(roads),
    )
    yield DispatchSimulator(SimpleNamespace(dispatch=dispatch, roads=roads, open311=None), speedup=1.0)
    await roads.close()
    await bus.close()
    await engine.dispose()


async def test_a_unit_taken_for_a_more_urgent_incident_leaves_its_old_trip_and_sets_off_at_once(
    floor: DispatchSimulator,
) -> None:
    dispatch = floor.runtime.dispatch
    graph = floor.runtime.roads.network.graph
    here = (float(graph.lon[0]), float(graph.lat[0]))
    far = (float(graph.lon[graph.n_nodes - 1]), float(graph.lat[graph.n_nodes - 1]))
    await dispatch.import_responders(
        [ResponderIn(id="P01", kind="police", unit_type="car", station="ps-1", capabilities=["patrol", "fire"])]
    )
    now = datetime.now(UTC)
    await dispatch.report_position("P01", *here, now=now)
    floor.next_call = now + timedelta(hours=1)  # no calls of the floor's own in this test

    dispute = (
        await dispatch.open(IncidentDraft(type="dispute", lon=far[0], lat=far[1]), actor="operator:t", now=now)
    ).incident
    await floor._dispatch(dispute.id, now)  # the floor sends P01 on a long drive (a minute on the clock)
    assert floor.trips["P01"].incident_id == dispute.id
    await floor.tick(now + timedelta(seconds=1))
    assert (await dispatch.get(dispute.id)).stage is Stage.EN_ROUTE

    # The command centre takes P01 for a fire beside where it stands now.
    fire = (
        await dispatch.open(IncidentDraft(type="fire", lon=here[0], lat=here[1]), actor="operator:t", now=now)
    ).incident
    taken = await dispatch.act(
        fire.id, StepIn(action=Action.DISPATCH, unit_id="P01", preempt=True), actor="operator:t", now=now
    )
    assert taken.unit_id == "P01"

    await floor.tick(now + timedelta(seconds=2))
    assert (await dispatch.get(fire.id)).stage is Stage.EN_ROUTE
    assert floor.trips["P01"].incident_id == fire.id
    # The recalled dispute waits for a unit again; its old trip no longer moves P01.
    assert (await dispatch.get(dispute.id)).unit_id is None
