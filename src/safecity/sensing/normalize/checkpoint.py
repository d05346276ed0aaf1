"""Vehicle reads from checkpoint cameras: the plate goes to `personal`, never to `data`."""

from __future__ import annotations

from datetime import datetime

from safecity.sensing.model import DeviceKind, Reading
from safecity.sensing.normalize.generic import decode_device_message, to_reading

KEY = "checkpoint"


def normalize(
    raw: bytes,
    *,
    topic: str | None,
    device_id: str | None,
    kind: DeviceKind | None,
    received_at: datetime,
) -> list[Reading]:
    """Normalize one checkpoint read into a CHECKPOINT Reading with `personal["plate"]` upper-cased, unspaced."""
    payload, msg_kind, dev = decode_device_message(raw, topic=topic, device_id=device_id, kind=kind, force_kind=KEY)
    return [to_reading(payload, msg_kind, dev, received_at)]
