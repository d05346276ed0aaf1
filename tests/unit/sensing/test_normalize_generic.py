"""The SafeCity device payload normalizer (generic format), the checkpoint format and the registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _normalize_strategies import EPOCH, FINITE, LAT, LON, NAME, dumps, json_objects
from hypothesis import given
from hypothesis import strategies as st

from safecity.sensing.model import DeadLetterReason, DeviceKind, Discarded, EventKind, NormalizeError, Reading
from safecity.sensing.normalize import NORMALIZERS, UnknownFormat, normalize, parse_topic
from safecity.sensing.normalize.payloads import PAYLOAD_TYPES

RECEIVED = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def gen(raw: bytes, topic: str | None = None, device_id: str | None = None, kind: DeviceKind | None = None) -> Reading:
    """Normalize with the generic format and expect exactly one reading."""
    readings = normalize("generic", raw, topic=topic, device_id=device_id, kind=kind, received_at=RECEIVED)
    assert len(readings) == 1
    return readings[0]


def refused(fmt: str, raw: bytes, topic: str | None = None, device_id: str | None = None) -> DeadLetterReason:
    """Normalize and return the dead-letter reason it must raise."""
    with pytest.raises(NormalizeError) as info:
        normalize(fmt, raw, topic=topic, device_id=device_id, kind=None, received_at=RECEIVED)
    return info.value.reason


KIND_FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "smoke": st.fixed_dictionaries(
        {"alarm": st.booleans()},
        optional={"smoke_density": st.floats(0, 100), "temp": st.floats(-40, 200)},
    ),
    "door": st.fixed_dictionaries({"open": st.booleans()}),
    "parking": st.fixed_dictionaries({"occupied": st.booleans()}),
    "crowd": st.fixed_dictionaries(
        {"count": st.integers(0, 100_000)}, optional={"zone": NAME, "density": st.floats(0, 10)}
    ),
    "heartbeat": st.fixed_dictionaries(
        {}, optional={"battery": st.floats(0, 100), "rssi": st.floats(-120, 0), "fw": NAME}
    ),
    "generic": st.fixed_dictionaries({}, optional={"data": st.dictionaries(NAME, st.integers() | NAME, max_size=3)}),
}
COMMON = {
    "id": NAME,
    "ts": EPOCH,
    "value": FINITE,
    "state": NAME,
    "building": NAME,
}


@st.composite
def device_messages(draw: st.DrawFn) -> tuple[str, str, str, dict[str, Any]]:
    """(kind, community, device, payload) for a valid device message."""
    kind = draw(st.sampled_from(sorted(KIND_FIELDS)))
    payload = draw(KIND_FIELDS[kind])
    payload.update(draw(st.fixed_dictionaries({}, optional=COMMON)))
    if draw(st.booleans()):
        payload["lon"], payload["lat"] = draw(LON), draw(LAT)
    return kind, draw(NAME), draw(NAME), payload


@given(device_messages())
def test_valid_mqtt_messages_map_field_by_field(msg: tuple[str, str, str, dict[str, Any]]) -> None:
    """A valid payload on a device topic normalizes to a reading whose fields are the input's."""
    kind, community, device, payload = msg
    r = gen(dumps(payload), topic=f"safecity/{community}/{kind}/{device}")
    assert r.device_id == device
    assert r.kind == EventKind(kind)
    assert r.message_id == payload.get("id")
    assert r.lon == payload.get("lon") and r.lat == payload.get("lat")
    expected_time = datetime.fromtimestamp(payload["ts"], UTC) if "ts" in payload else RECEIVED
    assert r.occurred_at == expected_time and r.occurred_at.tzinfo is UTC
    if "value" in payload:
        assert r.value == payload["value"]
    if "state" in payload:
        assert r.state == payload["state"]
    for field in ("alarm", "smoke_density", "temp", "open", "occupied", "count", "zone", "density", "battery", "fw"):
        if field in payload:
            assert r.data[field] == payload[field]
    if "building" in payload:
        assert r.data["building"] == payload["building"]
    for k, v in payload.get("data", {}).items():
        assert r.data[k] == v
    assert r.personal == {}


@given(device_messages())
def test_http_batch_lines_carry_device_and_kind(msg: tuple[str, str, str, dict[str, Any]]) -> None:
    """Without a topic the line's `device` and `kind` are used, and give the same reading as on MQTT."""
    kind, community, device, payload = msg
    on_mqtt = gen(dumps(payload), topic=f"safecity/{community}/{kind}/{device}")
    in_batch = gen(dumps({**payload, "device": device, "kind": kind}))
    assert in_batch.device_id == on_mqtt.device_id
    assert in_batch.kind == on_mqtt.kind
    assert (in_batch.value, in_batch.state, in_batch.occurred_at) == (on_mqtt.value, on_mqtt.state, on_mqtt.occurred_at)
    assert in_batch.data == on_mqtt.data


def test_defaults_per_kind() -> None:
    """Kinds fill value and state from their own fields when the device sends none."""
    t = "safecity/c1/{}/d1"
    smoke = gen(b'{"alarm": true, "smoke_density": 3.5}', topic=t.format("smoke"))
    assert (smoke.kind, smoke.state, smoke.value) == (EventKind.SMOKE, "alarm", 3.5)
    assert gen(b'{"alarm": false}', topic=t.format("smoke")).state == "normal"
    assert gen(b'{"open": true}', topic=t.format("door")).state == "open"
    assert gen(b'{"occupied": false}', topic=t.format("parking")).state == "free"
    crowd = gen(b'{"count": 42, "zone": "gate-3"}', topic=t.format("crowd"))
    assert (crowd.kind, crowd.value, crowd.data) == (EventKind.CROWD, 42.0, {"count": 42, "zone": "gate-3"})
    beat = gen(b"{}", topic=t.format("heartbeat"))
    assert (beat.kind, beat.state, beat.value, beat.occurred_at) == (EventKind.HEARTBEAT, "alive", None, RECEIVED)
    beat = gen(b'{"battery": 87, "rssi": -71, "fw": "1.4.2"}', topic=t.format("heartbeat"))
    assert (beat.value, beat.data) == (87.0, {"battery": 87.0, "rssi": -71.0, "fw": "1.4.2"})
    other = gen(b'{"value": 21.5, "state": "ok", "data": {"unit": "C"}}', topic=t.format("generic"))
    assert (other.kind, other.value, other.state, other.data) == (EventKind.GENERIC, 21.5, "ok", {"unit": "C"})


def test_node_red_smoke_payload_is_a_generic_smoke_message() -> None:
    """The peer benchmark's payload shape (shared/peers/node-red) is accepted as is."""
    raw = b'{"id":"r1-b7-3","device":"r1-b7-d2","building":"r1-b7","alarm":true,"ts":1764403200.125,"temp":72.5}'
    r = gen(raw, topic="safecity/r1-b7/smoke/r1-b7-d2")
    assert r.device_id == "r1-b7-d2" and r.message_id == "r1-b7-3" and r.kind == EventKind.SMOKE
    assert r.data == {"alarm": True, "temp": 72.5, "building": "r1-b7"}
    assert r.occurred_at == datetime(2025, 11, 29, 8, 0, 0, 125000, tzinfo=UTC)


def test_rfc3339_times_become_utc_and_naive_ones_are_refused() -> None:
    """An offset time is converted to UTC; a time without an offset has no instant and is refused."""
    t = "safecity/c1/door/d1"
    r = gen(b'{"open": true, "ts": "2026-11-29T16:00:00+08:00"}', topic=t)
    assert r.occurred_at == datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    assert r.occurred_at.utcoffset() == timedelta(0)
    assert refused("generic", b'{"open": true, "ts": "2026-11-29T16:00:00"}', t) == DeadLetterReason.INVALID_PAYLOAD
    assert refused("generic", b'{"open": true, "ts": "yesterday"}', t) == DeadLetterReason.INVALID_PAYLOAD
    assert refused("generic", b'{"open": true, "ts": 1e300}', t) == DeadLetterReason.INVALID_PAYLOAD
    far = b'{"open": true, "ts": "0001-01-01T00:00:00+01:00"}'
    assert refused("generic", far, t) == DeadLetterReason.INVALID_PAYLOAD


@pytest.mark.parametrize(
    ("raw", "topic", "device_id", "reason"),
    [
        (b'{"open": tru', "safecity/c/door/d", None, DeadLetterReason.MALFORMED_JSON),
        (b"[1, 2]", "safecity/c/door/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": 1}', "safecity/c/door/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"alarm": true}', "safecity/c/door/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": true, "opne": false}', "safecity/c/door/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": true, "kind": "smoke"}', "safecity/c/door/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": true, "device": "other"}', "safecity/c/door/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"count": -1}', "safecity/c/crowd/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"count": 2.5}', "safecity/c/crowd/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"battery": 140}', "safecity/c/heartbeat/d", None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": true}', "safecity/c/teleporter/d", None, DeadLetterReason.UNKNOWN_TOPIC),
        (b'{"open": true}', "safecity/c/door", None, DeadLetterReason.UNKNOWN_TOPIC),
        (b'{"open": true}', "safecity/c//d", None, DeadLetterReason.UNKNOWN_TOPIC),
        (b'{"open": true, "kind": "door"}', None, None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": true, "device": "d"}', None, None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": true, "device": "d", "kind": "lava"}', None, None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": true, "device": "a b", "kind": "door"}', None, None, DeadLetterReason.INVALID_PAYLOAD),
        (b'{"open": true, "lon": 121.5}', "safecity/c/door/d", None, DeadLetterReason.BAD_COORDINATES),
    ],
)
def test_bad_device_messages_are_refused_with_their_reason(
    raw: bytes, topic: str | None, device_id: str | None, reason: DeadLetterReason
) -> None:
    """Each kind of bad input gets its own dead-letter reason."""
    assert refused("generic", raw, topic, device_id) == reason


def test_device_id_and_kind_arguments() -> None:
    """The caller's device id wins; the registered kind applies when the line names none; payload kind wins."""
    r = normalize("generic", b'{"open": true}', topic=None, device_id="d9", kind=DeviceKind.DOOR, received_at=RECEIVED)
    assert (r[0].device_id, r[0].kind) == ("d9", EventKind.DOOR)
    raw = b'{"kind": "heartbeat", "battery": 50}'
    r = normalize("generic", raw, topic=None, device_id="d9", kind=DeviceKind.DOOR, received_at=RECEIVED)
    assert r[0].kind == EventKind.HEARTBEAT
    with pytest.raises(NormalizeError) as info:
        normalize("generic", b'{"open": true}', topic=None, device_id="d9", kind=None, received_at=RECEIVED)
    assert info.value.reason == DeadLetterReason.INVALID_PAYLOAD and info.value.device_id == "d9"


bad_lon = st.one_of(
    st.floats(min_value=180, exclude_min=True, allow_infinity=False),
    st.floats(max_value=-180, exclude_max=True, allow_infinity=False),
)
bad_lat = st.one_of(
    st.floats(min_value=90, exclude_min=True, allow_infinity=False),
    st.floats(max_value=-90, exclude_max=True, allow_infinity=False),
)


@given(device_messages(), st.one_of(st.tuples(bad_lon, LAT), st.tuples(LON, bad_lat), st.tuples(bad_lon, bad_lat)))
def test_bad_coordinates_are_always_bad_coordinates(
    msg: tuple[str, str, str, dict[str, Any]], position: tuple[float, float]
) -> None:
    """Any out-of-range position on an otherwise valid message is BAD_COORDINATES, never anything else."""
    kind, community, device, payload = msg
    payload["lon"], payload["lat"] = position
    with pytest.raises(NormalizeError) as info:
        gen(dumps(payload), topic=f"safecity/{community}/{kind}/{device}")
    assert info.value.reason == DeadLetterReason.BAD_COORDINATES
    assert info.value.device_id == device


DEVICE_KEYS = ["id", "ts", "device", "kind", "building", "lon", "lat", "value", "state", "data", "alarm"]
DEVICE_KEYS += ["smoke_density", "temp", "open", "occupied", "count", "zone", "density", "battery", "rssi", "fw"]
DEVICE_KEYS += ["plate", "direction", "lane", "vehicle_type", "color", "speed_kmh"]
TOPICS = st.none() | st.sampled_from([f"safecity/c/{k}/d" for k in PAYLOAD_TYPES]) | st.text(max_size=30)


@given(st.binary(max_size=200) | json_objects(DEVICE_KEYS), TOPICS, st.sampled_from(["generic", "checkpoint"]))
def test_any_input_raises_only_normalize_error(raw: bytes, topic: str | None, fmt: str) -> None:
    """Whatever arrives, a device normalizer returns readings or raises NormalizeError / Discarded."""
    try:
        readings = normalize(fmt, raw, topic=topic, device_id=None, kind=None, received_at=RECEIVED)
    except (NormalizeError, Discarded):
        return
    for r in readings:
        assert r.occurred_at.tzinfo is not None
        json.dumps(r.data)  # what is kept must be storable


# --- checkpoint ---------------------------------------------------------------------------------------------------

PLATE_CHARS = st.sampled_from(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789沪京粤abcxyz"))


@given(
    st.lists(PLATE_CHARS, min_size=3, max_size=10).map("".join),
    st.sampled_from(["", " ", "-", "·"]),
    st.fixed_dictionaries(
        {"ts": EPOCH},
        optional={
            "id": NAME,
            "direction": st.sampled_from(["in", "out"]),
            "lane": st.integers(0, 8),
            "vehicle_type": NAME,
            "color": NAME,
            "speed_kmh": st.floats(0, 250),
        },
    ),
    NAME,
)
def test_checkpoint_reads(plate: str, sep: str, fields: dict[str, Any], device: str) -> None:
    """A read becomes CHECKPOINT with the plate normalized into `personal`, never in `data`."""
    written = plate[:2] + sep + plate[2:]
    r = normalize(
        "checkpoint", dumps({**fields, "plate": written}), topic=None, device_id=device, kind=None, received_at=RECEIVED
    )[0]
    assert r.kind == EventKind.CHECKPOINT and r.device_id == device
    assert r.personal == {"plate": plate.upper()}
    assert plate.upper() not in json.dumps(r.data, ensure_ascii=False)
    assert r.occurred_at == datetime.fromtimestamp(fields["ts"], UTC)
    assert r.state == fields.get("direction") and r.value == fields.get("speed_kmh")
    for k in ("direction", "lane", "vehicle_type", "color", "speed_kmh"):
        assert r.data.get(k) == fields.get(k)


@pytest.mark.parametrize("plate", ["", " ", "A", "!!!!", "AB$12", "ABCDEFGHIJKLMNOP", "- -"])
def test_absurd_plates_are_refused(plate: str) -> None:
    """Empty, one-character, punctuation-only and overlong plates are INVALID_PAYLOAD."""
    raw = dumps({"ts": 1764403200, "plate": plate})
    assert refused("checkpoint", raw, device_id="cam-1") == DeadLetterReason.INVALID_PAYLOAD


def test_checkpoint_needs_time_and_takes_its_topic() -> None:
    """`ts` is required for a read; on MQTT the device comes from the checkpoint topic."""
    assert refused("checkpoint", b'{"plate": "AB123"}', device_id="cam-1") == DeadLetterReason.INVALID_PAYLOAD
    raw = b'{"ts": "2026-11-29T08:00:00Z", "plate": "ab 123", "lon": 121.47, "lat": 31.23}'
    r = normalize(
        "checkpoint", raw, topic="safecity/c7/checkpoint/cam-7", device_id=None, kind=None, received_at=RECEIVED
    )
    assert (r[0].device_id, r[0].personal, r[0].lon, r[0].lat) == ("cam-7", {"plate": "AB123"}, 121.47, 31.23)
    bad = b'{"ts": 1, "plate": "AB123", "lat": 91, "lon": 0}'
    assert refused("checkpoint", bad, device_id="cam-1") == DeadLetterReason.BAD_COORDINATES


# --- registry -----------------------------------------------------------------------------------------------------


def test_registry() -> None:
    """Every format is registered under its KEY; an unknown format is a configuration error."""
    assert set(NORMALIZERS) == {"generic", "checkpoint", "frigate", "suricata"}
    with pytest.raises(UnknownFormat) as info:
        normalize("nope", b"{}", topic=None, device_id=None, kind=None, received_at=RECEIVED)
    assert info.value.code == "sensing.unknown_format"


def test_parse_topic() -> None:
    """Device topics split into prefix, community, kind and device."""
    parts = parse_topic("safecity/c-12/smoke/det-3")
    assert (parts.prefix, parts.community, parts.kind, parts.device) == ("safecity", "c-12", "smoke", "det-3")
