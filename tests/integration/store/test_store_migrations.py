"""Alembic migrations on SQLite and PostgreSQL: an empty database upgrades to exactly `tables.metadata` and back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from safecity.store import tables
from safecity.store.engine import create_engine, current_revision, downgrade, head_revision, upgrade


def _diff(sync_conn: Any, metadata: sa.MetaData) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, metadata))


def _tables(sync_conn: Any) -> set[str]:
    return set(inspect(sync_conn).get_table_names())


async def test_upgrade_matches_metadata_and_downgrades(db_url: str) -> None:
    """Upgrade an empty database, find no difference from the models, then go back to an empty schema."""
    assert await current_revision(db_url) is None
    await upgrade(db_url)
    assert await current_revision(db_url) == head_revision()

    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff, tables.metadata) == []
            assert {"events", "dead_letters", "devices", "api_keys"} <= await conn.run_sync(_tables)

            # The comparison can fail: a model with one more column shows a difference.
            changed = sa.MetaData(naming_convention=tables.NAMING_CONVENTION)
            for table in tables.metadata.tables.values():
                table.to_metadata(changed)
            changed.tables["events"].append_column(sa.Column("extra", sa.Integer))
            diffs = await conn.run_sync(_diff, changed)
            assert any(d[0] == "add_column" and d[3].name == "extra" for d in diffs)
    finally:
        await engine.dispose()

    await downgrade(db_url, "base")
    assert await current_revision(db_url) is None
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) <= {"alembic_version"}
    finally:
        await engine.dispose()

    # Upgrading twice is a no-op, and works again after a downgrade.
    await upgrade(db_url)
    await upgrade(db_url)
    assert await current_revision(db_url) == head_revision()


async def test_partial_unique_index_on_device_message(db_url: str) -> None:
    """(device_id, message_id) is unique only when message_id is set."""
    await upgrade(db_url)
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("events"))
        by_name = {ix["name"]: ix for ix in indexes}
        assert by_name["uq_events_device_message"]["unique"]
        assert by_name["uq_events_device_message"]["column_names"] == ["device_id", "message_id"]
    finally:
        await engine.dispose()


async def test_0005_renames_heartbeat_s_keeping_values(db_url: str) -> None:
    """A device registered before 0005 keeps its timeout under the new name, and gets it back on downgrade."""
    await upgrade(db_url, "0004")
    engine = create_engine(db_url)
    insert = sa.text(
        "INSERT INTO devices (id, kind, name, status, heartbeat_s, attributes, created_at, updated_at)"
        " VALUES ('d1', 'smoke', 'd1', 'active', 90, '{}', :now, :now)"
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(insert, {"now": datetime(2026, 12, 1, tzinfo=UTC)})
        await upgrade(db_url, "0005")
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT offline_after_s FROM devices"))).scalar_one() == 90
        await downgrade(db_url, "0004")
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT heartbeat_s FROM devices"))).scalar_one() == 90
    finally:
        await engine.dispose()
