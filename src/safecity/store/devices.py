"""Repository over the `devices` table: queries only; the caller owns the transaction."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from safecity.store.driver_thread import SQLITE_MAX_VARIABLES, in_driver_thread, run_statement, sqlite_time
from safecity.store.rows import aware, to_dict
from safecity.store.tables import devices

_TIME_COLUMNS = ("last_seen", "created_at", "updated_at")
# Keep IN lists well under SQLite's and asyncpg's bound-parameter limits.
_CHUNK = 500
_SQLITE_SEEN_ROWS = SQLITE_MAX_VARIABLES // 2


def _sqlite_set_last_seen(db: sqlite3.Connection, seen: list[tuple[str, datetime]]) -> None:
    """In the driver's thread: one `UPDATE ... FROM (VALUES ...)` statement (one step) per up to 16,383 devices."""
    for start in range(0, len(seen), _SQLITE_SEEN_ROWS):
        chunk = seen[start : start + _SQLITE_SEEN_ROWS]
        params = [value for device_id, at in chunk for value in (device_id, sqlite_time(at))]
        values = ", ".join(["(?, ?)"] * len(chunk))
        run_statement(
            db,
            f"UPDATE devices SET last_seen = v.column2 FROM (VALUES {values}) AS v WHERE devices.id = v.column1",
            params,
        )


class DeviceRepo:
    """Reads and writes device rows on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, device_id: str) -> dict[str, Any] | None:
        """Return one device row, or None."""
        result = await self.conn.execute(select(devices).where(devices.c.id == device_id))
        row = result.first()
        return to_dict(row, _TIME_COLUMNS) if row is not None else None

    async def existing_ids(self, device_ids: Iterable[str]) -> set[str]:
        """Return which of these ids are registered."""
        wanted = list(device_ids)
        found: set[str] = set()
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            result = await self.conn.execute(select(devices.c.id).where(devices.c.id.in_(chunk)))
            found.update(result.scalars())
        return found

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert device rows (executemany)."""
        if rows:
            await self.conn.execute(insert(devices), list(rows))

    async def update(self, device_id: str, values: dict[str, Any]) -> bool:
        """Update one device's columns; return whether it exists."""
        result = await self.conn.execute(update(devices).where(devices.c.id == device_id).values(**values))
        return bool(result.rowcount)

    async def update_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Update many devices (executemany); every row has the same keys, `id` among them."""
        if not rows:
            return
        columns = [c for c in rows[0] if c != "id"]
        statement = (
            update(devices)
            .where(devices.c.id == bindparam("match_id"))
            .values({c: bindparam(f"v_{c}") for c in columns})
        )
        # Bind names must differ from column names (SQLAlchemy reserves those for SET).
        params = [{"match_id": r["id"], **{f"v_{c}": r[c] for c in columns}} for r in rows]
        await self.conn.execute(statement, params)

    async def set_last_seen(self, seen: dict[str, datetime]) -> None:
        """Set `last_seen` of many devices: on SQLite in one call to the driver's thread (`store.driver_thread`),
        elsewhere as an executemany."""
        if self.conn.dialect.name == "sqlite":
            await in_driver_thread(
                self.conn, _sqlite_set_last_seen, [(d, at.astimezone(UTC)) for d, at in seen.items()]
            )
            return
        statement = update(devices).where(devices.c.id == bindparam("match_id")).values(last_seen=bindparam("v_seen"))
        await self.conn.execute(statement, [{"match_id": d, "v_seen": at} for d, at in seen.items()])

    async def delete(self, device_id: str) -> bool:
        """Delete one device; return whether it existed."""
        result = await self.conn.execute(delete(devices).where(devices.c.id == device_id))
        return bool(result.rowcount)

    async def list(
        self,
        *,
        kind: str | None = None,
        town: str | None = None,
        community: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of devices ordered by id, and the total that match the filters."""
        conditions = []
        if kind is not None:
            conditions.append(devices.c.kind == kind)
        if town is not None:
            conditions.append(devices.c.town == town)
        if community is not None:
            conditions.append(devices.c.community == community)
        if status is not None:
            conditions.append(devices.c.status == status)
        total = await self.conn.scalar(select(func.count()).select_from(devices).where(*conditions))
        result = await self.conn.execute(
            select(devices).where(*conditions).order_by(devices.c.id).limit(limit).offset(offset)
        )
        return [to_dict(row, _TIME_COLUMNS) for row in result], int(total or 0)

    async def all_for_index(self) -> builtins.list[dict[str, Any]]:
        """Return the columns the hot-path device index needs, for every device."""
        c = devices.c
        result = await self.conn.execute(
            select(
                c.id, c.kind, c.town, c.community, c.building, c.lon, c.lat, c.offline_after_s, c.status, c.last_seen
            )
        )
        rows = [dict(row._mapping) for row in result]
        for row in rows:
            row["last_seen"] = aware(row["last_seen"])
        return rows
