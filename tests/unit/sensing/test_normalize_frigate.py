"""The Frigate normalizer, on Frigate's documented payloads (shared/data/frigate_mqtt) and generated ones."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _normalize_strategies import NAME, dumps, json_objects
from hypothesis import given
from hypothesis import strategies as st

from safecity.sensing.model import DeadLetterReason, Discarded, EventKind, NormalizeError, Reading
from safecity.sensing.normalize import normalize

RECEIVED = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def frigate(raw: bytes, topic: str, device_id: str | None = None) -> Reading:
    """Normalize one Frigate message and expect one reading."""
    readings = normalize("frigate", raw, topic=topic, device_id=device_id, kind=None, received_at=RECEIVED)
    assert len(readings) == 1
    return readings[0]


def example(shared_data: Path, name: str) -> dict[str, Any]:
    """Load one of Frigate's documented examples."""
    loaded: dict[str, Any] = json.loads((shared_data / "frigate_mqtt" / f"{name}.example.json").read_bytes())
    return loaded


def test_event_update_example(shared_data: Path) -> None:
    """The documented `update` event maps camera, id, score, zones, box and speed; the face name is gone."""
    msg = example(shared_data, "events")
    r = frigate(dumps(msg), "frigate/events")
    after = msg["after"]
    assert r.kind == EventKind.VIDEO
    assert r.device_id == "frigate:front_door"
    assert r.message_id == f"{after['id']}:update:{after['frame_time']!r}"
    assert r.state == "update" and r.value == after["score"]
    assert r.occurred_at == datetime.fromtimestamp(after["frame_time"], UTC)
    assert r.data["label"] == "person" and r.data["event_id"] == after["id"]
    assert r.data["zones"] == ["yard", "driveway"] and r.data["zones_before"] == ["driveway"]
    assert r.data["entered_zones"] == ["yard", "driveway"]
    assert r.data["box"] == after["box"] and r.data["stationary"] is False and r.data["has_snapshot"] is False
    assert r.data["current_estimated_speed"] == 0.77 and r.data["attributes"] == {"face": 0.86}
    assert r.data["snapshot"]["frame_time"] == after["snapshot"]["frame_time"]
    # sub_label of a person is a face-recognition name: neither data nor personal keep it.
    assert "sub_label" not in r.data and "sub_label" not in r.personal
    assert "John Smith" not in json.dumps([r.data, r.personal])
    # The plate is personal: in `personal`, never in `data`.
    assert r.personal == {"plate": "ABC12345"}
    assert "ABC12345" not in json.dumps(r.data)


def test_event_new_and_end_and_replays(shared_data: Path) -> None:
    """new/update/end get distinct message ids; the same message twice gets the same one (dedupes)."""
    msg = example(shared_data, "events")
    ids = set()
    for kind in ("new", "update", "end"):
        m = copy.deepcopy(msg)
        m["type"] = kind
        if kind == "end":
            m["after"]["end_time"] = 1607123990.5
        first, again = frigate(dumps(m), "frigate/events"), frigate(dumps(m), "frigate/events")
        assert first.message_id == again.message_id and first.state == kind
        ids.add(first.message_id)
        if kind == "end":
            assert first.occurred_at == datetime.fromtimestamp(1607123990.5, UTC)
            assert first.message_id == f"{m['after']['id']}:end"
        if kind == "new":
            assert first.message_id == f"{m['after']['id']}:new"
    assert len(ids) == 3
    # A later update (another frame) is a new message, not a duplicate of the first update.
    later = copy.deepcopy(msg)
    later["after"]["frame_time"] += 1.0
    assert frigate(dumps(later), "frigate/events").message_id not in ids


def test_event_sub_labels_by_label(shared_data: Path) -> None:
    """Non-person sub-labels are kept; a vehicle's (a known owner's car name) is personal; a person's is dropped."""
    msg = example(shared_data, "events")
    msg["after"]["recognized_license_plate"] = None
    msg["after"]["label"] = "bird"
    msg["after"]["sub_label"] = ["blue jay", 0.9]
    r = frigate(dumps(msg), "frigate/events")
    assert (r.data["sub_label"], r.data["sub_label_score"], r.personal) == ("blue jay", 0.9, {})
    msg["after"]["label"] = "car"
    msg["after"]["sub_label"] = "John's Car"  # pre-0.14 string shape
    r = frigate(dumps(msg), "frigate/events")
    assert r.personal == {"sub_label": "John's Car"} and "sub_label" not in r.data


def test_review_example(shared_data: Path) -> None:
    """A review update becomes VIDEO_REVIEW with severity, objects and zones; recognized names are dropped."""
    msg = example(shared_data, "reviews")
    r = frigate(dumps(msg), "frigate/reviews")
    assert r.kind == EventKind.VIDEO_REVIEW and r.device_id == "frigate:front_cam" and r.state == "update"
    assert r.message_id is not None and r.message_id.startswith("1718987129.308396-fqk5ka:update:")
    assert r.data["severity"] == "alert" and r.data["severity_before"] == "detection"
    assert r.data["objects"] == ["person", "car"] and r.data["zones"] == ["front_yard"]
    assert r.data["thumb_path"].endswith(".webp") and len(r.data["detections"]) == 3
    assert "Bob" not in json.dumps([r.data, r.personal])
    assert r.occurred_at == RECEIVED
    msg["type"] = "new"
    new = frigate(dumps(msg), "frigate/reviews")
    assert new.message_id == "1718987129.308396-fqk5ka:new"
    assert new.occurred_at == datetime.fromtimestamp(msg["after"]["start_time"], UTC)


def test_face_update_is_discarded(shared_data: Path) -> None:
    """Face recognition is biometric: discarded, never a reading and never a dead letter."""
    raw = dumps(example(shared_data, "tracked_object_update__face_recognition_update"))
    with pytest.raises(Discarded) as info:
        normalize(
            "frigate", raw, topic="frigate/tracked_object_update", device_id=None, kind=None, received_at=RECEIVED
        )
    assert info.value.reason == "biometric"
    # Even a face update that is otherwise malformed is discarded, not dead-lettered with the name in it.
    with pytest.raises(Discarded):
        frigate(b'{"type": "face", "name": "John", "id": 5}', "frigate/tracked_object_update")


def test_lpr_update_puts_plate_in_personal(shared_data: Path) -> None:
    """An LPR update: plate and plate name are personal; data keeps the box and the object id only."""
    msg = example(shared_data, "tracked_object_update__license_plate_recognition_update")
    r = frigate(dumps(msg), "frigate/tracked_object_update")
    assert r.kind == EventKind.VIDEO and r.device_id == "frigate:driveway_cam" and r.state == "lpr"
    assert r.personal == {"plate": "123ABC", "plate_name": "John's Car"}
    assert "123ABC" not in json.dumps(r.data) and "John" not in json.dumps(r.data)
    assert r.data["plate_box"] == msg["plate_box"] and r.data["event_id"] == msg["id"] and r.value == 0.95
    assert r.occurred_at == datetime.fromtimestamp(msg["timestamp"], UTC)


def test_description_and_classification_updates(shared_data: Path) -> None:
    """Description and classification updates become VIDEO readings with the text in data."""
    desc = example(shared_data, "tracked_object_update__generative_ai_description_update")
    r = frigate(dumps(desc), "frigate/tracked_object_update", device_id="frigate:front_door")
    assert r.data["description"] == desc["description"] and r.state == "description"
    assert r.device_id == "frigate:front_door"  # no camera in the message: the caller's device id
    for name, field in (("sub_label_type", "sub_label"), ("attribute_type", "attribute")):
        msg = example(shared_data, f"tracked_object_update__object_classification_update__{name}")
        r = frigate(dumps(msg), "frigate/tracked_object_update")
        assert r.data[field] == msg[field] and r.data["model"] == msg["model"] and r.value == msg["score"]
        assert r.device_id == "frigate:front_door_cam"


def test_trigger_example(shared_data: Path) -> None:
    """A semantic-search trigger becomes a VIDEO reading."""
    msg = example(shared_data, "triggers")
    r = frigate(dumps(msg), "frigate/triggers")
    assert r.device_id == "frigate:driveway" and r.state == "trigger" and r.value == 0.85
    assert r.message_id == "1751565549.853251-b69j73:trigger:car_trigger"
    assert r.data["trigger"] == "car_trigger" and r.data["trigger_type"] == "thumbnail"


def test_unknown_topic_and_update_type() -> None:
    """Frigate topics we do not read are UNKNOWN_TOPIC; future update types are discarded."""
    with pytest.raises(NormalizeError) as info:
        frigate(b"{}", "frigate/stats")
    assert info.value.reason == DeadLetterReason.UNKNOWN_TOPIC
    with pytest.raises(Discarded) as d:
        frigate(b'{"type": "gait", "id": "x"}', "frigate/tracked_object_update")
    assert d.value.reason == "unsupported_update"


LABELS = st.sampled_from(["person", "car", "dog", "bird", "license_plate", "face"])


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A generated frigate/events message."""
    start = draw(st.floats(1e9, 2e9))
    obj = {
        "id": f"{start}-{draw(NAME)}",
        "camera": draw(NAME),
        "label": draw(LABELS),
        "sub_label": draw(st.none() | st.tuples(NAME, st.floats(0, 1)).map(list) | NAME),
        "score": draw(st.floats(0, 1)),
        "start_time": start,
        "frame_time": start + draw(st.floats(0, 100)),
        "end_time": None,
        "current_zones": draw(st.lists(NAME, max_size=3)),
        "box": draw(st.lists(st.integers(0, 4000), min_size=4, max_size=4)),
        "stationary": draw(st.booleans()),
        "has_snapshot": draw(st.booleans()),
        "recognized_license_plate": draw(st.none() | st.from_regex(r"\A[A-Z0-9]{5,8}\Z")),
    }
    return {"type": draw(st.sampled_from(["new", "update", "end"])), "before": obj, "after": obj}


def _strings(value: Any) -> set[str]:
    """Every string leaf of a JSON-like value."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


@given(events())
def test_generated_events_map_fields(msg: dict[str, Any]) -> None:
    """Generated events keep camera, id, type, score and zones; no face name and no plate ever reach data."""
    r = frigate(dumps(msg), "frigate/events")
    after = msg["after"]
    assert r.device_id == f"frigate:{after['camera']}"
    assert r.message_id is not None and r.message_id.startswith(f"{after['id']}:{msg['type']}")
    assert (r.value, r.state, r.data["zones"], r.data["box"]) == (
        after["score"],
        msg["type"],
        after["current_zones"],
        after["box"],
    )
    assert r.data.get("snapshot_path") == (f"/api/events/{after['id']}/snapshot.jpg" if after["has_snapshot"] else None)
    if after["label"] in ("person", "face"):
        assert "sub_label" not in r.data and "sub_label" not in r.personal
    if after["recognized_license_plate"]:
        assert r.personal["plate"] == after["recognized_license_plate"]
        # No field of data holds the plate (a substring check would trip on ids such as "1000000000.0-0").
        assert after["recognized_license_plate"] not in _strings(r.data)
    else:
        assert "plate" not in r.personal


FRIGATE_KEYS = ["type", "before", "after", "id", "camera", "label", "sub_label", "score", "start_time", "end_time"]
FRIGATE_KEYS += ["frame_time", "severity", "data", "timestamp", "plate", "name", "description", "event_id"]
FRIGATE_TOPICS = st.sampled_from(
    ["frigate/events", "frigate/reviews", "frigate/tracked_object_update", "frigate/triggers"]
)


@given(st.binary(max_size=200) | json_objects(FRIGATE_KEYS), FRIGATE_TOPICS | st.none() | st.text(max_size=20))
def test_any_input_raises_only_normalize_error(raw: bytes, topic: str | None) -> None:
    """Whatever arrives on a Frigate topic, the normalizer returns readings or raises NormalizeError / Discarded."""
    try:
        readings = normalize("frigate", raw, topic=topic, device_id=None, kind=None, received_at=RECEIVED)
    except (NormalizeError, Discarded):
        return
    for r in readings:
        json.dumps(r.data)
