"""The normalizer registry: each format declares its key, the MQTT topics it serves, its payload structs and docs.

Everything that lists formats or topics is derived from here: the MQTT router and its subscriptions, the HTTP
ingest's accepted formats, the AsyncAPI document and the simulator's kinds. A normalizer module registers itself
when it is imported (`register(NormalizerSpec(...))` at its end); `safecity.sensing.normalize` imports every module
of its package, so a new format is one new module.

A topic string is parsed once: `route` works out which normalizer serves it and the device it names, and keeps the
answer per topic string (devices publish on the same topic again and again).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec

from safecity.kernel.errors import SafeCityError
from safecity.sensing.model import DeviceKind, Reading

DEVICE_TOPIC_SEGMENTS = 4  # <prefix>/<community>/<kind>/<device>
ROUTE_CACHE_MAX = 65_536
"""Distinct topic strings whose route is kept; past that the cache starts again (a flood of made-up topics)."""


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


class NormalizerConflict(SafeCityError):
    """Two normalizers claim the same format key, topic kind or topic."""

    code = "sensing.normalizer_conflict"
    status = 409
    title_en = "Normalizer conflict"
    title_zh = "解析器冲突"
    message_en = "{what} is already served by normalizer {owner}."
    message_zh = "{what} 已由解析器 {owner} 处理。"


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicKind:
    """A device-topic kind a normalizer serves: `<prefix>/<community>/<kind>/<device>`."""

    kind: str
    payload: type[Any]
    """The msgspec struct the payload decodes into (its JSON Schema is what the AsyncAPI document publishes)."""
    summary: str
    example: dict[str, Any] | None = None
    """One valid payload: shown in the AsyncAPI document and docs/devices.md, sent by the simulator."""
    device_kind: DeviceKind | None = None
    """The kind of device the topic implies; None when any device may send it (heartbeats, IDS records)."""
    message: str | None = None
    """The AsyncAPI message name; default `<Kind>Message`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    """A fixed MQTT topic a normalizer serves outside the device topics (e.g. `frigate/events`)."""

    topic: str
    payload: type[Any]
    summary: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NormalizerSpec:
    """One format: its key, what it serves on MQTT, its payload structs and its documentation."""

    key: str
    normalize: Normalizer
    summary: str
    kinds: tuple[TopicKind, ...] = ()
    channels: tuple[Channel, ...] = ()
    """Fixed topics; they share a first segment (their namespace), and any topic under it is routed here."""
    channel_device_kind: DeviceKind | None = None
    """The kind of device messages on `channels` come from."""
    mqtt_switch: str | None = None
    """The boolean `[mqtt]` setting that turns the subscription to `channels` on; None: always subscribed."""


class TopicParts(msgspec.Struct, frozen=True):
    """The parts of a device topic `<prefix>/<community>/<kind>/<device>`."""

    prefix: str
    community: str
    kind: str
    device: str


@dataclass(frozen=True, slots=True)
class Route:
    """What one topic string says, worked out once: the normalizer that serves it and the device it names."""

    spec: NormalizerSpec | None
    """None: no normalizer serves this topic."""
    prefix: str | None
    """Device topics: the prefix the router must be configured with; None for a normalizer's own channels."""
    parts: TopicParts | None
    """Set whenever the topic has the device-topic shape (four segments)."""
    device_kind: DeviceKind | None

    @property
    def device_id(self) -> str | None:
        """The device a device topic names (None for channels)."""
        return self.parts.device if self.parts is not None and self.prefix is not None else None


_SPECS: dict[str, NormalizerSpec] = {}
_KINDS: dict[str, tuple[NormalizerSpec, TopicKind]] = {}
_NAMESPACES: dict[str, NormalizerSpec] = {}
_CHANNELS: dict[str, tuple[NormalizerSpec, Channel]] = {}
_ROUTES: dict[str, Route] = {}


def _namespace(topic: str) -> str:
    return topic.split("/", 1)[0]


def register(spec: NormalizerSpec) -> NormalizerSpec:
    """Add a format; raises NormalizerConflict if its key, a topic kind or a channel is taken. Returns `spec`."""
    if spec.key in _SPECS:
        raise NormalizerConflict(what=f"format {spec.key!r}", owner=spec.key)
    kinds = [k.kind for k in spec.kinds]
    for kind in kinds:
        owner = _KINDS.get(kind)
        if owner is not None or kinds.count(kind) > 1:
            raise NormalizerConflict(what=f"topic kind {kind!r}", owner=owner[0].key if owner else spec.key)
    namespaces = {_namespace(c.topic) for c in spec.channels}
    if len(namespaces) > 1:
        raise NormalizerConflict(what=f"channels in several namespaces {sorted(namespaces)}", owner=spec.key)
    for namespace in namespaces:
        taken = _NAMESPACES.get(namespace)
        if taken is not None:
            raise NormalizerConflict(what=f"topics under {namespace + '/'!r}", owner=taken.key)
    _SPECS[spec.key] = spec
    for topic_kind in spec.kinds:
        _KINDS[topic_kind.kind] = (spec, topic_kind)
    for namespace in namespaces:
        _NAMESPACES[namespace] = spec
    for channel in spec.channels:
        _CHANNELS[channel.topic] = (spec, channel)
    _ROUTES.clear()
    return spec


def unregister(key: str) -> None:
    """Remove a format and everything it served (tests add toy formats and take them away again)."""
    spec = _SPECS.pop(key, None)
    if spec is None:
        raise UnknownFormat(fmt=key)
    for table in (_KINDS, _CHANNELS):
        for name in [n for n, (owner, _) in table.items() if owner is spec]:
            del table[name]
    for namespace in [n for n, owner in _NAMESPACES.items() if owner is spec]:
        del _NAMESPACES[namespace]
    _ROUTES.clear()


def get(key: str) -> NormalizerSpec:
    """The format registered under `key`; raises UnknownFormat (422 `sensing.unknown_format`) if none is."""
    try:
        return _SPECS[key]
    except KeyError as err:
        raise UnknownFormat(fmt=key) from err


def specs() -> list[NormalizerSpec]:
    """Every registered format, in registration order."""
    return list(_SPECS.values())


def topic_kinds() -> dict[str, tuple[NormalizerSpec, TopicKind]]:
    """Every device-topic kind -> the format serving it and its declaration, in registration order."""
    return dict(_KINDS)


def channels() -> dict[str, tuple[NormalizerSpec, Channel]]:
    """Every fixed topic -> the format serving it and its declaration, in registration order."""
    return dict(_CHANNELS)


def _resolve(topic: str) -> Route:
    parts = topic.split("/")
    shaped = (
        TopicParts(prefix=parts[0], community=parts[1], kind=parts[2], device=parts[3])
        if len(parts) == DEVICE_TOPIC_SEGMENTS
        else None
    )
    if len(parts) > 1:
        owner = _NAMESPACES.get(parts[0])
        if owner is not None:
            return Route(owner, None, shaped, owner.channel_device_kind)
    if shaped is not None:
        served = _KINDS.get(shaped.kind)
        if served is not None:
            return Route(served[0], shaped.prefix, shaped, served[1].device_kind)
    return Route(None, None, shaped, None)


def route(topic: str) -> Route:
    """The route of a topic string, parsed on first sight and kept (a dict lookup after that)."""
    found = _ROUTES.get(topic)
    if found is None:
        if len(_ROUTES) >= ROUTE_CACHE_MAX:
            _ROUTES.clear()
        found = _ROUTES[topic] = _resolve(topic)
    return found


class NormalizerMap(Mapping[str, Normalizer]):
    """Read-only view: format key -> normalize function, following the registry."""

    def __getitem__(self, key: str) -> Normalizer:
        return _SPECS[key].normalize

    def __iter__(self) -> Iterator[str]:
        return iter(_SPECS)

    def __len__(self) -> int:
        return len(_SPECS)
