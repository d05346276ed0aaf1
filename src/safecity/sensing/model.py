"""Sensing types: device kinds, event kinds, normalized readings, tagged events, device and dead-letter payloads."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

from safecity.kernel.envelope import EventKey, Payload
from safecity.kernel.keys import KeyFamily


class DeviceKind(StrEnum):
    """Kinds of device a district registers."""

    SMOKE = "smoke"
    DOOR = "door"
    PARKING = "parking"
    CHECKPOINT = "checkpoint"
    VIDEO = "video"
    CROWD = "crowd"
    HEARTBEAT = "heartbeat"  # a device that only reports it is alive (a gateway, a repeater)
    GENERIC = "generic"


class EventKind(StrEnum):
    """Kinds of sensed event; each is published on the bus as `event.<kind>`."""

    SMOKE = "smoke"
    DOOR = "door"
    PARKING = "parking"
    CHECKPOINT = "checkpoint"
    VIDEO = "video"
    VIDEO_REVIEW = "video_review"
    CROWD = "crowd"
    HEARTBEAT = "heartbeat"
    NETSEC = "netsec"
    GENERIC = "generic"
    SLA = "sla"  # a dispatch service-level target missed (published by the dispatch slice, not by devices)


class DeviceStatus(StrEnum):
    """Operational status of a device."""

    ACTIVE = "active"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"


class Reading(msgspec.Struct, kw_only=True):
    """What a normalizer makes of one raw message, before validation and tagging.

    `message_id` is the sender's own id when it has one: a repeat of (device_id, message_id) is a duplicate.
    Personal fields go in `personal` in the clear; the pipeline pseudonymizes them before anything is stored.
    """

    device_id: str
    kind: EventKind
    occurred_at: datetime
    message_id: str | None = None
    lon: float | None = None
    lat: float | None = None
    value: float | None = None
    state: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    personal: dict[str, str] = msgspec.field(default_factory=dict)


class Tags(msgspec.Struct, frozen=True, kw_only=True):
    """Where an event belongs; a missing level is None ('outside every polygon' is tagged, not dropped)."""

    town: str | None = None
    community: str | None = None
    building: str | None = None
    device_kind: str | None = None
    district: str | None = None  # last: older messages without it still decode


class SensorEvent(Payload, frozen=True):
    """A normalized, validated and tagged event: the payload of every `event.<kind>` message."""

    device_id: str
    kind: EventKind
    tags: Tags
    message_id: str | None = None
    lon: float | None = None
    lat: float | None = None
    value: float | None = None
    state: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    # Pseudonymized personal fields: name -> keyed HMAC (hex). Never the clear value.
    pseudonyms: dict[str, str] = msgspec.field(default_factory=dict)


class DeviceOffline(Payload, frozen=True):
    """A device missed its heartbeat deadline."""

    device_id: str
    kind: DeviceKind
    tags: Tags
    last_seen: datetime | None
    deadline: datetime


class DeadLettered(Payload, frozen=True):
    """A message that could not be accepted, with the reason."""

    reason: str
    detail: str
    source: str
    topic: str | None = None
    device_id: str | None = None


def event_key(kind: EventKind) -> EventKey[SensorEvent]:
    """Return the bus key for an event kind (`event.<kind>`)."""
    return EVENT_KEYS[kind]


# Every `event.<kind>` carries a SensorEvent, kinds made at run time included (subscribers take `EVENTS`).
EVENTS: KeyFamily[SensorEvent] = KeyFamily("event", SensorEvent)
EVENT_KEYS: dict[EventKind, EventKey[SensorEvent]] = {k: EVENTS.key(k.value) for k in EventKind}
DEVICE_OFFLINE: EventKey[DeviceOffline] = EventKey("device.offline", DeviceOffline)
DEAD_LETTERED: EventKey[DeadLettered] = EventKey("deadletter.recorded", DeadLettered)


class DeadLetterReason(StrEnum):
    """Why an input was refused. Stable codes: they are counted and listed through the API."""

    MALFORMED_JSON = "malformed_json"
    INVALID_PAYLOAD = "invalid_payload"
    UNKNOWN_DEVICE = "unknown_device"
    BAD_COORDINATES = "bad_coordinates"
    TOO_LARGE = "too_large"
    TIME_OUT_OF_RANGE = "time_out_of_range"
    DUPLICATE = "duplicate"
    UNKNOWN_TOPIC = "unknown_topic"
    BUS_OVERFLOW = "bus_overflow"
    NORMALIZER_FAILED = "normalizer_failed"


class NormalizeError(Exception):
    """A raw message could not be normalized; carries a dead-letter reason code."""

    def __init__(self, reason: DeadLetterReason, detail: str, device_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.device_id = device_id


class Discarded(Exception):
    """A message dropped on purpose (e.g. Frigate face recognition: biometrics are out of scope); counted only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
