"""SQL for subscriptions and the outbox (queries only; the service owns transactions)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from safecity.store.rows import aware
from safecity.store.tables import outbox, subscriptions
from safecity.warning.notify.subscriptions import Subscription, SubscriptionFilter

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
CANCELLED = "cancelled"

# The alert path's group commit runs these for every batch: built once (values come as parameters), not per call.
_MARK_DELIVERED = (
    update(outbox)
    .where(outbox.c.id == bindparam("row_id"))
    .values(state=DELIVERED, delivered_at=bindparam("at"), attempts=bindparam("n"), last_error=None)
)


@functools.cache
def _enqueue_returning(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id, built once per dialect."""
    stmt: Any = pg_insert(outbox) if dialect == "postgresql" else sqlite_insert(outbox)
    return stmt.on_conflict_do_nothing(index_elements=["id"]).returning(outbox.c.id)


def subscription_from_row(row: Any) -> Subscription:
    """Build a subscription from a `subscriptions` row (the locale travels inside the filter JSON)."""
    flt = dict(row["filter"] or {})
    locale = flt.pop("locale", "zh-CN")
    return Subscription(
        id=row["id"],
        name=row["name"],
        channel=row["channel"],
        target=row["target"],
        secret=row["secret"],
        filter=SubscriptionFilter.model_validate(flt),
        locale=locale,
        escalate_after_s=row["escalate_after_s"],
        escalate_to=row["escalate_to"],
        enabled=bool(row["enabled"]),
        created_at=aware(row["created_at"]),
    )


def subscription_to_row(sub: Subscription) -> dict[str, Any]:
    """Return the column values of a subscription."""
    flt = sub.filter.model_dump(mode="json")
    flt["locale"] = str(sub.locale)
    return {
        "id": sub.id,
        "name": sub.name,
        "channel": str(sub.channel),
        "target": sub.target,
        "secret": sub.secret,
        "filter": flt,
        "escalate_after_s": sub.escalate_after_s,
        "escalate_to": sub.escalate_to,
        "enabled": 1 if sub.enabled else 0,
        "created_at": sub.created_at,
    }


def _outbox_row(row: Any) -> dict[str, Any]:
    data = dict(row)
    for column in ("next_attempt_at", "created_at", "delivered_at"):
        data[column] = aware(data[column])
    return data


class SubscriptionRepo:
    """Reads and writes `subscriptions` on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def all(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        rows = (await self.conn.execute(select(subscriptions).order_by(subscriptions.c.id))).mappings()
        return [subscription_from_row(r) for r in rows]

    async def get(self, sub_id: str) -> Subscription | None:
        """One subscription, or None."""
        row = (await self.conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))).mappings().first()
        return None if row is None else subscription_from_row(row)

    async def add(self, sub: Subscription) -> None:
        """Insert a subscription."""
        await self.conn.execute(insert(subscriptions).values(**subscription_to_row(sub)))

    async def replace(self, sub: Subscription) -> None:
        """Overwrite a subscription's columns."""
        values = subscription_to_row(sub)
        del values["id"]
        await self.conn.execute(update(subscriptions).where(subscriptions.c.id == sub.id).values(**values))

    async def delete(self, sub_id: str) -> bool:
        """Delete a subscription; return whether it existed."""
        result = await self.conn.execute(delete(subscriptions).where(subscriptions.c.id == sub_id))
        return bool(result.rowcount)


class OutboxRepo:
    """Reads and writes `outbox` rows on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def enqueue(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows; a row whose id exists already is skipped (bus redeliveries are idempotent)."""
        if not rows:
            return
        dialect = self.conn.dialect.name
        stmt: Any = pg_insert(outbox) if dialect == "postgresql" else sqlite_insert(outbox)
        await self.conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]), list(rows))

    async def enqueue_returning(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        """`enqueue`, returning the ids inserted now (a row whose id existed is skipped and not returned)."""
        if not rows:
            return set()
        result = await self.conn.execute(_enqueue_returning(self.conn.dialect.name), list(rows))
        return {r[0] for r in result.all()}

    async def refresh_pending_updates(
        self, alert_id: str, sub_ids: Sequence[str], body: dict[str, Any], *, now: datetime | None = None
    ) -> set[str]:
        """Replace the body of not-yet-tried `alert.updated` rows of these subscriptions; return whose were.

        With `now`, only rows not leased at `now` (a leased row may be being sent with its old body this moment: a
        new body written under it would never be sent).
        """
        if not sub_ids:
            return set()
        cond = [
            outbox.c.alert_id == alert_id,
            outbox.c.kind == "alert.updated",
            outbox.c.state == PENDING,
            outbox.c.attempts == 0,
            outbox.c.subscription_id.in_(list(sub_ids)),
        ]
        if now is not None:
            cond.append(outbox.c.next_attempt_at <= now)
        stmt = update(outbox).where(*cond).values(body=body).returning(outbox.c.subscription_id)
        return {r[0] for r in (await self.conn.execute(stmt)).all()}

    async def due(self, now: datetime, *, limit: int, exclude: Sequence[str]) -> list[dict[str, Any]]:
        """Pending rows whose time has come, oldest first, skipping subscriptions named in `exclude`."""
        cond = [outbox.c.state == PENDING, outbox.c.next_attempt_at <= now]
        if exclude:
            cond.append(outbox.c.subscription_id.not_in(list(exclude)))
        stmt = select(outbox).where(and_(*cond)).order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit)
        return [_outbox_row(r) for r in (await self.conn.execute(stmt)).mappings()]

    async def lease(self, ids: Sequence[str], now: datetime, until: datetime) -> set[str]:
        """Claim rows until `until` (another dispatcher skips them); return the ids this call won."""
        if not ids:
            return set()
        stmt = (
            update(outbox)
            .where(outbox.c.id.in_(list(ids)), outbox.c.state == PENDING, outbox.c.next_attempt_at <= now)
            .values(next_attempt_at=until)
            .returning(outbox.c.id)
        )
        return {r[0] for r in (await self.conn.execute(stmt)).all()}

    async def release(self, ids: Sequence[str], at: datetime) -> None:
        """Give up leases of rows this node will not finish (it is stopping): due again at `at`."""
        if ids:
            await self.conn.execute(
                update(outbox).where(outbox.c.id.in_(list(ids)), outbox.c.state == PENDING).values(next_attempt_at=at)
            )

    async def next_due_at(self, *, exclude: Sequence[str] = ()) -> datetime | None:
        """When the earliest pending row becomes due, skipping subscriptions named in `exclude`."""
        cond = [outbox.c.state == PENDING]
        if exclude:
            cond.append(outbox.c.subscription_id.not_in(list(exclude)))
        stmt = select(outbox.c.next_attempt_at).where(and_(*cond)).order_by(outbox.c.next_attempt_at)
        return aware((await self.conn.execute(stmt.limit(1))).scalar())

    async def mark_delivered(self, row_id: str, at: datetime, attempts: int) -> None:
        """Record a successful delivery."""
        await self.conn.execute(
            update(outbox)
            .where(outbox.c.id == row_id)
            .values(state=DELIVERED, delivered_at=at, attempts=attempts, last_error=None)
        )

    async def mark_delivered_many(self, rows: Sequence[tuple[str, datetime, int]]) -> None:
        """Record several successful deliveries ((row id, time, attempts)) in one statement execution."""
        if rows:
            await self.conn.execute(_MARK_DELIVERED, [{"row_id": row_id, "at": at, "n": n} for row_id, at, n in rows])

    async def mark_retry(self, row_id: str, attempts: int, next_at: datetime, error: str | None) -> None:
        """Schedule another attempt."""
        await self.conn.execute(
            update(outbox)
            .where(outbox.c.id == row_id, outbox.c.state == PENDING)
            .values(attempts=attempts, next_attempt_at=next_at, last_error=error)
        )

    async def mark_dead(self, row_id: str, attempts: int, error: str) -> None:
        """Give up: the row stays as a dead letter with its last error."""
        await self.conn.execute(
            update(outbox)
            .where(outbox.c.id == row_id, outbox.c.state == PENDING)
            .values(state=DEAD, attempts=attempts, last_error=error)
        )

    async def cancel_escalations(self, alert_id: str, at: datetime) -> int:
        """Cancel pending escalation rows of an alert (it was acknowledged); return how many."""
        result = await self.conn.execute(
            update(outbox)
            .where(outbox.c.alert_id == alert_id, outbox.c.kind == "alert.escalated", outbox.c.state == PENDING)
            .values(state=CANCELLED, last_error="acknowledged", delivered_at=None)
        )
        return int(result.rowcount or 0)

    async def rows(
        self,
        *,
        subscription_id: str | None = None,
        alert_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Outbox rows, newest first, for inspection (dead letters, delivery times)."""
        stmt = select(outbox)
        if subscription_id is not None:
            stmt = stmt.where(outbox.c.subscription_id == subscription_id)
        if alert_id is not None:
            stmt = stmt.where(outbox.c.alert_id == alert_id)
        if state is not None:
            stmt = stmt.where(outbox.c.state == state)
        stmt = stmt.order_by(outbox.c.id.desc()).limit(limit)
        return [_outbox_row(r) for r in (await self.conn.execute(stmt)).mappings()]
