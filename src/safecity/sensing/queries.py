"""Read-side queries of the sensing slice: stored events and dead letters, for the API and other readers.

Routers get these through their ports (`safecity.api.ports`), never the repositories: the store stays behind the
slice. Rows are plain dicts (the columns of `events` / `dead_letters`, times aware UTC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from safecity.store.deadletters import DeadLetterRepo
from safecity.store.events import EventRepo

Row = dict[str, Any]


class EventQueries:
    """Stored, tagged events: filtered pages (newest first, keyset by id), one by id, counts by kind."""

    def __init__(self, repo: EventRepo) -> None:
        self.repo = repo

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
    ) -> list[Row]:
        """Events matching every filter given, newest first; `after_id` is the last id of the previous page."""
        return await self.repo.list(
            kind=kind,
            device_id=device_id,
            district=district,
            town=town,
            community=community,
            building=building,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
        )

    async def get(self, event_id: str) -> Row | None:
        """One event by id, or None."""
        return await self.repo.get(event_id)

    async def count_by_kind(self) -> dict[str, int]:
        """Stored events per kind."""
        return await self.repo.count_by_kind()


class DeadLetterQueries:
    """Refused inputs: pages newest first (keyset by id), one by id, counts by reason."""

    def __init__(self, repo: DeadLetterRepo) -> None:
        self.repo = repo

    async def list(
        self,
        *,
        reason: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        after_id: str | None = None,
    ) -> list[Row]:
        """Dead letters newest first, optionally of one reason and since a time."""
        return await self.repo.list(reason=reason, since=since, limit=limit, after_id=after_id)

    async def get(self, dead_letter_id: str) -> Row | None:
        """One dead letter by id, or None."""
        return await self.repo.get(dead_letter_id)

    async def count_by_reason(self) -> dict[str, int]:
        """All dead letters per reason."""
        return await self.repo.count_by_reason()
