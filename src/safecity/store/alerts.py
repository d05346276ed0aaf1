"""Repository over the `alerts` and `alert_steps` tables: queries only; the caller owns the transaction."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from safecity.store.rows import to_dict, utc
from safecity.store.tables import alert_steps, alerts

# Bound parameters of one `IN (...)` query (SQLite allows 32,766 a statement).
_IDS_PER_QUERY = 1_000
_ALERT_TIMES = ("first_at", "last_at", "created_at", "updated_at")
# What a repeat of the same condition (`alert.updated`) may change; lifecycle columns stay as people set them.
_UPSERT_COLUMNS = (
    "category",
    "severity",
    "urgency",
    "certainty",
    "headline",
    "description",
    "opens_incident",
    "town",
    "community",
    "building",
    "area",
    "trigger_event_ids",
    "trigger_message_id",
    "contributors",
    "count",
    "last_at",
    "hops",
    "updated_at",
    "scope",
)


@functools.cache
def _upsert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (id) DO UPDATE, built once per dialect (values come as parameters).

    Built per call, the statement cost SQLAlchemy ~5 ms of CPU an alert (cache keys of every column and the
    `excluded` proxies), a stall of the event loop on every alert.
    """
    stmt = postgresql.insert(alerts) if dialect == "postgresql" else sqlite.insert(alerts)
    return stmt.on_conflict_do_update(
        index_elements=[alerts.c.id],
        set_={column: stmt.excluded[column] for column in _UPSERT_COLUMNS},
        where=stmt.excluded["count"] >= alerts.c["count"],
    )


# The group commit's other statements, built once (values come as parameters): built per call, SQLAlchemy made their
# cache keys and coercions every commit (a commit of five delivered marks and stamps: 1.0-1.7 ms of CPU, 0.85-0.9 now).
_HOPS_OF = select(alerts.c.id, alerts.c.hops).where(alerts.c.id.in_(bindparam("ids", expanding=True))).with_for_update()
_SET_HOPS = update(alerts).where(alerts.c.id == bindparam("alert_id")).values(hops=bindparam("new_hops"))


def _alert(row: Any) -> dict[str, Any]:
    data = to_dict(row, _ALERT_TIMES)
    data["opens_incident"] = bool(data["opens_incident"])
    return data


class AlertRepo:
    """Reads and writes alert rows and their lifecycle steps on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def upsert(self, row: dict[str, Any]) -> None:
        """Insert an alert, or move an existing one forward (only when the incoming count is not older).

        `alert.raised` and `alert.updated` may arrive in any order; comparing counts keeps the newest repeat.
        """
        values = {**row}
        for column in _ALERT_TIMES:
            values[column] = utc(values[column])
        await self.conn.execute(_upsert(self.conn.dialect.name), values)

    async def upsert_many(self, rows: builtins.list[dict[str, Any]]) -> None:
        """`upsert` of several alerts in one statement execution (the alert path's group commit)."""
        values = []
        for row in rows:
            value = {**row}
            for column in _ALERT_TIMES:
                value[column] = utc(value[column])
            values.append(value)
        # executemany runs the rows in order: a repeat of an alert in the same batch moves it forward.
        await self.conn.execute(_upsert(self.conn.dialect.name), values)

    async def stamp_hop_many(self, hop: str, times: dict[str, datetime]) -> set[str]:
        """Set `hop` on each stored alert among `times` that does not have it yet (the first time stays); return the
        ids not stored."""
        stored = await self.hops_of(times)
        await self.set_hops({a: {**hops, hop: times[a].isoformat()} for a, hops in stored.items() if hop not in hops})
        return set(times) - set(stored)

    async def get(self, alert_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
        """Return one alert row, or None (`for_update` locks it on PostgreSQL)."""
        query = select(alerts).where(alerts.c.id == alert_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.conn.execute(query)).first()
        return _alert(row) if row is not None else None

    async def set_state(
        self, alert_id: str, *, expected: str, state: str, at: datetime, assignee: str | None = None
    ) -> bool:
        """Move an alert from `expected` to `state`; False when it was not in `expected` (someone else moved it)."""
        values: dict[str, Any] = {"state": state, "updated_at": utc(at)}
        if assignee is not None:
            values["assignee"] = assignee
        result = await self.conn.execute(
            update(alerts).where(alerts.c.id == alert_id, alerts.c.state == expected).values(**values)
        )
        return bool(result.rowcount)

    async def hops_of(self, alert_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Hop times of the stored alerts among `alert_ids`, locked for an update on PostgreSQL (`set_hops`)."""
        ids = builtins.list(alert_ids)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            rows = await self.conn.execute(_HOPS_OF, {"ids": chunk})
            found.update((row.id, dict(row.hops or {})) for row in rows)
        return found

    async def set_hops(self, hops: dict[str, dict[str, Any]]) -> None:
        """Replace the hop times of several alerts (alert id -> hops) in one statement."""
        if hops:
            await self.conn.execute(
                _SET_HOPS, [{"alert_id": alert_id, "new_hops": value} for alert_id, value in hops.items()]
            )

    async def add_step(self, row: dict[str, Any]) -> None:
        """Append one lifecycle step."""
        await self.conn.execute(insert(alert_steps).values(**{**row, "at": utc(row["at"])}))

    async def steps(self, alert_id: str) -> builtins.list[dict[str, Any]]:
        """Return an alert's steps, oldest first."""
        result = await self.conn.execute(
            select(alert_steps).where(alert_steps.c.alert_id == alert_id).order_by(alert_steps.c.id)
        )
        return [to_dict(row, ("at",)) for row in result]

    async def list(
        self,
        *,
        states: Iterable[str] | None = None,
        severity: str | None = None,
        category: str | None = None,
        town: str | None = None,
        community: str | None = None,
        since: datetime | None = None,
        updated_since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """Return one page of alerts, newest `last_at` first, and the total that match the filters."""
        c = alerts.c
        conditions: builtins.list[Any] = []
        if states is not None:
            conditions.append(c.state.in_(builtins.list(states)))
        if severity is not None:
            conditions.append(c.severity == severity)
        if category is not None:
            conditions.append(c.category == category)
        if town is not None:
            conditions.append(c.town == town)
        if community is not None:
            conditions.append(c.community == community)
        if since is not None:
            conditions.append(c.last_at >= utc(since))
        if updated_since is not None:
            conditions.append(or_(c.updated_at >= utc(updated_since), c.last_at >= utc(updated_since)))
        total = await self.conn.scalar(select(func.count()).select_from(alerts).where(*conditions))
        result = await self.conn.execute(
            select(alerts).where(*conditions).order_by(c.last_at.desc(), c.id.desc()).limit(limit).offset(offset)
        )
        return [_alert(row) for row in result], int(total or 0)

    async def feed_page(
        self,
        *,
        scope: str,
        since: datetime,
        before: tuple[datetime, str] | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 100,
    ) -> builtins.list[dict[str, Any]]:
        """Alerts of `scope` changed at or after `since`, newest change first, keyset-paged by (updated_at, id).

        `before` gives the page older than a position, `after` the page newer than it (still returned newest first).
        """
        c = alerts.c
        conditions: builtins.list[Any] = [c.scope == scope, c.updated_at >= utc(since)]
        if before is not None:
            at, key = utc(before[0]), before[1]
            conditions.append(or_(c.updated_at < at, and_(c.updated_at == at, c.id < key)))
        if after is not None:
            at, key = utc(after[0]), after[1]
            conditions.append(or_(c.updated_at > at, and_(c.updated_at == at, c.id > key)))
        ascending = after is not None and before is None
        order = (c.updated_at.asc(), c.id.asc()) if ascending else (c.updated_at.desc(), c.id.desc())
        result = await self.conn.execute(select(alerts).where(*conditions).order_by(*order).limit(limit))
        rows = [_alert(row) for row in result]
        return rows[::-1] if ascending else rows
