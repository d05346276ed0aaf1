"""Wire shapes of the SafeCity device payload, one struct per message kind (the JSON Schema vendors build to).

On MQTT the topic `safecity/<community>/<kind>/<device>` names the kind and the device, so `kind` and `device` may be
left out of the payload; in an HTTP batch line they are required. Unknown fields are refused: a typo in a field name
must not turn an alarm into silence. Vendor extras go into the free `data` object.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

DeviceName = Annotated[
    str, Meta(min_length=1, max_length=128, pattern=r"^[^\s/#+]+$", description="Device id, as in the topic.")
]
MessageId = Annotated[
    str, Meta(min_length=1, max_length=128, description="The sender's message id; a repeat is dropped as a duplicate.")
]
Timestamp = Annotated[
    float | datetime,
    Meta(description="When it happened: unix seconds, or RFC 3339 with a UTC offset. Default: time of receipt."),
]
Lon = Annotated[float, Meta(description="WGS84 longitude, -180..180 (GCJ-02 is not accepted here).")]
Lat = Annotated[float, Meta(description="WGS84 latitude, -90..90.")]
ShortText = Annotated[str, Meta(max_length=64)]
Label = Annotated[str, Meta(max_length=128)]


class DevicePayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    """Fields every SafeCity device message may carry."""

    id: MessageId | None = None
    ts: Timestamp | None = None
    device: DeviceName | None = None
    building: Label | None = None
    lon: Lon | None = None
    lat: Lat | None = None
    value: float | None = None
    state: ShortText | None = None
    data: dict[str, Any] | None = None


class SmokePayload(DevicePayload, tag="smoke"):
    """A smoke detector: `alarm` is required (also the shape Node-RED flows send)."""

    alarm: bool
    smoke_density: Annotated[float, Meta(ge=0, description="Obscuration, %/m.")] | None = None
    temp: Annotated[float, Meta(ge=-100, le=1500, description="Temperature, °C.")] | None = None


class DoorPayload(DevicePayload, tag="door"):
    """A door or access sensor."""

    open: bool


class ParkingPayload(DevicePayload, tag="parking"):
    """A parking-bay (geomagnetic) sensor."""

    occupied: bool


class CrowdPayload(DevicePayload, tag="crowd"):
    """A people counter: how many are in its zone now."""

    count: Annotated[int, Meta(ge=0, le=10_000_000)]
    zone: Label | None = None
    density: Annotated[float, Meta(ge=0, description="People per square metre.")] | None = None


class HeartbeatPayload(DevicePayload, tag="heartbeat"):
    """A device saying it is alive; every field is optional."""

    battery: Annotated[float, Meta(ge=0, le=100, description="Battery, percent.")] | None = None
    rssi: Annotated[float, Meta(ge=-200, le=50, description="Signal strength, dBm.")] | None = None
    fw: ShortText | None = None


class GenericPayload(DevicePayload, tag="generic"):
    """Any other sensor: `value`, `state` and the free `data` object."""


class VideoPayload(DevicePayload, tag="video"):
    """A camera's own analytics result (not Frigate): `value`, `state` and `data`, as for a generic sensor."""


class CheckpointPayload(DevicePayload, tag="checkpoint"):
    """A vehicle read at a checkpoint camera. The plate is personal data: stored pseudonymized."""

    ts: Timestamp
    plate: Annotated[str, Meta(min_length=1, max_length=32)]
    direction: Literal["in", "out"] | None = None
    lane: Annotated[int, Meta(ge=0, le=64)] | None = None
    vehicle_type: ShortText | None = None
    color: ShortText | None = None
    speed_kmh: Annotated[float, Meta(ge=0, le=500)] | None = None


AnyDevicePayload = (
    SmokePayload | DoorPayload | ParkingPayload | CrowdPayload | HeartbeatPayload | GenericPayload | CheckpointPayload
)

PAYLOAD_TYPES: dict[str, type[DevicePayload]] = {
    "smoke": SmokePayload,
    "door": DoorPayload,
    "parking": ParkingPayload,
    "crowd": CrowdPayload,
    "heartbeat": HeartbeatPayload,
    "generic": GenericPayload,
    "video": VideoPayload,
    "checkpoint": CheckpointPayload,
}
"""Message kind (the topic's `<kind>` segment, or `kind` in a batch line) -> payload struct."""
