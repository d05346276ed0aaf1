"""Initial schema: events, dead letters, devices, API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the four tables and their indexes, exactly as in `safecity.store.tables`."""
    op.create_table(
        "events",
        sa.Column("id", sa.String(26), nullable=False, comment="Envelope id (time-sortable)."),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column(
            "message_id",
            sa.String(128),
            nullable=True,
            comment="Sender's own id; (device_id, message_id) is unique.",
        ),
        sa.Column("occurred_at", _ts(), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.Column("stored_at", _ts(), nullable=False),
        sa.Column("town", sa.String(64), nullable=True),
        sa.Column("community", sa.String(64), nullable=True),
        sa.Column("building", sa.String(64), nullable=True),
        sa.Column("device_kind", sa.String(32), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("state", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("pseudonyms", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("hops", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_index("ix_events_kind_occurred_at", "events", ["kind", "occurred_at"])
    op.create_index("ix_events_building_occurred_at", "events", ["building", "occurred_at"])
    op.create_index("ix_events_device_id_occurred_at", "events", ["device_id", "occurred_at"])
    op.create_index(
        "uq_events_device_message",
        "events",
        ["device_id", "message_id"],
        unique=True,
        sqlite_where=sa.text("message_id IS NOT NULL"),
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("topic", sa.String(512), nullable=True),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False, comment="Raw bytes, cut at the configured cap."),
        sa.Column("raw_size", sa.Integer(), nullable=False, comment="Size of the raw input before the cut."),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])
    op.create_index("ix_dead_letters_reason", "dead_letters", ["reason"])

    op.create_table(
        "devices",
        sa.Column("id", sa.String(128), nullable=False, comment="The device's own id, as in its topic."),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("town", sa.String(64), nullable=True),
        sa.Column("community", sa.String(64), nullable=True),
        sa.Column("building", sa.String(64), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column(
            "heartbeat_s",
            sa.Float(),
            nullable=True,
            comment="Expected heartbeat interval; null: the default applies.",
        ),
        sa.Column("last_seen", _ts(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_index("ix_devices_kind", "devices", ["kind"])
    op.create_index("ix_devices_community", "devices", ["community"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("prefix", sa.String(12), nullable=False, comment="First characters of the key, to recognise it."),
        sa.Column(
            "key_hash",
            sa.String(64),
            nullable=False,
            comment="SHA-256 of the key; the key is never stored.",
        ),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("revoked_at", _ts(), nullable=True),
        sa.Column("last_used_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )


def downgrade() -> None:
    """Drop everything the upgrade created."""
    op.drop_table("api_keys")
    op.drop_index("ix_devices_community", table_name="devices")
    op.drop_index("ix_devices_kind", table_name="devices")
    op.drop_table("devices")
    op.drop_index("ix_dead_letters_reason", table_name="dead_letters")
    op.drop_index("ix_dead_letters_received_at", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index("uq_events_device_message", table_name="events")
    op.drop_index("ix_events_device_id_occurred_at", table_name="events")
    op.drop_index("ix_events_building_occurred_at", table_name="events")
    op.drop_index("ix_events_kind_occurred_at", table_name="events")
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_table("events")
