"""Alerts: the completing event's message id and the devices that joined the alert.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `trigger_message_id` and `contributors` to `alerts` (null on alerts stored before)."""
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(
            sa.Column(
                "trigger_message_id",
                sa.String(128),
                nullable=True,
                comment="Sender's message id of the latest completing event.",
            )
        )
        batch.add_column(
            sa.Column(
                "contributors",
                sa.JSON(),
                nullable=True,
                comment="Distinct devices that joined the alert: [{device_id, event_id, at}].",
            )
        )


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("contributors")
        batch.drop_column("trigger_message_id")
