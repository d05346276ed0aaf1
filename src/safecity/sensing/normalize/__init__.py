"""Pure normalizers: one raw message (bytes) -> `list[Reading]`, or NormalizeError / Discarded.

Each format is a module of this package that registers a `NormalizerSpec` (registry.py): its `KEY`, the topics it
serves, its payload structs, its documentation and `normalize(raw, *, topic, device_id, kind, received_at)`. No I/O,
no clock reads (`received_at` is the only time they know), strict msgspec decoding. Every module here is imported
below, so a new format is one new module; modules whose name starts with `_` are helpers.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from datetime import datetime

from safecity.sensing.model import DeviceKind, Reading
from safecity.sensing.normalize.registry import (
    Normalizer,
    NormalizerConflict,
    NormalizerMap,
    TopicParts,
    UnknownFormat,
    get,
)

# Sorted by name (pkgutil's order); checkpoint imports generic, so generic registers first either way.
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

from safecity.sensing.normalize.generic import parse_topic  # noqa: E402  (after the formats have registered)

NORMALIZERS: Mapping[str, Normalizer] = NormalizerMap()
"""Format key -> normalizer (a view of the registry)."""


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
    return get(fmt).normalize(raw, topic=topic, device_id=device_id, kind=kind, received_at=received_at)


__all__ = [
    "NORMALIZERS",
    "Normalizer",
    "NormalizerConflict",
    "TopicParts",
    "UnknownFormat",
    "normalize",
    "parse_topic",
]
