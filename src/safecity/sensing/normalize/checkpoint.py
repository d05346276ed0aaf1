"""Vehicle reads from checkpoint cameras: the plate goes to `personal`, never to `data`."""

from __future__ import annotations

from datetime import datetime

from safecity.sensing.model import DeviceKind, Reading
from safecity.sensing.normalize.generic import decode_device_message, to_reading
from safecity.sensing.normalize.payloads import CheckpointPayload
from safecity.sensing.normalize.registry import NormalizerSpec, TopicKind, register

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


SPEC = register(
    NormalizerSpec(
        key=KEY,
        normalize=normalize,
        summary="Vehicle reads from checkpoint cameras, in the SafeCity device payload.",
        kinds=(
            TopicKind(
                kind="checkpoint",
                payload=CheckpointPayload,
                device_kind=DeviceKind.CHECKPOINT,
                summary=(
                    "A vehicle read at a checkpoint camera: `ts` and `plate` are required; the plate is personal data."
                ),
                example={
                    "id": "cp7-88121",
                    "ts": "2026-11-29T08:00:00Z",
                    "plate": "沪A·12345",
                    "direction": "in",
                    "lane": 2,
                    "vehicle_type": "car",
                    "color": "white",
                    "speed_kmh": 38.5,
                },
            ),
        ),
    )
)
