"""Event repository: queries over the `events` table (rows are written by `EventWriter`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import ids
from safecity.store.rows import to_dict, utc
from safecity.store.tables import events

EventRow = dict[str, Any]
# Module-level alias: inside the class, `list` names the method.
IdList = list[str]
KeyList = list[tuple[str, str]]
HeatCells = list[tuple[float, float, int]]
_TIME_COLUMNS = ("occurred_at", "received_at", "stored_at")


class EventRepo:
    """Read stored events: counts, filtered lists with keyset pagination, one by id."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def count(self, kind: str | None = None) -> int:
        """Return how many events are stored (of one kind, when given)."""
        stmt = select(func.count()).select_from(events)
        if kind is not None:
            stmt = stmt.where(events.c.kind == str(kind))
        async with self.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def list(
        self,
        *,
        kind: str | None = None,
        device_id: str | None = None,
        district: str | None = None,
        town: str | None = None,
        community: str | None = None,
        building: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after_id: str | None = None,
        order: Literal["desc", "asc"] = "desc",
    ) -> list[EventRow]:
        """Return events matching every filter given, by id (newest first unless order="asc").

        `since` is inclusive and `until` exclusive, on `occurred_at`. Keyset pagination: pass the last id of a
        page as `after_id` to get the next page in the same order.
        """
        conditions: list[ColumnElement[bool]] = []
        for column, value in (
            (events.c.kind, kind),
            (events.c.device_id, device_id),
            (events.c.district, district),
            (events.c.town, town),
            (events.c.community, community),
            (events.c.building, building),
        ):
            if value is not None:
                conditions.append(column == str(value))
        if since is not None:
            conditions.append(events.c.occurred_at >= utc(since))
        if until is not None:
            conditions.append(events.c.occurred_at < utc(until))
        if after_id is not None:
            conditions.append(events.c.id < after_id if order == "desc" else events.c.id > after_id)
        stmt = (
            select(events)
            .where(*conditions)
            .order_by(events.c.id.desc() if order == "desc" else events.c.id.asc())
            .limit(max(0, limit))
        )
        async with self.engine.connect() as conn:
            result = await conn.execute(stmt)
            return [to_dict(row, _TIME_COLUMNS) for row in result]

    async def get(self, event_id: str) -> EventRow | None:
        """Return one event by id, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        return None if row is None else to_dict(row, _TIME_COLUMNS)

    async def count_by_kind(self) -> dict[str, int]:
        """Return the number of stored events per kind."""
        stmt = select(events.c.kind, func.count()).group_by(events.c.kind)
        async with self.engine.connect() as conn:
            return {str(kind): int(n) for kind, n in (await conn.execute(stmt)).all()}

    async def heat(
        self, *, since: datetime, until: datetime, cell_deg: float, kind: str | None = None, limit: int = 20_000
    ) -> HeatCells:
        """Events with a position in [since, until) counted per grid cell of `cell_deg` degrees: (west, south,
        count) of each non-empty cell, busiest first."""
        # Shift to non-negative before truncating, so the cast floors on SQLite (which may lack floor()).
        if self.engine.dialect.name == "sqlite":
            gx = cast((events.c.lon + 180.0) / cell_deg, Integer)
            gy = cast((events.c.lat + 90.0) / cell_deg, Integer)
        else:
            gx = cast(func.floor((events.c.lon + 180.0) / cell_deg), Integer)
            gy = cast(func.floor((events.c.lat + 90.0) / cell_deg), Integer)
        n = func.count().label("n")
        conditions = [
            events.c.occurred_at >= utc(since),
            events.c.occurred_at < utc(until),
            events.c.lon.isnot(None),
            events.c.lat.isnot(None),
        ]
        if kind is not None:
            conditions.append(events.c.kind == kind)
        stmt = select(gx.label("gx"), gy.label("gy"), n).where(*conditions).group_by("gx", "gy")
        stmt = stmt.order_by(n.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(gx_ * cell_deg - 180.0, gy_ * cell_deg - 90.0, int(count)) for gx_, gy_, count in rows]

    async def recent_message_keys(self, since: datetime, limit: int) -> KeyList:
        """Return (device_id, message_id) of events received since `since` that carry a sender's id, oldest first."""
        floor = ids.floor_id(int(since.timestamp() * 1000))  # `since` is aware (clock.now)
        stmt = (
            select(events.c.device_id, events.c.message_id)
            .where(events.c.id >= floor, events.c.message_id.isnot(None))
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(str(d), str(m)) for d, m in reversed(rows)]

    async def ids_for_device(self, device_id: str) -> IdList:
        """Return the ids of every event of one device, oldest first."""
        stmt = select(events.c.id).where(events.c.device_id == device_id).order_by(events.c.id)
        async with self.engine.connect() as conn:
            return [str(i) for i in (await conn.execute(stmt)).scalars()]
