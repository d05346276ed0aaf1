"""Events: a `district` tag beside town, community and building (district-level boundaries reach the tags).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable column (no table rewrite on either backend)."""
    op.add_column("events", sa.Column("district", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop it (batch mode: SQLite rebuilds the table)."""
    with op.batch_alter_table("events") as batch:
        batch.drop_column("district")
