"""Writes done in the SQLite driver's own thread, in one round trip.

Through aiosqlite each call to the database is a round trip to the connection's thread, which comes back only when
the event loop next gets to it: under load a loop pass takes tens of milliseconds, and a write transaction holds
SQLite's one write lock across all of its calls (a few alert rows held it for 400 ms at 7,500 events/s). A write of
many rows is therefore made into few statements and run here, by one call, as a function of the sqlite3 connection.

Inside that function Python's sqlite3 releases the GIL for each step of a statement and takes it back after, a wait
of up to a switch interval (5 ms) while the loop's thread is busy: so rows go in multi-row statements (one step),
never `executemany` (a step a row), and no RETURNING rows are read back one by one where a count will do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

SQLITE_MAX_VARIABLES = 32_766  # SQLITE_MAX_VARIABLE_NUMBER since SQLite 3.32


def sqlite_time(value: datetime) -> str:
    """A UTC time as the exact text SQLAlchemy's SQLite DateTime writes and parses back (the zone dropped)."""
    # orjson's RFC 3339 text is that text with a "T" (twice as fast as isoformat here); it leaves out a zero
    # microsecond part.
    if value.microsecond:
        return orjson.dumps(value)[1:27].replace(b"T", b" ", 1).decode()
    return value.isoformat(sep=" ", timespec="microseconds")[:26]


def run_statement(db: sqlite3.Connection, sql: str, params: Any) -> sqlite3.Cursor:
    """In the driver's thread: run one statement; an error is raised as SQLAlchemy would raise it, so
    `store.retry.commit_retrying` tells a locked database from a refused row."""
    try:
        return db.execute(sql, params)
    except sqlite3.Error as err:
        raise DBAPIError.instance(sql, None, err, sqlite3.Error, hide_parameters=True) from err


async def in_driver_thread(conn: AsyncConnection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` in the thread of the aiosqlite connection under `conn`, inside its
    transaction (Python's sqlite3 begins it before the first write; SQLAlchemy commits it): one round trip.

    aiosqlite runs its own calls this way (`Connection._execute`, its sqlite3 connection `_conn`); it has no public
    form of it. `tests/integration/store/test_store_writer.py` fails if that changes (aiosqlite is pinned).
    """
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None  # a connection in a transaction is open
    result: T = await driver._execute(fn, driver._conn, *args)
    return result
