"""The SafeCity device payload: MQTT `safecity/<community>/<kind>/<device>` and HTTP batch lines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from safecity.sensing.model import DeadLetterReason, DeviceKind, EventKind, NormalizeError, Reading
from safecity.sensing.normalize import _common
from safecity.sensing.normalize.payloads import (
    PAYLOAD_TYPES,
    AnyDevicePayload,
    CheckpointPayload,
    CrowdPayload,
    DevicePayload,
    DoorPayload,
    GenericPayload,
    HeartbeatPayload,
    ParkingPayload,
    SmokePayload,
    VideoPayload,
)
from safecity.sensing.normalize.registry import NormalizerSpec, TopicKind, TopicParts, register, route

KEY = "generic"

# Each message kind of the SafeCity payload becomes the event kind of the same name.
MESSAGE_KINDS: dict[str, EventKind] = {kind: EventKind(kind) for kind in PAYLOAD_TYPES}
"""Message kinds this format accepts -> the event kind they become."""

_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {k: msgspec.json.Decoder(t) for k, t in PAYLOAD_TYPES.items()}
_ANY_DECODER: msgspec.json.Decoder[AnyDevicePayload] = msgspec.json.Decoder(AnyDevicePayload)


class _Head(msgspec.Struct):
    """Just the `kind` of a batch line, to pick the strict decoder."""

    kind: str | None = None


_HEAD_DECODER = msgspec.json.Decoder(_Head)
_TAGS: dict[type[DevicePayload], str] = {t: k for k, t in PAYLOAD_TYPES.items()}


def parse_topic(topic: str) -> TopicParts:
    """Split a device topic; raise NormalizeError(UNKNOWN_TOPIC) if it is not `<prefix>/<community>/<kind>/<device>`.

    The split is the router's (`registry.route`), kept per topic string: a topic is parsed once.
    """
    parts = route(topic).parts
    if (
        parts is None
        or not (parts.prefix and parts.community and parts.kind and parts.device)
        or parts.kind not in MESSAGE_KINDS
    ):
        raise NormalizeError(DeadLetterReason.UNKNOWN_TOPIC, f"not a device topic: {topic[:120]}")
    return parts


def _kind_hint(raw: bytes, kind: DeviceKind | None, device_id: str | None) -> str | None:
    """Without a topic, the line's own `kind` wins over the registered device kind."""
    head = _common.decode(_HEAD_DECODER, raw, device_id)
    if head.kind is not None:
        if head.kind not in MESSAGE_KINDS:
            raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, f"unknown kind {head.kind[:40]!r}", device_id)
        return head.kind
    if kind is not None and kind.value in MESSAGE_KINDS:
        return kind.value
    return None


def decode_device_message(
    raw: bytes,
    *,
    topic: str | None,
    device_id: str | None,
    kind: DeviceKind | None,
    force_kind: str | None = None,
) -> tuple[DevicePayload, str, str]:
    """Decode a device message strictly; return (payload, message kind, device id).

    The device id comes from the caller, else the topic, else the payload; a payload naming another device than
    the topic is refused. The kind comes from `force_kind`, else the topic, else the payload, else `kind`.
    """
    parts = parse_topic(topic) if topic is not None else None
    dev = device_id or (parts.device if parts else None)
    msg_kind = force_kind or (parts.kind if parts else None)
    if msg_kind is None:
        msg_kind = _kind_hint(raw, kind, dev)
    decoder = _DECODERS[msg_kind] if msg_kind is not None else _ANY_DECODER
    payload: DevicePayload = _common.decode(decoder, raw, dev)
    if payload.device is not None:
        if dev is not None and payload.device != dev:
            raise NormalizeError(
                DeadLetterReason.INVALID_PAYLOAD, f"payload device {payload.device!r} is not {dev!r}", dev
            )
        dev = payload.device
    if dev is None:
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, "no device id in topic or payload")
    return payload, _TAGS[type(payload)], dev


def _kind_fields(payload: DevicePayload) -> tuple[dict[str, Any], float | None, str | None]:
    """Kind-specific data fields plus the default value and state they imply."""
    if isinstance(payload, SmokePayload):
        fields: dict[str, Any] = {"alarm": payload.alarm}
        if payload.smoke_density is not None:
            fields["smoke_density"] = payload.smoke_density
        if payload.temp is not None:
            fields["temp"] = payload.temp
        return fields, payload.smoke_density, "alarm" if payload.alarm else "normal"
    if isinstance(payload, DoorPayload):
        return {"open": payload.open}, None, "open" if payload.open else "closed"
    if isinstance(payload, ParkingPayload):
        return {"occupied": payload.occupied}, None, "occupied" if payload.occupied else "free"
    if isinstance(payload, CrowdPayload):
        fields = {"count": payload.count}
        if payload.zone is not None:
            fields["zone"] = payload.zone
        if payload.density is not None:
            fields["density"] = payload.density
        return fields, float(payload.count), None
    if isinstance(payload, HeartbeatPayload):
        fields = {}
        for name in ("battery", "rssi", "fw"):
            if (v := getattr(payload, name)) is not None:
                fields[name] = v
        return fields, payload.battery, "alive"
    if isinstance(payload, CheckpointPayload):
        fields = {}
        for name in ("direction", "lane", "vehicle_type", "color", "speed_kmh"):
            if (v := getattr(payload, name)) is not None:
                fields[name] = v
        return fields, payload.speed_kmh, payload.direction
    return {}, None, None


def to_reading(payload: DevicePayload, msg_kind: str, device_id: str, received_at: datetime) -> Reading:
    """Turn a decoded, attributed device payload into a Reading (validates coordinates, time, plate)."""
    _common.check_coordinates(payload.lon, payload.lat, device_id)
    _common.check_finite("value", payload.value, device_id)
    occurred_at = _common.to_time(payload.ts, received_at, device_id)
    fields, value, state = _kind_fields(payload)
    data: dict[str, Any] = dict(payload.data) if payload.data else {}
    # Kind fields win over free `data` keys of the same name: they were validated.
    data.update(fields)
    if payload.building is not None:
        data["building"] = payload.building
    personal: dict[str, str] = {}
    if isinstance(payload, CheckpointPayload):
        plate = _common.normalize_plate(payload.plate)
        if plate is None:
            raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, "plate is not a plausible plate", device_id)
        personal["plate"] = plate
    return Reading(
        device_id=device_id,
        kind=MESSAGE_KINDS[msg_kind],
        occurred_at=occurred_at,
        message_id=payload.id,
        lon=payload.lon,
        lat=payload.lat,
        value=payload.value if payload.value is not None else value,
        state=payload.state if payload.state is not None else state,
        data=data,
        personal=personal,
    )


def normalize(
    raw: bytes,
    *,
    topic: str | None,
    device_id: str | None,
    kind: DeviceKind | None,
    received_at: datetime,
) -> list[Reading]:
    """Normalize one SafeCity device message (MQTT payload or HTTP batch line) into one Reading."""
    payload, msg_kind, dev = decode_device_message(raw, topic=topic, device_id=device_id, kind=kind)
    return [to_reading(payload, msg_kind, dev, received_at)]


SPEC = register(
    NormalizerSpec(
        key=KEY,
        normalize=normalize,
        summary="The SafeCity device payload (payloads.py): one topic kind per kind of device, plus heartbeats.",
        kinds=(
            TopicKind(
                kind="smoke",
                payload=SmokePayload,
                device_kind=DeviceKind.SMOKE,
                summary="Smoke detector state: `alarm` is required.",
                example={"id": "b7-d2-000123", "ts": 1764403200.125, "alarm": True, "temp": 72.5, "building": "b7"},
            ),
            TopicKind(
                kind="door",
                payload=DoorPayload,
                device_kind=DeviceKind.DOOR,
                summary="Door or access sensor: `open` is required.",
                example={"ts": "2026-11-29T16:00:00+08:00", "open": True},
            ),
            TopicKind(
                kind="parking",
                payload=ParkingPayload,
                device_kind=DeviceKind.PARKING,
                summary="Parking-bay (geomagnetic) sensor: `occupied` is required.",
                example={"occupied": False, "lon": 121.4737, "lat": 31.2304},
            ),
            TopicKind(
                kind="crowd",
                payload=CrowdPayload,
                device_kind=DeviceKind.CROWD,
                summary="People counter: `count` (integer >= 0) is required.",
                example={"ts": 1764403200, "count": 412, "zone": "metro-exit-3", "density": 1.8},
            ),
            # Heartbeats come from any device kind, so the topic implies none.
            TopicKind(
                kind="heartbeat",
                payload=HeartbeatPayload,
                summary="A device saying it is alive; any device kind sends these on its own `heartbeat` topic.",
                example={"battery": 87, "rssi": -71, "fw": "1.4.2"},
            ),
            TopicKind(
                kind="generic",
                payload=GenericPayload,
                device_kind=DeviceKind.GENERIC,
                summary="Any other sensor: `value`, `state` and a free `data` object.",
                example={"value": 3.2, "state": "ok", "data": {"unit": "m", "sensor": "water_level"}},
            ),
            TopicKind(
                kind="video",
                payload=VideoPayload,
                device_kind=DeviceKind.VIDEO,
                summary="A camera's own analytics result (not Frigate): `value`, `state`, `data`.",
                example={"value": 0.91, "state": "fall_detected", "data": {"zone": "stairs"}},
            ),
        ),
    )
)
