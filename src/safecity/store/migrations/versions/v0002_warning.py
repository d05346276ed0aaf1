"""Warning slice: alerts, alert steps, subscriptions, outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the four warning tables and their indexes, exactly as in `safecity.store.tables`."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("group_key", sa.String(256), nullable=False, comment="Repeats of one condition update one alert."),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("certainty", sa.String(16), nullable=False),
        sa.Column("headline", sa.JSON(), nullable=False, comment="{zh, en}"),
        sa.Column("description", sa.JSON(), nullable=False, comment="{zh, en}"),
        sa.Column("opens_incident", sa.Integer(), nullable=False),
        sa.Column("town", sa.String(64), nullable=True),
        sa.Column("community", sa.String(64), nullable=True),
        sa.Column("building", sa.String(64), nullable=True),
        sa.Column("area", sa.JSON(), nullable=True, comment="Area as in warning.model (lon, lat inside)."),
        sa.Column("trigger_event_ids", sa.JSON(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", _ts(), nullable=False),
        sa.Column("last_at", _ts(), nullable=False),
        sa.Column("hops", sa.JSON(), nullable=False),
        sa.Column("assignee", sa.String(128), nullable=True),
        sa.Column(
            "references",
            sa.String(26),
            nullable=True,
            comment="The alert this one updates or cancels (CAP references).",
        ),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_state_last_at", "alerts", ["state", "last_at"])
    op.create_index("ix_alerts_rule_group", "alerts", ["rule_id", "group_key"])

    op.create_table(
        "alert_steps",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("alert_id", sa.String(26), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("assignee", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_steps"),
    )
    op.create_index("ix_alert_steps_alert_id", "alert_steps", ["alert_id"])

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False, comment="websocket | webhook | mqtt | chat | email"),
        sa.Column(
            "target",
            sa.Text(),
            nullable=False,
            comment="URL, topic or apprise URL (secrets masked on read).",
        ),
        sa.Column("secret", sa.Text(), nullable=True, comment="Signing secret for webhooks (standardwebhooks)."),
        sa.Column("filter", sa.JSON(), nullable=False, comment="Area, categories, min severity, places."),
        sa.Column(
            "escalate_after_s",
            sa.Float(),
            nullable=True,
            comment="Unacknowledged this long: go to the next subscription in line.",
        ),
        sa.Column("escalate_to", sa.String(26), nullable=True),
        sa.Column("enabled", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("subscription_id", sa.String(26), nullable=False),
        sa.Column("alert_id", sa.String(26), nullable=False),
        sa.Column(
            "kind",
            sa.String(32),
            nullable=False,
            comment="alert.raised | alert.updated | alert.escalated ...",
        ),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, comment="pending | delivered | dead"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _ts(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("delivered_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_state_next_attempt_at", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_subscription_id", "outbox", ["subscription_id"])


def downgrade() -> None:
    """Drop everything the upgrade created."""
    op.drop_index("ix_outbox_subscription_id", table_name="outbox")
    op.drop_index("ix_outbox_state_next_attempt_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("subscriptions")
    op.drop_index("ix_alert_steps_alert_id", table_name="alert_steps")
    op.drop_table("alert_steps")
    op.drop_index("ix_alerts_rule_group", table_name="alerts")
    op.drop_index("ix_alerts_state_last_at", table_name="alerts")
    op.drop_table("alerts")
