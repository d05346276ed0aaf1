"""Database engines (SQLite in WAL mode, or PostgreSQL via asyncpg), write transactions, Alembic upgrades and a
readiness check.

Every write of the node goes through `write_transaction(engine)`. On SQLite it first takes the engine's write gate,
an asyncio lock that hands the database's one write lock to the node's writers in the order they asked. SQLite's own
busy handler is not fair: a waiting connection sleeps and polls (1, 2, 5 ... 100 ms), so a writer that commits back
to back (the event writer under load) can keep the lock past another writer's busy timeout; behind the gate a
writer waits at most for the transactions queued before it, and it waits outside any transaction.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import orjson
import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, PoolResetState, StaticPool

from safecity.kernel.errors import InvalidInput
from safecity.store.driver_thread import OneTripAiosqlite

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_SQLITE_DRIVER = "sqlite+aiosqlite"
_PG_DRIVER = "postgresql+asyncpg"


class UnsupportedDatabase(InvalidInput):
    """The database URL names a backend other than SQLite or PostgreSQL."""

    code = "store.unsupported_database"
    message_en = "Unsupported database URL scheme {scheme!r}: use sqlite or postgresql."
    message_zh = "不支持的数据库地址类型 {scheme!r}：请使用 sqlite 或 postgresql。"


def normalize_url(url: str | URL) -> URL:
    """Return the async-driver form of a SQLite or PostgreSQL URL (`sqlite://` -> `sqlite+aiosqlite://`, ...)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername=_SQLITE_DRIVER)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername=_PG_DRIVER)
    raise UnsupportedDatabase(scheme=parsed.drivername)


def is_sqlite(url: str | URL) -> bool:
    """Tell whether a URL points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_is_memory(url: URL) -> bool:
    database = url.database or ""
    # `file:name?mode=memory&uri=true`: SQLAlchemy puts "file:name" in `database` and the rest in `query`.
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def sqlite_file(url: URL) -> str | None:
    """The file of a SQLite URL's database (a `file:` URI as given), or None for PostgreSQL or an in-memory one."""
    if url.get_backend_name() != "sqlite" or _sqlite_is_memory(url):
        return None
    return url.database


# SQLite's own checkpoint in the committing connection, once the WAL holds this many pages (64 MiB of 4 KiB pages),
# on connections made with `background_checkpoints=True`: a backstop only, 16 times the default, reached when
# `store.checkpoint.WalCheckpointer` falls behind or has stopped.
BACKSTOP_PAGES = 16_384
# After a checkpoint that found the WAL grown past this, the file is cut back to it (bytes): disk use stays bounded.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


def _json_dumps(value: Any) -> str:
    # orjson is several times faster than json on the ingest path and renders datetimes as ISO 8601.
    return orjson.dumps(value).decode()


def create_engine(
    url: str | URL,
    *,
    busy_timeout_ms: int = 5000,
    pool_size: int = 10,
    max_overflow: int = 20,
    null_pool: bool = False,
    echo: bool = False,
    background_checkpoints: bool = False,
) -> AsyncEngine:
    """Create an async engine: SQLite with WAL/NORMAL/busy_timeout/foreign_keys, or PostgreSQL with a pool.

    `background_checkpoints=True` is for a SQLite engine whose WAL a `store.checkpoint.WalCheckpointer` keeps short:
    its connections checkpoint themselves only past `BACKSTOP_PAGES`, not every 1,000 pages."""
    parsed = normalize_url(url)
    common: dict[str, Any] = {"echo": echo, "json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if parsed.get_backend_name() == "sqlite":
        memory = _sqlite_is_memory(parsed)
        if not memory and parsed.database and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # The pool's reset is `_reset_open_transaction`, installed below.
        sqlite_args: dict[str, Any] = {**common, "pool_reset_on_return": None}
        if parsed.get_driver_name() == "aiosqlite":
            # Each statement in one round trip to the driver's thread, not three or four (`store.driver_thread`).
            sqlite_args["module"] = OneTripAiosqlite()
        if memory:
            # Every connection to ":memory:" is a new database: share one connection instead.
            engine = create_async_engine(parsed, poolclass=StaticPool, **sqlite_args)
        elif null_pool:
            engine = create_async_engine(parsed, poolclass=NullPool, **sqlite_args)
        else:
            engine = create_async_engine(parsed, **sqlite_args)
        _configure_sqlite_connections(
            engine, busy_timeout_ms, wal=not memory, background_checkpoints=background_checkpoints
        )
        _write_gates[engine.sync_engine] = asyncio.Lock()
        return engine
    connect_args = {"server_settings": {"application_name": "safecity"}}
    if null_pool:
        return create_async_engine(parsed, poolclass=NullPool, connect_args=connect_args, **common)
    return create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=max_overflow,
        # A connection killed by a restart or failover is noticed at checkout, not in the middle of a commit.
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
        **common,
    )


# SQLite engine -> its write gate (`write_transaction`). PostgreSQL engines have none: rows lock, not the database.
_write_gates: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`engine.begin()` for a transaction that writes: on SQLite, entered once the engine's write gate is this
    caller's (first come, first served among the node's writers), and the gate is held until it ends."""
    gate = _write_gates.get(engine.sync_engine)
    async with gate or nullcontext(), engine.begin() as conn:
        yield conn


def _configure_sqlite_connections(
    engine: AsyncEngine, busy_timeout_ms: int, *, wal: bool, background_checkpoints: bool
) -> None:
    @event.listens_for(engine.sync_engine, "reset")
    def _reset_open_transaction(dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
        # The pool's own reset rolls back every connection it gets back. A committed `engine.begin()` has nothing
        # to roll back, and through aiosqlite each call is a round trip to the connection's thread (~0.1 ms of
        # CPU, one of five in a one-statement transaction): roll back only what is still open, so a connection
        # never goes back to the pool holding SQLite's write lock.
        if state.asyncio_safe and not state.terminate_only and dbapi_conn.driver_connection.in_transaction:
            dbapi_conn.rollback()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            if wal:
                # WAL lets readers run beside the one writer; NORMAL is durable across app crashes in WAL mode.
                cursor.execute("PRAGMA journal_mode=WAL")
                if background_checkpoints:
                    cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
                    cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # 64 MiB page cache: the events table's five indexes stay hot under group commits.
            cursor.execute("PRAGMA cache_size=-65536")
        finally:
            cursor.close()


def _alembic_config(url: URL | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def _run_alembic(connection: Connection, action: str, revision: str) -> None:
    cfg = _alembic_config()
    # env.py uses this connection instead of making its own (no alembic.ini, no second engine).
    cfg.attributes["connection"] = connection
    if action == "upgrade":
        command.upgrade(cfg, revision)
    else:
        command.downgrade(cfg, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _with_engine(url: str | URL | AsyncEngine, action: str, revision: str) -> None:
    engine = url if isinstance(url, AsyncEngine) else create_engine(url, null_pool=True)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_alembic, action, revision)
    finally:
        if engine is not url:
            await engine.dispose()


async def upgrade(url: str | URL | AsyncEngine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (default: the newest) with Alembic."""
    await _with_engine(url, "upgrade", revision)
    log.info("database_upgraded", revision=revision)


async def downgrade(url: str | URL | AsyncEngine, revision: str = "base") -> None:
    """Downgrade the schema to `revision` (default: empty) with Alembic."""
    await _with_engine(url, "downgrade", revision)
    log.info("database_downgraded", revision=revision)


async def current_revision(url: str | URL | AsyncEngine) -> str | None:
    """Return the Alembic revision the database is at, or None when it has never been migrated."""
    engine = url if isinstance(url, AsyncEngine) else create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        if engine is not url:
            await engine.dispose()


def head_revision() -> str | None:
    """Return the newest revision shipped with this package."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def check(engine: AsyncEngine) -> None:
    """Return when the database answers `SELECT 1`; raise the driver's error when it does not (readiness check)."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
