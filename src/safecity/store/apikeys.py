"""Repository over the `api_keys` table: queries only; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from safecity.store.rows import to_dict
from safecity.store.tables import api_keys

_TIME_COLUMNS = ("created_at", "revoked_at", "last_used_at")


class ApiKeyRepo:
    """Reads and writes API key rows on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert(self, values: dict[str, Any]) -> None:
        """Insert one key row (id, name, role, prefix, key_hash, created_at)."""
        await self.conn.execute(insert(api_keys).values(**values))

    async def by_hash(self, key_hash: str) -> dict[str, Any] | None:
        """Return the row whose hash is `key_hash`, or None."""
        result = await self.conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))
        row = result.first()
        return to_dict(row, _TIME_COLUMNS) if row is not None else None

    async def get(self, key_id: str) -> dict[str, Any] | None:
        """Return the row with this id, or None."""
        result = await self.conn.execute(select(api_keys).where(api_keys.c.id == key_id))
        row = result.first()
        return to_dict(row, _TIME_COLUMNS) if row is not None else None

    async def list(self, *, include_revoked: bool = True) -> Sequence[dict[str, Any]]:
        """Return every key row, oldest first."""
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        result = await self.conn.execute(query)
        return [to_dict(row, _TIME_COLUMNS) for row in result]

    async def revoke(self, key_id: str, at: datetime) -> bool:
        """Mark a key revoked (keeps the first revocation time); return whether the key exists."""
        result = await self.conn.execute(
            update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=at)
        )
        if result.rowcount:
            return True
        return await self.get(key_id) is not None

    async def touch(self, key_id: str, at: datetime) -> None:
        """Record when a key was last used."""
        await self.conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))
