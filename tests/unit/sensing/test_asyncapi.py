"""The AsyncAPI document: committed copy up to date, structurally valid AsyncAPI 3, schemas agree with the code."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from safecity.sensing.asyncapi import EXAMPLES, build_asyncapi, render
from safecity.sensing.model import EventKind
from safecity.sensing.normalize import normalize
from safecity.sensing.normalize.payloads import PAYLOAD_TYPES

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.json"
RECEIVED = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
PARAM = re.compile(r"\{([^}]+)\}")


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer (`#/a/b`) inside the document."""
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def all_refs(node: Any) -> list[str]:
    """Every `$ref` value anywhere in a JSON tree."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in all_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in all_refs(v)]
    return []


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """The generated document."""
    return build_asyncapi()


def test_committed_document_is_current() -> None:
    """docs/asyncapi.json is exactly what the code generates (regenerate with `python -m safecity.sensing.asyncapi`)."""
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/asyncapi.json is stale: uv run python -m safecity.sensing.asyncapi > docs/asyncapi.json"
    )


def test_structure_is_asyncapi_3(doc: dict[str, Any]) -> None:
    """Required AsyncAPI 3.0.0 fields are there and every reference resolves."""
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    for server in doc["servers"].values():
        assert server["host"] and server["protocol"] == "mqtt"
        for var in PARAM.findall(server["host"]):
            assert var in server["variables"]
    assert doc["channels"] and doc["operations"]
    for channel_id, channel in doc["channels"].items():
        assert channel["address"] and channel["messages"], channel_id
        params = set(PARAM.findall(channel["address"]))
        assert params == set(channel.get("parameters", {})), channel_id
        for message in channel["messages"].values():
            resolved = resolve(doc, message["$ref"])
            assert resolved["payload"] and resolved["contentType"] == "application/json"
    for op_id, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), op_id
        channel_ref = op["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        channel = resolve(doc, channel_ref)
        for message in op["messages"]:
            # AsyncAPI 3: an operation's messages must be a subset of its channel's messages.
            assert message["$ref"].startswith(channel_ref + "/messages/")
            assert resolve(doc, message["$ref"]) in channel["messages"].values()
    for ref in all_refs(doc):
        resolve(doc, ref)


def test_every_topic_we_read_is_documented(doc: dict[str, Any]) -> None:
    """A channel for every device message kind and every Frigate topic the normalizer reads."""
    addresses = {c["address"] for c in doc["channels"].values()}
    for kind in PAYLOAD_TYPES:
        assert f"safecity/{{community}}/{kind}/{{device}}" in addresses
    assert {"frigate/events", "frigate/reviews", "frigate/tracked_object_update", "frigate/triggers"} <= addresses


def _validator(doc: dict[str, Any], schema_ref: str) -> Any:
    """A JSON Schema validator for one component schema (its $refs resolve against the document's components)."""
    schema = {"$ref": schema_ref, "components": doc["components"]}
    return jsonschema_rs.validator_for(schema)


@pytest.mark.parametrize("kind", sorted(PAYLOAD_TYPES))
def test_examples_match_their_schema_and_normalize(doc: dict[str, Any], kind: str) -> None:
    """Each kind's example is valid against the published schema and accepted by the normalizer."""
    channel = doc["channels"][f"device_{kind}"]
    (message_ref,) = [m["$ref"] for m in channel["messages"].values()]
    message = resolve(doc, message_ref)
    (example,) = message["examples"]
    assert example["payload"] == EXAMPLES[kind]
    validator = _validator(doc, message["payload"]["$ref"])
    assert validator.is_valid(example["payload"])
    topic = f"safecity/c1/{kind}/dev-1"
    fmt = "checkpoint" if kind == "checkpoint" else "generic"
    raw = json.dumps(example["payload"], ensure_ascii=False).encode()
    (reading,) = normalize(fmt, raw, topic=topic, device_id=None, kind=None, received_at=RECEIVED)
    assert reading.kind == EventKind(kind) and reading.device_id == "dev-1"


def test_schemas_refuse_what_the_normalizer_refuses(doc: dict[str, Any]) -> None:
    """The published schema is as strict as the decoder: unknown fields and wrong types are invalid."""
    smoke = _validator(doc, "#/components/schemas/SmokePayload")
    assert smoke.is_valid({"alarm": True})
    assert not smoke.is_valid({"alarm": "yes"})
    assert not smoke.is_valid({"alarm": True, "alram": True})
    assert not smoke.is_valid({"temp": 20})
    crowd = _validator(doc, "#/components/schemas/CrowdPayload")
    assert not crowd.is_valid({"count": -1})


def test_frigate_examples_match_their_schemas(doc: dict[str, Any], shared_data: Path) -> None:
    """Frigate's documented payloads are valid against the schemas we publish for their topics."""
    cases = {
        "frigate_events": "events",
        "frigate_reviews": "reviews",
        "frigate_tracked_object_update": "tracked_object_update__license_plate_recognition_update",
        "frigate_triggers": "triggers",
    }
    for channel_id, name in cases.items():
        (message,) = doc["channels"][channel_id]["messages"].values()
        payload_ref = resolve(doc, message["$ref"])["payload"]["$ref"]
        instance = json.loads((shared_data / "frigate_mqtt" / f"{name}.example.json").read_bytes())
        assert _validator(doc, payload_ref).is_valid(instance), channel_id


DEVICES_MD = DOC_PATH.parent / "devices.md"
TOPIC_EXAMPLE = re.compile(r"on `(safecity/[^`]+)`[^`]*?```json\n(.*?)\n```", re.DOTALL)


def test_devices_md_examples_are_the_published_ones_and_are_accepted() -> None:
    """Every example in docs/devices.md is one of the AsyncAPI examples and normalizes on its topic."""
    text = DEVICES_MD.read_text(encoding="utf-8")
    found = TOPIC_EXAMPLE.findall(text)
    assert len(found) == len(EXAMPLES)
    shown = []
    for topic, body in found:
        payload = json.loads(body)
        shown.append(payload)
        kind = topic.split("/")[2]
        assert payload == EXAMPLES[kind], topic
        fmt = "checkpoint" if kind == "checkpoint" else "generic"
        (reading,) = normalize(fmt, body.encode(), topic=topic, device_id=None, kind=None, received_at=RECEIVED)
        assert reading.device_id == topic.rsplit("/", 1)[1]
    assert sorted(map(json.dumps, shown)) == sorted(map(json.dumps, EXAMPLES.values()))
    for kind in PAYLOAD_TYPES:
        assert f"| `{kind}` |" in text, f"kind {kind} is not documented in docs/devices.md"
