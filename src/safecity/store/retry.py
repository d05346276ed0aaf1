"""Committing through transient database failures: the loop the event writer and the outbox writer share.

Both commit a batch in one transaction from a background task that must outlive a locked SQLite file or a dropped
PostgreSQL connection. A transient failure is retried with doubling delays; a write the database refuses (integrity
or data error) is raised as `RefusedWrite`, so the caller can commit the batch's parts alone and keep the good ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

T = TypeVar("T")


class RefusedWrite(Exception):
    """A commit failed because of what it writes, not because the database is unavailable."""

    def __init__(self, cause: SQLAlchemyError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def is_refused(err: SQLAlchemyError) -> bool:
    """Tell a write the database refuses (integrity or data error) from a transient failure worth retrying."""
    if isinstance(err, (IntegrityError, DataError)):
        return True
    # asyncpg errors are not all mapped to SQLAlchemy's classes: use the SQLSTATE class instead.
    # 22xxx: data exception (value too long, invalid text), 23xxx: integrity constraint violation.
    sqlstate = getattr(getattr(err, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")


async def commit_retrying(
    commit: Callable[[], Awaitable[T]],
    *,
    initial_s: float,
    max_s: float,
    on_retry: Callable[[Exception, float], None],
) -> T:
    """Await `commit()` until it succeeds; `on_retry(failure, delay_s)` is told of each transient failure."""
    delay = initial_s
    while True:
        failure: Exception
        try:
            return await commit()
        except SQLAlchemyError as err:
            if is_refused(err):
                raise RefusedWrite(err) from err
            failure = err
        except OSError as err:  # the connection itself failed (reset, refused)
            failure = err
        on_retry(failure, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_s)
