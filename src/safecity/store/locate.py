"""Find a node's database without creating it: commands that only read or add rows must not make an empty one."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from safecity.kernel.errors import SafeCityError
from safecity.store.engine import _sqlite_is_memory, current_revision, head_revision, is_sqlite, normalize_url


class DatabaseMissing(SafeCityError):
    """The settings name a database that does not exist or has no schema yet."""

    code = "store.database_missing"
    status = 503
    title_en = "No database"
    title_zh = "数据库不存在"
    message_en = (
        "No SafeCity database at {where}. Start the demo (`safecity demo`) or create it with "
        "`safecity db upgrade{config}`, or point --config / SAFECITY_DATA_DIR at the right one."
    )
    message_zh = (
        "{where} 没有 SafeCity 数据库。请先运行演示（`safecity demo`），或用 `safecity db upgrade{config}` 创建，"
        "或用 --config / SAFECITY_DATA_DIR 指向正确的数据目录。"
    )


class DatabaseOutdated(SafeCityError):
    """The database's schema is older than this program's."""

    code = "store.database_outdated"
    status = 503
    title_en = "Database schema outdated"
    title_zh = "数据库结构过旧"
    message_en = (
        "The database at {where} is at revision {revision}, this program needs {head}: "
        "run `safecity db upgrade{config}`."
    )
    message_zh = "{where} 的数据库版本为 {revision}，本程序需要 {head}：请运行 `safecity db upgrade{config}`。"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL and in-memory SQLite)."""
    parsed = normalize_url(url)
    if not is_sqlite(parsed) or _sqlite_is_memory(parsed) or (parsed.database or "").startswith("file:"):
        return None
    return Path(parsed.database or "").expanduser().resolve()


def describe(url: str) -> str:
    """Where a database is, for messages: the SQLite file, or the URL without its password."""
    path = sqlite_path(url)
    return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)


async def require_database(url: str, *, config: Path | None = None) -> str:
    """Check that the database exists at the current schema; return its revision. Never creates anything.

    Raises DatabaseMissing (no file, no schema, or no server database) or DatabaseOutdated.
    """
    hint = f" -c {config}" if config is not None else ""
    where = describe(url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise DatabaseMissing(where=where, config=hint)
    try:
        revision = await current_revision(url)
    except (SQLAlchemyError, OSError) as err:
        raise DatabaseMissing(detail=str(err).splitlines()[0], where=where, config=hint) from err
    if revision is None:
        raise DatabaseMissing(where=where, config=hint)
    head = head_revision()
    if revision != head:
        raise DatabaseOutdated(where=where, revision=revision, head=head, config=hint)
    return revision
