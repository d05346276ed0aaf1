"""Frigate NVR MQTT messages: `events`, `reviews`, `tracked_object_update` and `triggers`.

Biometrics are out of scope by design: face-recognition updates are discarded, and a `person`'s sub-label (a
recognized name) is dropped. Plates and known-vehicle names are personal: they go to `personal`, never `data`.
Frigate adds fields between releases, so unknown fields are ignored here (the fields we use are still typed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from safecity.sensing.model import DeadLetterReason, DeviceKind, Discarded, EventKind, NormalizeError, Reading
from safecity.sensing.normalize import _common
from safecity.sensing.normalize.registry import Channel, NormalizerSpec, register

KEY = "frigate"

DEVICE_PREFIX = "frigate:"
# Labels whose sub-label is a person's name (face recognition): never kept.
PERSON_LABELS = frozenset({"person", "face"})
# Labels whose sub-label is a known vehicle's name ("John's Car"): personal.
VEHICLE_LABELS = frozenset({"car", "motorcycle", "bus", "truck", "bicycle", "boat", "license_plate"})

Camera = Annotated[str, Meta(min_length=1, max_length=128)]
ObjectId = Annotated[str, Meta(min_length=1, max_length=128)]


class FrigateSnapshot(msgspec.Struct, kw_only=True):
    """The best snapshot of a tracked object so far."""

    frame_time: float | None = None
    box: list[float] | None = None
    area: float | None = None
    region: list[float] | None = None
    score: float | None = None
    attributes: Any = None


class FrigateObject(msgspec.Struct, kw_only=True):
    """A tracked object as Frigate publishes it in `before` / `after`."""

    id: ObjectId
    camera: Camera
    label: Annotated[str, Meta(max_length=64)]
    sub_label: Any = None  # null, [name, score] (Frigate >= 0.14) or a plain string (older releases)
    score: float | None = None
    top_score: float | None = None
    false_positive: bool | None = None
    start_time: float | None = None
    end_time: float | None = None
    frame_time: float | None = None
    box: list[float] | None = None
    area: float | None = None
    region: list[float] | None = None
    current_zones: list[str] = msgspec.field(default_factory=list)
    entered_zones: list[str] = msgspec.field(default_factory=list)
    stationary: bool | None = None
    active: bool | None = None
    has_snapshot: bool | None = None
    has_clip: bool | None = None
    snapshot: FrigateSnapshot | None = None
    attributes: Any = None
    current_attributes: Any = None
    current_estimated_speed: float | None = None
    average_estimated_speed: float | None = None
    velocity_angle: float | None = None
    recognized_license_plate: str | None = None
    recognized_license_plate_score: float | None = None


class FrigateEvent(msgspec.Struct, kw_only=True):
    """A message on `frigate/events`."""

    type: Literal["new", "update", "end"]
    after: FrigateObject
    before: FrigateObject | None = None


class FrigateReviewData(msgspec.Struct, kw_only=True):
    """What a review item contains."""

    detections: list[str] = msgspec.field(default_factory=list)
    objects: list[str] = msgspec.field(default_factory=list)
    sub_labels: list[Any] = msgspec.field(default_factory=list)
    zones: list[str] = msgspec.field(default_factory=list)
    audio: list[str] = msgspec.field(default_factory=list)


class FrigateReviewItem(msgspec.Struct, kw_only=True):
    """A review item (a span of activity on one camera)."""

    id: ObjectId
    camera: Camera
    start_time: float
    end_time: float | None = None
    severity: Annotated[str, Meta(max_length=32)]
    thumb_path: str | None = None
    data: FrigateReviewData = msgspec.field(default_factory=FrigateReviewData)


class FrigateReview(msgspec.Struct, kw_only=True):
    """A message on `frigate/reviews`."""

    type: Literal["new", "update", "end"]
    after: FrigateReviewItem
    before: FrigateReviewItem | None = None


class FrigateTrackedObjectUpdate(msgspec.Struct, kw_only=True):
    """A message on `frigate/tracked_object_update` (`description`, `lpr`, `classification`; `face` is discarded)."""

    type: Annotated[str, Meta(max_length=32)]
    id: ObjectId
    camera: Camera | None = None
    timestamp: float | None = None
    score: float | None = None
    description: str | None = None
    plate: str | None = None
    name: str | None = None
    plate_box: list[float] | None = None
    model: str | None = None
    sub_label: str | None = None
    attribute: str | None = None


class FrigateTrigger(msgspec.Struct, kw_only=True):
    """A message on `frigate/triggers` (a semantic-search trigger fired)."""

    name: Annotated[str, Meta(min_length=1, max_length=128)]
    camera: Camera
    event_id: ObjectId
    type: Annotated[str, Meta(max_length=32)]
    score: float | None = None


class _TypeOnly(msgspec.Struct):
    """Just the `type` of a tracked-object update, read before anything else."""

    type: str


_EVENT = msgspec.json.Decoder(FrigateEvent)
_REVIEW = msgspec.json.Decoder(FrigateReview)
_UPDATE = msgspec.json.Decoder(FrigateTrackedObjectUpdate)
_UPDATE_TYPE = msgspec.json.Decoder(_TypeOnly)
_TRIGGER = msgspec.json.Decoder(FrigateTrigger)


def _digest(raw: bytes) -> str:
    """A short content hash: tells apart updates that carry no time of their own, while replays stay equal."""
    return hashlib.blake2b(raw, digest_size=6).hexdigest()


def _compact(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop absent (None) fields."""
    return {k: v for k, v in fields.items() if v is not None}


def _sub_label_name(sub_label: Any) -> tuple[str | None, float | None]:
    """Read Frigate's sub_label in its old (string) and new ([name, score]) shapes."""
    if isinstance(sub_label, str):
        return sub_label, None
    if isinstance(sub_label, list) and sub_label and isinstance(sub_label[0], str):
        score = sub_label[1] if len(sub_label) > 1 and isinstance(sub_label[1], int | float) else None
        return sub_label[0], None if score is None or isinstance(score, bool) else float(score)
    return None, None


def _event(raw: bytes, _device_id: str | None, received_at: datetime) -> Reading:
    msg = _common.decode(_EVENT, raw, None)
    obj = msg.after
    dev = DEVICE_PREFIX + obj.camera
    if msg.type == "end":
        ts = obj.end_time if obj.end_time is not None else obj.frame_time
    else:
        ts = obj.frame_time if obj.frame_time is not None else obj.start_time
    occurred_at = _common.epoch_to_utc(ts, dev, "frame_time") if ts is not None else received_at
    for name in ("score", "top_score", "area", "current_estimated_speed", "average_estimated_speed"):
        _common.check_finite(name, getattr(obj, name), dev)
    data = _compact(
        {
            "event_id": obj.id,
            "camera": obj.camera,
            "label": obj.label,
            "top_score": obj.top_score,
            "false_positive": obj.false_positive,
            "start_time": obj.start_time,
            "end_time": obj.end_time,
            "zones": obj.current_zones,
            "entered_zones": obj.entered_zones,
            "zones_before": msg.before.current_zones if msg.before is not None else None,
            "box": obj.box,
            "area": obj.area,
            "region": obj.region,
            "stationary": obj.stationary,
            "active": obj.active,
            "has_snapshot": obj.has_snapshot,
            "has_clip": obj.has_clip,
            "attributes": obj.attributes,
            "current_attributes": obj.current_attributes,
            "current_estimated_speed": obj.current_estimated_speed,
            "average_estimated_speed": obj.average_estimated_speed,
            "velocity_angle": obj.velocity_angle,
            "plate_score": obj.recognized_license_plate_score,
        }
    )
    if obj.snapshot is not None:
        data["snapshot"] = _compact(
            {"frame_time": obj.snapshot.frame_time, "box": obj.snapshot.box, "score": obj.snapshot.score}
        )
    # References into the Frigate instance's HTTP API; the picture itself is never copied here.
    if obj.has_snapshot:
        data["snapshot_path"] = f"/api/events/{obj.id}/snapshot.jpg"
    if obj.has_clip:
        data["clip_path"] = f"/api/events/{obj.id}/clip.mp4"
    personal: dict[str, str] = {}
    sub_name, name_score = _sub_label_name(obj.sub_label)
    if sub_name is not None and obj.label not in PERSON_LABELS:
        if obj.label in VEHICLE_LABELS:
            personal["sub_label"] = sub_name
        else:
            data["sub_label"] = sub_name
            if name_score is not None:
                data["sub_label_score"] = name_score
    if obj.recognized_license_plate:
        plate = _common.normalize_plate(obj.recognized_license_plate)
        personal["plate"] = plate or obj.recognized_license_plate.strip().upper()
    if msg.type == "update" and obj.frame_time is not None:
        message_id = f"{obj.id}:update:{obj.frame_time!r}"
    else:
        message_id = f"{obj.id}:{msg.type}"
    return Reading(
        device_id=dev,
        kind=EventKind.VIDEO,
        occurred_at=occurred_at,
        message_id=message_id,
        value=obj.score,
        state=msg.type,
        data=data,
        personal=personal,
    )


def _review(raw: bytes, _device_id: str | None, received_at: datetime) -> Reading:
    msg = _common.decode(_REVIEW, raw, None)
    item = msg.after
    dev = DEVICE_PREFIX + item.camera
    if msg.type == "new":
        occurred_at = _common.epoch_to_utc(item.start_time, dev, "start_time")
    elif msg.type == "end" and item.end_time is not None:
        occurred_at = _common.epoch_to_utc(item.end_time, dev, "end_time")
    else:
        # An update says "now" without a time of its own.
        occurred_at = received_at
    data = _compact(
        {
            "review_id": item.id,
            "camera": item.camera,
            "severity": item.severity,
            "start_time": item.start_time,
            "end_time": item.end_time,
            "thumb_path": item.thumb_path,
            "detections": item.data.detections,
            "objects": item.data.objects,
            "zones": item.data.zones,
            "audio": item.data.audio,
            "severity_before": msg.before.severity if msg.before is not None else None,
        }
    )
    # Review sub-labels mix recognized faces and known-vehicle names with no label beside them: never kept.
    message_id = f"{item.id}:{msg.type}" if msg.type in ("new", "end") else f"{item.id}:{msg.type}:{_digest(raw)}"
    return Reading(
        device_id=dev,
        kind=EventKind.VIDEO_REVIEW,
        occurred_at=occurred_at,
        message_id=message_id,
        state=msg.type,
        data=data,
    )


def _tracked_object_update(raw: bytes, device_id: str | None, received_at: datetime) -> Reading:
    head = _common.decode(_UPDATE_TYPE, raw, None)
    if head.type == "face":
        # Face recognition is biometric identification: out of scope, never stored, not even as a dead letter.
        raise Discarded("biometric")
    if head.type not in ("lpr", "description", "classification"):
        raise Discarded("unsupported_update")
    msg = _common.decode(_UPDATE, raw, None)
    dev = DEVICE_PREFIX + msg.camera if msg.camera else device_id or KEY
    occurred_at = _common.epoch_to_utc(msg.timestamp, dev, "timestamp") if msg.timestamp is not None else received_at
    _common.check_finite("score", msg.score, dev)
    data: dict[str, Any] = {"event_id": msg.id, "update": msg.type}
    personal: dict[str, str] = {}
    if msg.type == "lpr":
        if not msg.plate:
            raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, "lpr update without a plate", dev)
        personal["plate"] = _common.normalize_plate(msg.plate) or msg.plate.strip().upper()
        if msg.name:
            personal["plate_name"] = msg.name
        data.update(_compact({"plate_box": msg.plate_box, "camera": msg.camera}))
        suffix = f"lpr:{msg.timestamp!r}" if msg.timestamp is not None else f"lpr:{_digest(raw)}"
    elif msg.type == "description":
        if msg.description is None:
            raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, "description update without text", dev)
        data["description"] = msg.description
        suffix = f"description:{_digest(raw)}"
    else:
        if msg.sub_label is None and msg.attribute is None:
            raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, "classification without a result", dev)
        data.update(
            _compact({"model": msg.model, "sub_label": msg.sub_label, "attribute": msg.attribute, "camera": msg.camera})
        )
        suffix = f"classification:{msg.model or ''}:{msg.timestamp!r}"
    return Reading(
        device_id=dev,
        kind=EventKind.VIDEO,
        occurred_at=occurred_at,
        message_id=f"{msg.id}:{suffix}",
        value=msg.score,
        state=msg.type,
        data=data,
        personal=personal,
    )


def _trigger(raw: bytes, _device_id: str | None, received_at: datetime) -> Reading:
    msg = _common.decode(_TRIGGER, raw, None)
    dev = DEVICE_PREFIX + msg.camera
    _common.check_finite("score", msg.score, dev)
    return Reading(
        device_id=dev,
        kind=EventKind.VIDEO,
        occurred_at=received_at,
        message_id=f"{msg.event_id}:trigger:{msg.name}",
        value=msg.score,
        state="trigger",
        data={"event_id": msg.event_id, "camera": msg.camera, "trigger": msg.name, "trigger_type": msg.type},
    )


# The topics we read, each with its payload struct, its documentation and its reader: the MQTT subscriptions, the
# AsyncAPI channels and the dispatch below all come from this one table.
_TOPICS: tuple[tuple[Channel, Callable[[bytes, str | None, datetime], Reading]], ...] = (
    (
        Channel(
            topic="frigate/events",
            payload=FrigateEvent,
            summary=(
                "Tracked objects (`new`/`update`/`end`). A person's sub_label (a face-recognition name) is dropped; "
                "recognized plates are stored pseudonymized."
            ),
        ),
        _event,
    ),
    (
        Channel(
            topic="frigate/reviews",
            payload=FrigateReview,
            summary="Review items (`new`/`update`/`end`); sub-labels are not kept.",
        ),
        _review,
    ),
    (
        Channel(
            topic="frigate/tracked_object_update",
            payload=FrigateTrackedObjectUpdate,
            summary=(
                "`description`, `lpr` and `classification` updates are read; `face` updates are discarded unread "
                "(biometric identification is out of scope)."
            ),
        ),
        _tracked_object_update,
    ),
    (
        Channel(topic="frigate/triggers", payload=FrigateTrigger, summary="Semantic-search triggers that fired."),
        _trigger,
    ),
)
# The topic's last segment says which message it is.
_READERS = {channel.topic.rsplit("/", 1)[-1]: reader for channel, reader in _TOPICS}


def normalize(
    raw: bytes,
    *,
    topic: str | None,
    device_id: str | None,
    kind: DeviceKind | None,
    received_at: datetime,
) -> list[Reading]:
    """Normalize one Frigate MQTT message; the topic's last segment says which message it is."""
    reader = _READERS.get(topic.rsplit("/", 1)[-1]) if topic else None
    if reader is None:
        raise NormalizeError(
            DeadLetterReason.UNKNOWN_TOPIC, f"not a Frigate topic we read: {(topic or '')[:120]}", device_id
        )
    return [reader(raw, device_id, received_at)]


SPEC = register(
    NormalizerSpec(
        key=KEY,
        normalize=normalize,
        summary="Frigate NVR's MQTT messages (events, reviews, tracked-object updates, triggers).",
        channels=tuple(channel for channel, _ in _TOPICS),
        channel_device_kind=DeviceKind.VIDEO,
        mqtt_switch="frigate",
    )
)
