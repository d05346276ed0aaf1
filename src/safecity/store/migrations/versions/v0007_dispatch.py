"""Dispatch slice: incidents, their steps, responders, assignments, Open311 requests.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the five dispatch tables and their indexes, exactly as in `safecity.store.tables`."""
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False, comment="1 = most urgent."),
        sa.Column("stage", sa.String(16), nullable=False, comment="safecity.dispatch.lifecycle.Stage"),
        sa.Column("route", sa.String(16), nullable=False, comment="police | department | community (triage)."),
        sa.Column("origin", sa.String(16), nullable=False, comment="alert | call | report | replay"),
        sa.Column("summary", sa.Text(), nullable=False, comment="Free text from the caller, operator or rule."),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("address", sa.String(256), nullable=True),
        sa.Column("district", sa.String(64), nullable=True),
        sa.Column("town", sa.String(64), nullable=True),
        sa.Column("community", sa.String(64), nullable=True),
        sa.Column("building", sa.String(64), nullable=True),
        sa.Column(
            "caller",
            sa.String(64),
            nullable=True,
            comment="Caller's number as a keyed HMAC (pseudonym), never the clear number.",
        ),
        sa.Column("department", sa.String(64), nullable=True),
        sa.Column("service_code", sa.String(64), nullable=True, comment="Open311 service code when diverted."),
        sa.Column("merged_into", sa.String(26), nullable=True),
        sa.Column("alert_id", sa.String(26), nullable=True, comment="The alert that opened it, if any."),
        sa.Column("unit_id", sa.String(64), nullable=True, comment="The responder assigned now, if any."),
        sa.Column("perceived_at", _ts(), nullable=True),
        sa.Column("warned_at", _ts(), nullable=True),
        sa.Column("opened_at", _ts(), nullable=False),
        sa.Column("triaged_at", _ts(), nullable=True),
        sa.Column("dispatched_at", _ts(), nullable=True),
        sa.Column("en_route_at", _ts(), nullable=True),
        sa.Column("on_scene_at", _ts(), nullable=True),
        sa.Column("disposed_at", _ts(), nullable=True),
        sa.Column("closed_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, comment="Bumped by every change (optimistic concurrency)."),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_stage_opened_at", "incidents", ["stage", "opened_at"])
    op.create_index("ix_incidents_town_opened_at", "incidents", ["town", "opened_at"])
    op.create_index("ix_incidents_alert_id", "incidents", ["alert_id"])

    op.create_table(
        "incident_steps",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("incident_id", sa.String(26), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_stage", sa.String(16), nullable=True),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("unit_id", sa.String(64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False, comment="[{kind: event|alert|media|incident|note, ref}]"),
        sa.PrimaryKeyConstraint("id", name="pk_incident_steps"),
    )
    op.create_index("ix_incident_steps_incident_id_at", "incident_steps", ["incident_id", "at"])

    op.create_table(
        "responders",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, comment="police | department | community"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column(
            "unit_type",
            sa.String(32),
            nullable=False,
            comment="car | motorbike | foot | crew | guard | volunteer",
        ),
        sa.Column("station", sa.String(64), nullable=True),
        sa.Column("department", sa.String(64), nullable=True),
        sa.Column("service_codes", sa.JSON(), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("town", sa.String(64), nullable=True),
        sa.Column("community", sa.String(64), nullable=True),
        sa.Column(
            "shift",
            sa.JSON(),
            nullable=True,
            comment="On-duty schedule: [{days, start, end}] in the node's zone; none = always.",
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("incident_id", sa.String(26), nullable=True, comment="The incident it is committed to now."),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("heading", sa.Float(), nullable=True),
        sa.Column("fix_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_responders"),
    )
    op.create_index("ix_responders_status", "responders", ["status"])

    op.create_table(
        "assignments",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("incident_id", sa.String(26), nullable=False),
        sa.Column("responder_id", sa.String(64), nullable=False),
        sa.Column("assigned_at", _ts(), nullable=False),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("released_at", _ts(), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True, comment="arrived | reassigned | cancelled | closed"),
        sa.Column(
            "active",
            sa.Integer(),
            nullable=True,
            comment="1 while the assignment holds, NULL after: one active assignment a responder.",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_assignments"),
    )
    op.create_index("ix_assignments_incident_id", "assignments", ["incident_id"])
    op.create_index("uq_assignments_responder_active", "assignments", ["responder_id", "active"], unique=True)

    op.create_table(
        "open311_requests",
        sa.Column("id", sa.String(64), nullable=False, comment="service_request_id"),
        sa.Column("incident_id", sa.String(26), nullable=False),
        sa.Column("service_code", sa.String(64), nullable=False),
        sa.Column("status", sa.String(8), nullable=False, comment="open | closed"),
        sa.Column("status_notes", sa.Text(), nullable=True),
        sa.Column("agency_responsible", sa.String(128), nullable=True),
        sa.Column("service_notice", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("address", sa.String(256), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("media_url", sa.Text(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("requested_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("expected_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_open311_requests"),
    )
    op.create_index("ix_open311_requests_service_code_updated_at", "open311_requests", ["service_code", "updated_at"])
    op.create_index("ix_open311_requests_incident_id", "open311_requests", ["incident_id"])


def downgrade() -> None:
    """Drop the dispatch tables."""
    for table in ("open311_requests", "assignments", "responders", "incident_steps", "incidents"):
        op.drop_table(table)
