"""Responders: `contact`, the notify subscription that receives a community responder's task messages.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable column (no table rewrite on either backend)."""
    op.add_column(
        "responders",
        sa.Column("contact", sa.String(26), nullable=True, comment="Notify subscription for its task messages."),
    )


def downgrade() -> None:
    """Drop it (batch mode: SQLite rebuilds the table)."""
    with op.batch_alter_table("responders") as batch:
        batch.drop_column("contact")
