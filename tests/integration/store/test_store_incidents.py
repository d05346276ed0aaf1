"""The dispatch repository on SQLite and PostgreSQL: optimistic changes, one active assignment a responder even under
concurrent dispatch, stage times for KPIs, Open311 requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.store.incidents import IncidentRepo, ResponderBusy

T0 = datetime(2026, 12, 3, 8, tzinfo=UTC)


def incident(iid: str, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": iid,
        "type": "fire",
        "priority": 1,
        "stage": "new",
        "route": "police",
        "origin": "call",
        "summary": "smoke on the 3rd floor",
        "lon": 121.25,
        "lat": 31.38,
        "town": "anting",
        "opened_at": T0,
        "updated_at": T0,
        "version": 0,
    }
    row.update(changes)
    return row


def responder(rid: str) -> dict[str, object]:
    return {
        "id": rid,
        "kind": "police",
        "name": f"Car {rid}",
        "unit_type": "car",
        "station": "anting-ps",
        "service_codes": [],
        "capabilities": ["patrol"],
        "status": "available",
        "updated_at": T0,
        "version": 0,
    }


async def test_a_change_applies_only_at_the_version_it_read(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        repo = IncidentRepo(conn)
        await repo.insert(incident("INC-1"))
        assert await repo.change("INC-1", version=0, values={"stage": "triaged", "triaged_at": T0, "updated_at": T0})
        assert not await repo.change("INC-1", version=0, values={"stage": "cancelled", "updated_at": T0})
        row = await repo.get("INC-1")
    assert row is not None and row["stage"] == "triaged" and row["version"] == 1
    assert row["triaged_at"] == T0 and row["opened_at"].tzinfo is not None


async def test_two_dispatchers_sending_one_unit_at_once_exactly_one_wins(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        repo = IncidentRepo(conn)
        await repo.put_responder(responder("car-7"))
        await repo.insert(incident("INC-1"))
        await repo.insert(incident("INC-2"))

    async def dispatch(incident_id: str) -> str:
        try:
            async with engine.begin() as conn:
                await IncidentRepo(conn).assign(
                    {
                        "id": f"A-{incident_id}",
                        "incident_id": incident_id,
                        "responder_id": "car-7",
                        "assigned_at": T0,
                        "actor": "dispatcher",
                    }
                )
                await asyncio.sleep(0.05)  # both transactions overlap
        except ResponderBusy:
            return "busy"
        return "won"

    results = await asyncio.gather(dispatch("INC-1"), dispatch("INC-2"))
    assert sorted(results) == ["busy", "won"]
    async with engine.connect() as conn:
        repo = IncidentRepo(conn)
        active = await repo.active_assignment("car-7")
        assert active is not None
        winner = active["incident_id"]
        # Once released, the unit can be sent again.
        assert await repo.release(incident_id=winner, at=T0 + timedelta(minutes=5), outcome="closed") == 1
        await repo.assign(
            {"id": "A-3", "incident_id": "INC-3", "responder_id": "car-7", "assigned_at": T0, "actor": "d"}
        )
        assert [a["outcome"] for a in await repo.assignments(winner)] == ["closed"]
        await conn.commit()


async def test_a_refused_assignment_leaves_the_transaction_usable(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        repo = IncidentRepo(conn)
        await repo.put_responder(responder("car-8"))
        await repo.assign({"id": "A-1", "incident_id": "I1", "responder_id": "car-8", "assigned_at": T0, "actor": "d"})
        with pytest.raises(ResponderBusy):
            await repo.assign(
                {"id": "A-2", "incident_id": "I2", "responder_id": "car-8", "assigned_at": T0, "actor": "d"}
            )
        await repo.insert(incident("INC-after"))
    async with engine.connect() as conn:
        assert await IncidentRepo(conn).get("INC-after") is not None


async def test_stage_times_and_steps_and_responder_registry(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        repo = IncidentRepo(conn)
        await repo.insert(incident("INC-1", dispatched_at=T0 + timedelta(seconds=40)))
        await repo.insert(incident("INC-2", town="huating", opened_at=T0 + timedelta(days=2)))
        await repo.add_step(
            {
                "id": "S1",
                "incident_id": "INC-1",
                "action": "dispatch",
                "from_stage": "new",
                "to_stage": "dispatched",
                "actor": "d",
                "at": T0,
                "unit_id": "car-7",
                "evidence": [{"kind": "alert", "ref": "AL-1"}],
            }
        )
        assert await repo.put_responder(responder("car-7"))
        assert await repo.set_responder("car-7", {"lon": 121.3, "lat": 31.4, "fix_at": T0, "updated_at": T0})
        assert not await repo.put_responder({**responder("car-7"), "name": "Car seven", "status": "available"})
        times = await repo.stage_times(since=T0, until=T0 + timedelta(days=1), group="town")
        steps = await repo.steps("INC-1")
        car = await repo.responder("car-7")
    assert [(t["group"], (t["dispatched_at"] - t["opened_at"]).total_seconds()) for t in times] == [("anting", 40.0)]
    assert steps[0]["evidence"] == [{"kind": "alert", "ref": "AL-1"}]
    # Re-importing the registry keeps the live position.
    assert car is not None and car["name"] == "Car seven" and car["lon"] == 121.3 and car["version"] == 2


async def test_open311_requests_filter_by_service_and_status(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        repo = IncidentRepo(conn)
        for i, code in enumerate(["water.leak", "road.damage", "water.leak"]):
            await repo.put_request(
                {
                    "id": f"R{i}",
                    "incident_id": f"INC-{i}",
                    "service_code": code,
                    "status": "open",
                    "attributes": {},
                    "requested_at": T0 + timedelta(minutes=i),
                    "updated_at": T0 + timedelta(minutes=i),
                }
            )
        assert await repo.update_request("R2", {"status": "closed", "status_notes": "fixed", "updated_at": T0})
        water = await repo.requests(service_codes=["water.leak"])
        open_water = await repo.requests(service_codes=["water.leak"], status="open")
    assert [r["id"] for r in water] == ["R2", "R0"]
    assert [r["id"] for r in open_water] == ["R0"]


async def test_merge_candidates_are_those_near_by_building_or_box_and_found_through_indexes(
    engine: AsyncEngine,
) -> None:
    """Same type, open, in the window, and in the building or inside the box; on SQLite both branches are index
    searches (a scan of every open incident of the window cost 10 ms a new incident at 15,000 open)."""
    box = (121.249, 31.379, 121.251, 31.381)
    rows = [
        incident("IN-BOX", opened_at=T0 + timedelta(minutes=1)),
        incident("IN-BUILDING", lon=121.30, building="b-1", opened_at=T0 + timedelta(minutes=2)),
        incident("NO-PLACE", lon=None, lat=None, building="b-1", opened_at=T0 + timedelta(minutes=3)),
        incident("OUTSIDE", lon=121.2515),
        incident("OTHER-TYPE", type="dispute"),
        incident("CLOSED", stage="closed"),
        incident("TOO-OLD", opened_at=T0 - timedelta(hours=1)),
    ]
    statements: list[tuple[str, object]] = []

    def keep(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        if "FROM incidents" in statement:
            statements.append((statement, parameters))

    async with engine.begin() as conn:
        repo = IncidentRepo(conn)
        for row in rows:
            await repo.insert(row)
        event.listen(engine.sync_engine, "before_cursor_execute", keep)
        try:
            found = await repo.merge_candidates(
                type="fire", stages=["new", "triaged"], since=T0 - timedelta(minutes=5), building="b-1", box=box
            )
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", keep)
        assert [r["id"] for r in found] == ["NO-PLACE", "IN-BUILDING", "IN-BOX"]  # newest first
        assert set(found[0]) == {"id", "type", "opened_at", "lon", "lat", "building"}
        assert found[0]["opened_at"] == T0 + timedelta(minutes=3)
        assert await repo.merge_candidates(type="fire", stages=["new"], since=T0, building=None, box=None) == []
        if engine.dialect.name == "sqlite":
            (statement, parameters), *_ = statements
            plan = [r[3] for r in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
            assert "MULTI-INDEX OR" in plan, plan
            assert not any(step.startswith("SCAN") or "stage_opened_at" in step for step in plan), plan
