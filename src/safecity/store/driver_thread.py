"""Writes done in the SQLite driver's own thread, in one round trip.

Through aiosqlite each call to the database is a round trip to the connection's thread, which comes back only when
the event loop next gets to it: under load a loop pass takes tens of milliseconds, and a write transaction holds
SQLite's one write lock across all of its calls (a few alert rows held it for 400 ms at 7,500 events/s). A write of
many rows is therefore made into few statements and run here, by one call, as a function of the sqlite3 connection.

Inside that function Python's sqlite3 releases the GIL for each step of a statement and takes it back after, a wait
of up to a switch interval (5 ms) while the loop's thread is busy: so rows go in multi-row statements (one step),
never `executemany` (a step a row), and no RETURNING rows are read back one by one where a count will do.

Every other statement of the node goes through SQLAlchemy's aiosqlite adapter with `OneTripAiosqlite` in place of
its DBAPI module (`store.engine.create_engine`): one round trip a statement instead of three or four.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import aiosqlite
import orjson
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import EMPTY_DICT

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


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, with a statement in one round trip to the driver's thread instead of three or
    four (make a cursor, execute, fetch the rows, close): the sqlite3 cursor is made, run, read and closed there by
    one call; what SQLAlchemy reads of it afterwards (`description`, `rowcount`, `lastrowid`) stays readable."""

    __slots__ = ()
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]  # a sqlite3 cursor once a statement has run
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    def close(self) -> None:
        self._rows.clear()  # the sqlite3 cursor was closed in the driver's thread

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        driver = self._connection
        async with self._adapt_connection._execute_mutex:
            self._cursor, rows = await driver._execute(_run_one, driver._conn, operation, parameters)
        if rows is not None:
            self._rows = collections.deque(rows)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        driver = self._connection
        async with self._adapt_connection._execute_mutex:
            self._cursor = await driver._execute(_run_many, driver._conn, operation, seq_of_parameters)


def _run_one(db: sqlite3.Connection, operation: str, parameters: Any) -> tuple[sqlite3.Cursor, list[Any] | None]:
    cursor = db.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        return cursor, cursor.fetchall() if cursor.description else None
    finally:
        cursor.close()


def _run_many(db: sqlite3.Connection, operation: str, seq_of_parameters: Any) -> sqlite3.Cursor:
    cursor = db.cursor()
    try:
        cursor.executemany(operation, seq_of_parameters)
        return cursor
    finally:
        cursor.close()


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneTripCursor


class OneTripAiosqlite(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI adapter SQLAlchemy uses, passed to the engine as its `module`, whose connections run each
    statement in one round trip (`_OneTripCursor`). Server-side cursors are SQLAlchemy's own (unchanged)."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        # SQLAlchemy's own connect (daemon thread, `async_creator`), its connection re-wrapped with our cursor.
        return _OneTripConnection(self, super().connect(*arg, **kw)._connection)
