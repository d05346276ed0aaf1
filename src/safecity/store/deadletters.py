"""Dead-letter repository: refused inputs with their reason and raw bytes (cut at a cap), never silently lost."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock, ids
from safecity.store.engine import write_transaction
from safecity.store.rows import to_dict, utc
from safecity.store.tables import dead_letters

DeadLetterRow = dict[str, Any]
_TIME_COLUMNS = ("received_at",)
# Column widths: a dead letter is bad input by definition, so its fields are cut to fit instead of failing.
_WIDTHS = {"reason": 32, "source": 128, "topic": 512, "device_id": 128, "kind": 32}


def _opt(value: Any, width: int) -> str | None:
    return None if value is None else str(value)[:width]


def make_row(
    *,
    reason: str,
    detail: str,
    source: str,
    raw: bytes,
    raw_cap: int,
    topic: str | None = None,
    device_id: str | None = None,
    kind: str | None = None,
    received_at: datetime | None = None,
    dead_letter_id: str | None = None,
) -> DeadLetterRow:
    """Build a `dead_letters` row: raw cut to `raw_cap` bytes, `raw_size` the full size, a fresh time-sortable id."""
    return {
        "id": dead_letter_id or ids.new_id(),
        "received_at": utc(received_at or clock.now()),
        "reason": str(reason)[: _WIDTHS["reason"]],
        "detail": str(detail),
        "source": str(source)[: _WIDTHS["source"]],
        "topic": _opt(topic, _WIDTHS["topic"]),
        "device_id": _opt(device_id, _WIDTHS["device_id"]),
        "kind": _opt(kind, _WIDTHS["kind"]),
        "raw": bytes(raw[: max(0, raw_cap)]),
        "raw_size": len(raw),
    }


def _complete(row: Mapping[str, Any]) -> DeadLetterRow:
    """Fill in and cut a row given by a caller (id, received_at and raw_size may be missing)."""
    raw = bytes(row.get("raw", b""))
    cap = row.get("raw_cap")
    out = make_row(
        reason=row["reason"],
        detail=row.get("detail", ""),
        source=row["source"],
        raw=raw,
        raw_cap=len(raw) if cap is None else int(cap),
        topic=row.get("topic"),
        device_id=row.get("device_id"),
        kind=row.get("kind"),
        received_at=row.get("received_at"),
        dead_letter_id=row.get("id"),
    )
    if row.get("raw_size") is not None:
        # The caller already cut `raw` and knows the size before the cut.
        out["raw_size"] = int(row["raw_size"])
    return out


class DeadLetterRepo:
    """Stores and lists dead letters."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(
        self,
        *,
        reason: str,
        detail: str,
        source: str,
        raw: bytes,
        raw_cap: int,
        topic: str | None = None,
        device_id: str | None = None,
        kind: str | None = None,
    ) -> str:
        """Store one dead letter and return its id."""
        row = make_row(
            reason=reason,
            detail=detail,
            source=source,
            raw=raw,
            raw_cap=raw_cap,
            topic=topic,
            device_id=device_id,
            kind=kind,
        )
        async with write_transaction(self.engine) as conn:
            await conn.execute(insert(dead_letters), [row])
        return str(row["id"])

    async def add_many(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store many dead letters in one transaction; rows use the column names (plus optional `raw_cap`)."""
        complete = [_complete(r) for r in rows]
        if not complete:
            return []
        async with write_transaction(self.engine) as conn:
            await conn.execute(insert(dead_letters), complete)
        return [str(r["id"]) for r in complete]

    async def list(
        self,
        reason: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[DeadLetterRow]:
        """Return dead letters newest first; pass the last id of a page as `after_id` for the next one."""
        conditions: list[ColumnElement[bool]] = []
        if reason is not None:
            conditions.append(dead_letters.c.reason == str(reason))
        if since is not None:
            conditions.append(dead_letters.c.received_at >= utc(since))
        if after_id is not None:
            conditions.append(dead_letters.c.id < after_id)
        stmt = select(dead_letters).where(*conditions).order_by(dead_letters.c.id.desc()).limit(max(0, limit))
        async with self.engine.connect() as conn:
            return [to_dict(r, _TIME_COLUMNS) for r in await conn.execute(stmt)]

    async def get(self, dead_letter_id: str) -> DeadLetterRow | None:
        """Return one dead letter by id, or None."""
        stmt = select(dead_letters).where(dead_letters.c.id == dead_letter_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else to_dict(row, _TIME_COLUMNS)

    async def count_by_reason(self) -> dict[str, int]:
        """Return the number of dead letters per reason."""
        stmt = select(dead_letters.c.reason, func.count()).group_by(dead_letters.c.reason)
        async with self.engine.connect() as conn:
            return {str(reason): int(n) for reason, n in (await conn.execute(stmt)).all()}
