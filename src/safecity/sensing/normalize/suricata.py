"""Suricata EVE JSON alerts from the city network's IDS; other EVE records are dropped on purpose.

IP addresses and ports here are the city network's infrastructure, not personal data: they stay in `data`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from safecity.sensing.model import DeadLetterReason, DeviceKind, Discarded, EventKind, NormalizeError, Reading
from safecity.sensing.normalize import _common
from safecity.sensing.normalize.registry import NormalizerSpec, TopicKind, register

KEY = "suricata"

DEVICE_PREFIX = "ids:"
DEFAULT_SENSOR = "suricata"


class EveAlert(msgspec.Struct, kw_only=True):
    """The `alert` object of an EVE record."""

    signature_id: int
    signature: Annotated[str, Meta(max_length=1024)]
    severity: Annotated[int, Meta(ge=1, le=255)]
    category: str | None = None
    action: str | None = None
    gid: int | None = None
    rev: int | None = None
    metadata: Any = None


class EveRecord(msgspec.Struct, kw_only=True):
    """One EVE JSON record (only the fields we use; EVE has many more, ignored)."""

    timestamp: Annotated[str, Meta(max_length=64)]
    event_type: Annotated[str, Meta(max_length=64)]
    flow_id: int | None = None
    host: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    in_iface: str | None = None
    src_ip: str | None = None
    src_port: int | None = None
    dest_ip: str | None = None
    dest_port: int | None = None
    proto: str | None = None
    app_proto: str | None = None
    direction: str | None = None
    community_id: str | None = None
    alert: EveAlert | None = None


class _EventType(msgspec.Struct):
    """Just `event_type`, so non-alert records are dropped whatever the rest of them holds."""

    event_type: str


_RECORD = msgspec.json.Decoder(EveRecord)
_EVENT_TYPE = msgspec.json.Decoder(_EventType)


def _parse_timestamp(value: str, device_id: str) -> datetime:
    """Parse EVE's ISO 8601 time (`2017-04-07T22:24:37.251547+0100`); naive times are refused."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, "timestamp is not ISO 8601", device_id) from err
    return _common.aware_utc(parsed, device_id, "timestamp")


def normalize(
    raw: bytes,
    *,
    topic: str | None,
    device_id: str | None,
    kind: DeviceKind | None,
    received_at: datetime,
) -> list[Reading]:
    """Normalize one EVE record: an `alert` becomes a NETSEC Reading, any other event_type is Discarded."""
    head = _common.decode(_EVENT_TYPE, raw, device_id)
    if head.event_type != "alert":
        raise Discarded("not_alert")
    rec = _common.decode(_RECORD, raw, device_id)
    if rec.host:
        dev = DEVICE_PREFIX + rec.host
    elif device_id:
        dev = device_id if device_id.startswith(DEVICE_PREFIX) else DEVICE_PREFIX + device_id
    else:
        dev = DEVICE_PREFIX + DEFAULT_SENSOR
    alert = rec.alert
    if alert is None:
        raise NormalizeError(DeadLetterReason.INVALID_PAYLOAD, "alert record without an alert object", dev)
    occurred_at = _parse_timestamp(rec.timestamp, dev)
    data = {
        k: v
        for k, v in {
            "signature_id": alert.signature_id,
            "signature": alert.signature,
            "category": alert.category,
            "severity": alert.severity,
            "action": alert.action,
            "gid": alert.gid,
            "rev": alert.rev,
            "metadata": alert.metadata,
            "src_ip": rec.src_ip,
            "src_port": rec.src_port,
            "dest_ip": rec.dest_ip,
            "dest_port": rec.dest_port,
            "proto": rec.proto,
            "app_proto": rec.app_proto,
            "direction": rec.direction,
            "flow_id": rec.flow_id,
            "in_iface": rec.in_iface,
            "community_id": rec.community_id,
        }.items()
        if v is not None
    }
    # EVE alerts carry no id of their own; flow + rule + time identifies one, so a replayed log dedupes.
    message_id = (
        f"{rec.flow_id}:{alert.gid or 1}:{alert.signature_id}:{occurred_at.isoformat()}"
        if rec.flow_id is not None
        else None
    )
    return [
        Reading(
            device_id=dev,
            kind=EventKind.NETSEC,
            occurred_at=occurred_at,
            message_id=message_id,
            value=float(alert.severity),
            state=alert.action,
            data=data,
        )
    ]


SPEC = register(
    NormalizerSpec(
        key=KEY,
        normalize=normalize,
        summary="Suricata EVE JSON alerts from the city network's IDS.",
        kinds=(
            TopicKind(
                kind="netsec",
                payload=EveRecord,
                summary="Suricata EVE JSON records of the city network's IDS; only `event_type: alert` is kept.",
                message="EveRecordMessage",
            ),
        ),
    )
)
