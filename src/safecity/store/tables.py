"""The relational schema (SQLAlchemy 2 Core), shared by SQLite and PostgreSQL. Alembic revisions follow it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

# Stable constraint names, so migrations are identical on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

TS = DateTime(timezone=True)

events = Table(
    "events",
    metadata,
    Column("id", String(26), primary_key=True, comment="Envelope id (time-sortable)."),
    Column("key", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("message_id", String(128), nullable=True, comment="Sender's own id; (device_id, message_id) is unique."),
    Column("occurred_at", TS, nullable=False),
    Column("received_at", TS, nullable=False),
    Column("stored_at", TS, nullable=False),
    Column("town", String(64)),
    Column("community", String(64)),
    Column("building", String(64)),
    Column("district", String(64)),
    Column("device_kind", String(32)),
    Column("lon", Float),
    Column("lat", Float),
    Column("value", Float),
    Column("state", String(64)),
    Column("data", JSON, nullable=False),
    Column("pseudonyms", JSON, nullable=False),
    Column("source", String(128), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("correlation_id", String(64), nullable=False),
    Column("hops", JSON, nullable=False),
)
Index("ix_events_occurred_at", events.c.occurred_at)
Index("ix_events_kind_occurred_at", events.c.kind, events.c.occurred_at)
Index("ix_events_building_occurred_at", events.c.building, events.c.occurred_at)
Index("ix_events_device_id_occurred_at", events.c.device_id, events.c.occurred_at)
Index(
    "uq_events_device_message",
    events.c.device_id,
    events.c.message_id,
    unique=True,
    sqlite_where=events.c.message_id.isnot(None),
    postgresql_where=events.c.message_id.isnot(None),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("received_at", TS, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("source", String(128), nullable=False),
    Column("topic", String(512)),
    Column("device_id", String(128)),
    Column("kind", String(32)),
    Column("raw", LargeBinary, nullable=False, comment="Raw bytes, cut at the configured cap."),
    Column("raw_size", Integer, nullable=False, comment="Size of the raw input before the cut."),
)
Index("ix_dead_letters_received_at", dead_letters.c.received_at)
Index("ix_dead_letters_reason", dead_letters.c.reason)

devices = Table(
    "devices",
    metadata,
    Column("id", String(128), primary_key=True, comment="The device's own id, as in its topic."),
    Column("kind", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("town", String(64)),
    Column("community", String(64)),
    Column("building", String(64)),
    Column("lon", Float),
    Column("lat", Float),
    Column("owner", String(200)),
    Column("status", String(16), nullable=False),
    Column("offline_after_s", Float, comment="Offline after this silence; null: the default applies."),
    Column("last_seen", TS),
    Column("attributes", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)
Index("ix_devices_kind", devices.c.kind)
Index("ix_devices_community", devices.c.community)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("prefix", String(12), nullable=False, comment="First characters of the key, to recognise it."),
    Column("key_hash", String(64), nullable=False, unique=True, comment="SHA-256 of the key; the key is never stored."),
    Column("created_at", TS, nullable=False),
    Column("revoked_at", TS),
    Column("last_used_at", TS),
)

# --- warning slice ---------------------------------------------------------------------------------------------

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("rule_id", String(128), nullable=False),
    Column("group_key", String(256), nullable=False, comment="Repeats of one condition update one alert."),
    Column("state", String(16), nullable=False),
    Column("category", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("certainty", String(16), nullable=False),
    Column("headline", JSON, nullable=False, comment="{zh, en}"),
    Column("description", JSON, nullable=False, comment="{zh, en}"),
    Column("opens_incident", Integer, nullable=False),
    Column("town", String(64)),
    Column("community", String(64)),
    Column("building", String(64)),
    Column("area", JSON, comment="Area as in warning.model (lon, lat inside)."),
    Column("trigger_event_ids", JSON, nullable=False),
    Column("count", Integer, nullable=False),
    Column("first_at", TS, nullable=False),
    Column("last_at", TS, nullable=False),
    Column("hops", JSON, nullable=False),
    Column("assignee", String(128)),
    Column("references", String(26), comment="The alert this one updates or cancels (CAP references)."),
    Column("trigger_message_id", String(128), comment="Sender's message id of the latest completing event."),
    Column("contributors", JSON, comment="Distinct devices that joined the alert: [{device_id, event_id, at}]."),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column(
        "scope",
        String(16),
        nullable=False,
        server_default="Restricted",
        comment="CAP scope from the rule's audience; only Public alerts are in the public feed.",
    ),
)
Index("ix_alerts_state_last_at", alerts.c.state, alerts.c.last_at)
Index("ix_alerts_scope_updated_at", alerts.c.scope, alerts.c.updated_at)
Index("ix_alerts_rule_group", alerts.c.rule_id, alerts.c.group_key)

alert_steps = Table(
    "alert_steps",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("alert_id", String(26), nullable=False),
    Column("state", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("at", TS, nullable=False),
    Column("feedback", Text),
    Column("assignee", String(128)),
)
Index("ix_alert_steps_alert_id", alert_steps.c.alert_id)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("channel", String(16), nullable=False, comment="websocket | webhook | mqtt | chat | email"),
    Column("target", Text, nullable=False, comment="URL, topic or apprise URL (secrets masked on read)."),
    Column("secret", Text, comment="Signing secret for webhooks (standardwebhooks)."),
    Column("filter", JSON, nullable=False, comment="Area, categories, min severity, places."),
    Column("escalate_after_s", Float, comment="Unacknowledged this long: go to the next subscription in line."),
    Column("escalate_to", String(26)),
    Column("enabled", Integer, nullable=False),
    Column("created_at", TS, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("subscription_id", String(26), nullable=False),
    Column("alert_id", String(26), nullable=False),
    Column("kind", String(32), nullable=False, comment="alert.raised | alert.updated | alert.escalated ..."),
    Column("body", JSON, nullable=False),
    Column("state", String(16), nullable=False, comment="pending | delivered | dead"),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", TS, nullable=False),
    Column("last_error", Text),
    Column("created_at", TS, nullable=False),
    Column("delivered_at", TS),
)
Index("ix_outbox_state_next_attempt_at", outbox.c.state, outbox.c.next_attempt_at)
Index("ix_outbox_subscription_id", outbox.c.subscription_id)
