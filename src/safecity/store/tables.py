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

# --- dispatch slice --------------------------------------------------------------------------------------------

incidents = Table(
    "incidents",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("priority", Integer, nullable=False, comment="1 = most urgent."),
    Column("stage", String(16), nullable=False, comment="safecity.dispatch.lifecycle.Stage"),
    Column("route", String(16), nullable=False, comment="police | department | community (triage)."),
    Column("origin", String(16), nullable=False, comment="alert | call | report | replay"),
    Column("summary", Text, nullable=False, comment="Free text from the caller, operator or rule."),
    Column("lon", Float),
    Column("lat", Float),
    Column("address", String(256)),
    Column("district", String(64)),
    Column("town", String(64)),
    Column("community", String(64)),
    Column("building", String(64)),
    Column("caller", String(64), comment="Caller's number as a keyed HMAC (pseudonym), never the clear number."),
    Column("department", String(64)),
    Column("service_code", String(64), comment="Open311 service code when diverted."),
    Column("merged_into", String(26)),
    Column("alert_id", String(26), comment="The alert that opened it, if any."),
    Column("unit_id", String(64), comment="The responder assigned now, if any."),
    Column("perceived_at", TS),
    Column("warned_at", TS),
    Column("opened_at", TS, nullable=False),
    Column("triaged_at", TS),
    Column("dispatched_at", TS),
    Column("en_route_at", TS),
    Column("on_scene_at", TS),
    Column("disposed_at", TS),
    Column("closed_at", TS),
    Column("updated_at", TS, nullable=False),
    Column("version", Integer, nullable=False, comment="Bumped by every change (optimistic concurrency)."),
)
Index("ix_incidents_stage_opened_at", incidents.c.stage, incidents.c.opened_at)
Index("ix_incidents_town_opened_at", incidents.c.town, incidents.c.opened_at)
Index("ix_incidents_alert_id", incidents.c.alert_id)
# Duplicate detection (`IncidentRepo.merge_candidates`): same building, or same type inside a latitude band.
Index("ix_incidents_building_opened_at", incidents.c.building, incidents.c.opened_at)
Index("ix_incidents_type_lat", incidents.c.type, incidents.c.lat)

incident_steps = Table(
    "incident_steps",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("incident_id", String(26), nullable=False),
    Column("action", String(16), nullable=False),
    Column("from_stage", String(16)),
    Column("to_stage", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("at", TS, nullable=False),
    Column("unit_id", String(64)),
    Column("note", Text),
    Column("evidence", JSON, nullable=False, comment="[{kind: event|alert|media|incident|note, ref}]"),
)
Index("ix_incident_steps_incident_id_at", incident_steps.c.incident_id, incident_steps.c.at)

responders = Table(
    "responders",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False, comment="police | department | community"),
    Column("name", String(200), nullable=False),
    Column("unit_type", String(32), nullable=False, comment="car | motorbike | foot | crew | guard | volunteer"),
    Column("station", String(64)),
    Column("department", String(64)),
    Column("service_codes", JSON, nullable=False),
    Column("capabilities", JSON, nullable=False),
    Column("town", String(64)),
    Column("community", String(64)),
    Column("shift", JSON, comment="On-duty schedule: [{days, start, end}] in the node's zone; none = always."),
    Column("contact", String(26), comment="Notify subscription for its task messages."),
    Column("status", String(16), nullable=False),
    Column("incident_id", String(26), comment="The incident it is committed to now."),
    Column("lon", Float),
    Column("lat", Float),
    Column("heading", Float),
    Column("fix_at", TS),
    Column("updated_at", TS, nullable=False),
    Column("version", Integer, nullable=False),
)
Index("ix_responders_status", responders.c.status)

assignments = Table(
    "assignments",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("incident_id", String(26), nullable=False),
    Column("responder_id", String(64), nullable=False),
    Column("assigned_at", TS, nullable=False),
    Column("eta_s", Float),
    Column("actor", String(128), nullable=False),
    Column("released_at", TS),
    Column("outcome", String(32), comment="arrived | reassigned | cancelled | closed"),
    Column("active", Integer, comment="1 while the assignment holds, NULL after: one active assignment a responder."),
)
Index("ix_assignments_incident_id", assignments.c.incident_id)
Index("uq_assignments_responder_active", assignments.c.responder_id, assignments.c.active, unique=True)

open311_requests = Table(
    "open311_requests",
    metadata,
    Column("id", String(64), primary_key=True, comment="service_request_id"),
    Column("incident_id", String(26), nullable=False),
    Column("service_code", String(64), nullable=False),
    Column("status", String(8), nullable=False, comment="open | closed"),
    Column("status_notes", Text),
    Column("agency_responsible", String(128)),
    Column("service_notice", Text),
    Column("description", Text),
    Column("address", String(256)),
    Column("lon", Float),
    Column("lat", Float),
    Column("media_url", Text),
    Column("attributes", JSON, nullable=False),
    Column("requested_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("expected_at", TS),
)
Index("ix_open311_requests_service_code_updated_at", open311_requests.c.service_code, open311_requests.c.updated_at)
Index("ix_open311_requests_incident_id", open311_requests.c.incident_id)
