"""Alerts carry their audience (CAP scope); the public feed reads Public alerts by last change.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `alerts.scope` (existing alerts become Restricted: none is made public after the fact) and its index."""
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(
            sa.Column(
                "scope",
                sa.String(16),
                nullable=False,
                server_default="Restricted",
                comment="CAP scope from the rule's audience; only Public alerts are in the public feed.",
            )
        )
    op.create_index("ix_alerts_scope_updated_at", "alerts", ["scope", "updated_at"])


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("ix_alerts_scope_updated_at", table_name="alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("scope")
