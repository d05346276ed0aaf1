"""The normalizer registry: what the built-in formats serve, topic routes, conflicts refused, routes kept per topic."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import msgspec
import pytest

from safecity.sensing.model import DeviceKind, Reading
from safecity.sensing.normalize import NormalizerConflict, UnknownFormat, registry
from safecity.sensing.normalize.registry import Channel, NormalizerSpec, TopicKind


def _nothing(
    raw: bytes, *, topic: str | None, device_id: str | None, kind: DeviceKind | None, received_at: datetime
) -> list[Reading]:
    return []


class _Empty(msgspec.Struct):
    """No fields."""


def spec(key: str, kinds: tuple[str, ...] = (), topics: tuple[str, ...] = ()) -> NormalizerSpec:
    return NormalizerSpec(
        key=key,
        normalize=_nothing,
        summary="test",
        kinds=tuple(TopicKind(kind=k, payload=_Empty, summary=k) for k in kinds),
        channels=tuple(Channel(topic=t, payload=_Empty, summary=t) for t in topics),
    )


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Keys registered by a test, unregistered after it."""
    keys: list[str] = []
    yield keys
    for key in keys:
        if key in {s.key for s in registry.specs()}:
            registry.unregister(key)


def test_builtin_formats_and_what_they_serve() -> None:
    """The built-in topic kinds and Frigate topics route as the MQTT router's tables did; heartbeats and IDS records
    imply no device kind. (Formats added later only add to these.)"""
    assert [s.key for s in registry.specs()][:4] == ["generic", "checkpoint", "frigate", "suricata"]
    owners = {kind: (s.key, k.device_kind) for kind, (s, k) in registry.topic_kinds().items()}
    assert (
        owners.items()
        >= {
            **{k: ("generic", DeviceKind(k)) for k in ("smoke", "door", "parking", "crowd", "generic", "video")},
            "heartbeat": ("generic", None),
            "checkpoint": ("checkpoint", DeviceKind.CHECKPOINT),
            "netsec": ("suricata", None),
        }.items()
    )
    assert {t: s.key for t, (s, _) in registry.channels().items()}.items() >= {
        "frigate/events": "frigate",
        "frigate/reviews": "frigate",
        "frigate/tracked_object_update": "frigate",
        "frigate/triggers": "frigate",
    }.items()


@pytest.mark.parametrize(
    ("topic", "key", "prefix", "device", "device_kind"),
    [
        ("safecity/c1/smoke/d1", "generic", "safecity", "d1", DeviceKind.SMOKE),
        ("safecity/c1/heartbeat/d1", "generic", "safecity", "d1", None),
        ("other/c1/checkpoint/cam", "checkpoint", "other", "cam", DeviceKind.CHECKPOINT),
        ("safecity/c1/netsec/ids-1", "suricata", "safecity", "ids-1", None),
        ("frigate/events", "frigate", None, None, DeviceKind.VIDEO),
        ("frigate/anything/else", "frigate", None, None, DeviceKind.VIDEO),  # Frigate's namespace is its own
        ("safecity/c1/nope/d1", None, None, None, None),
        ("safecity/c1/smoke", None, None, None, None),
        ("frigate", None, None, None, None),
    ],
)
def test_routes(topic: str, key: str | None, prefix: str | None, device: str | None, device_kind: DeviceKind) -> None:
    """A topic routes to the format serving its kind (or namespace), with the device and device kind it implies."""
    route = registry.route(topic)
    assert (route.spec.key if route.spec else None, route.prefix, route.device_id, route.device_kind) == (
        key,
        prefix,
        device,
        device_kind,
    )


def test_a_route_is_worked_out_once_per_topic(cleanup: list[str]) -> None:
    """The same topic string gets the same route object; registering a format starts the cache again."""
    first = registry.route("safecity/c1/wind/w1")
    assert first.spec is None and registry.route("safecity/c1/wind/w1") is first
    cleanup.append("wind")
    registry.register(spec("wind", kinds=("wind",)))
    again = registry.route("safecity/c1/wind/w1")
    assert again.spec is not None and again.spec.key == "wind" and again.device_id == "w1"
    registry.unregister("wind")
    assert registry.route("safecity/c1/wind/w1").spec is None


@pytest.mark.parametrize(
    "clash",
    [
        spec("generic"),  # a taken key
        spec("smoke2", kinds=("smoke",)),  # a taken topic kind
        spec("twice", kinds=("x1", "x1")),  # one kind twice
        spec("frigate2", topics=("frigate/other",)),  # a taken namespace
        spec("spread", topics=("a/x", "b/y")),  # channels in two namespaces
    ],
)
def test_conflicts_are_refused_with_a_code(clash: NormalizerSpec, cleanup: list[str]) -> None:
    """A registration that would shadow another is refused whole, with `sensing.normalizer_conflict`."""
    before = (registry.specs(), registry.topic_kinds(), registry.channels())
    if clash.key not in {s.key for s in before[0]}:
        cleanup.append(clash.key)  # taken away again should the registration wrongly succeed
    with pytest.raises(NormalizerConflict) as info:
        registry.register(clash)
    assert (info.value.code, info.value.status) == ("sensing.normalizer_conflict", 409)
    assert (registry.specs(), registry.topic_kinds(), registry.channels()) == before


def test_unknown_formats() -> None:
    """Asking for or removing a format nobody registered is UnknownFormat."""
    with pytest.raises(UnknownFormat):
        registry.get("nope")
    with pytest.raises(UnknownFormat):
        registry.unregister("nope")
