"""Devices: `heartbeat_s` is renamed `offline_after_s` (it always was the offline timeout, not a reporting period).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_COMMENT = "Offline after this silence; null: the default applies."
_OLD_COMMENT = "Expected heartbeat interval; null: the default applies."


def upgrade() -> None:
    """Rename the column (batch mode: SQLite rebuilds the table)."""
    with op.batch_alter_table("devices") as batch:
        batch.alter_column(
            "heartbeat_s", new_column_name="offline_after_s", comment=_NEW_COMMENT, existing_comment=_OLD_COMMENT
        )


def downgrade() -> None:
    """Rename it back."""
    with op.batch_alter_table("devices") as batch:
        batch.alter_column(
            "offline_after_s", new_column_name="heartbeat_s", comment=_OLD_COMMENT, existing_comment=_NEW_COMMENT
        )
