"""Pure normalizers: one raw message (bytes) -> `list[Reading]`, or NormalizeError / Discarded.

Each format is a module with `KEY` and `normalize(raw, *, topic, device_id, kind, received_at)`; no I/O, no clock
reads (`received_at` is the only time they know), strict msgspec decoding.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from safecity.kernel.errors import SafeCityError
from safecity.sensing.model import DeviceKind, Reading
from safecity.sensing.normalize import checkpoint, frigate, generic, suricata
from safecity.sensing.normalize.generic import TopicParts, parse_topic


class Normalizer(Protocol):
    """The signature every format's `normalize` function has."""

    def __call__(
        self,
        raw: bytes,
        *,
        topic: str | None,
        device_id: str | None,
        kind: DeviceKind | None,
        received_at: datetime,
    ) -> list[Reading]:
        """Normalize one raw message."""
        ...


class UnknownFormat(SafeCityError):
    """A source is configured with a format no normalizer has."""

    code = "sensing.unknown_format"
    status = 422
    title_en = "Unknown format"
    title_zh = "未知数据格式"
    message_en = "No normalizer for format {fmt}."
    message_zh = "没有格式 {fmt} 的解析器。"


NORMALIZERS: dict[str, Normalizer] = {
    generic.KEY: generic.normalize,
    checkpoint.KEY: checkpoint.normalize,
    frigate.KEY: frigate.normalize,
    suricata.KEY: suricata.normalize,
}
"""Format key -> normalizer."""


def normalize(
    fmt: str,
    raw: bytes,
    *,
    topic: str | None,
    device_id: str | None,
    kind: DeviceKind | None,
    received_at: datetime,
) -> list[Reading]:
    """Normalize one raw message with the normalizer of format `fmt` (raises UnknownFormat for an unknown key)."""
    try:
        normalizer = NORMALIZERS[fmt]
    except KeyError as err:
        raise UnknownFormat(fmt=fmt) from err
    return normalizer(raw, topic=topic, device_id=device_id, kind=kind, received_at=received_at)


__all__ = ["NORMALIZERS", "Normalizer", "TopicParts", "UnknownFormat", "normalize", "parse_topic"]
