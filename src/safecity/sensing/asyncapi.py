"""The AsyncAPI 3.0.0 document of the device interface: the MQTT topics we read, with payload schemas.

The payload schemas are generated from the same msgspec structs the normalizers decode with, so the document and
the code cannot drift; `docs/asyncapi.json` is this module's output and a test fails when it is stale.
Regenerate: `uv run python -m safecity.sensing.asyncapi > docs/asyncapi.json`.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import msgspec

from safecity.sensing.normalize import frigate, suricata
from safecity.sensing.normalize.payloads import PAYLOAD_TYPES

ASYNCAPI_VERSION = "3.0.0"
DOC_VERSION = "1.0.0"
_SCHEMAS = "#/components/schemas/{name}"

KIND_SUMMARIES: dict[str, str] = {
    "smoke": "Smoke detector state: `alarm` is required.",
    "door": "Door or access sensor: `open` is required.",
    "parking": "Parking-bay (geomagnetic) sensor: `occupied` is required.",
    "crowd": "People counter: `count` (integer >= 0) is required.",
    "heartbeat": "A device saying it is alive; any device kind sends these on its own `heartbeat` topic.",
    "generic": "Any other sensor: `value`, `state` and a free `data` object.",
    "video": "A camera's own analytics result (not Frigate): `value`, `state`, `data`.",
    "checkpoint": "A vehicle read at a checkpoint camera: `ts` and `plate` are required; the plate is personal data.",
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "smoke": {"id": "b7-d2-000123", "ts": 1764403200.125, "alarm": True, "temp": 72.5, "building": "b7"},
    "door": {"ts": "2026-11-29T16:00:00+08:00", "open": True},
    "parking": {"occupied": False, "lon": 121.4737, "lat": 31.2304},
    "crowd": {"ts": 1764403200, "count": 412, "zone": "metro-exit-3", "density": 1.8},
    "heartbeat": {"battery": 87, "rssi": -71, "fw": "1.4.2"},
    "generic": {"value": 3.2, "state": "ok", "data": {"unit": "m", "sensor": "water_level"}},
    "video": {"value": 0.91, "state": "fall_detected", "data": {"zone": "stairs"}},
    "checkpoint": {
        "id": "cp7-88121",
        "ts": "2026-11-29T08:00:00Z",
        "plate": "沪A·12345",
        "direction": "in",
        "lane": 2,
        "vehicle_type": "car",
        "color": "white",
        "speed_kmh": 38.5,
    },
}
"""One valid payload per device message kind (used in the document, in docs/devices.md and in tests)."""

FRIGATE_CHANNELS: dict[str, tuple[type[msgspec.Struct], str]] = {
    "frigate/events": (
        frigate.FrigateEvent,
        "Tracked objects (`new`/`update`/`end`). A person's sub_label (a face-recognition name) is dropped; "
        "recognized plates are stored pseudonymized.",
    ),
    "frigate/reviews": (frigate.FrigateReview, "Review items (`new`/`update`/`end`); sub-labels are not kept."),
    "frigate/tracked_object_update": (
        frigate.FrigateTrackedObjectUpdate,
        "`description`, `lpr` and `classification` updates are read; `face` updates are discarded unread "
        "(biometric identification is out of scope).",
    ),
    "frigate/triggers": (frigate.FrigateTrigger, "Semantic-search triggers that fired."),
}


def _title(kind: str) -> str:
    return "".join(p.capitalize() for p in kind.split("_"))


def _device_schemas(components: dict[str, Any]) -> None:
    """On MQTT the topic names the kind: `kind` becomes optional and documented (it is required in HTTP lines)."""
    for ptype in PAYLOAD_TYPES.values():
        schema = components[ptype.__name__]
        schema["description"] = (ptype.__doc__ or "").strip()
        schema["required"] = [f for f in schema.get("required", []) if f != "kind"]
        if not schema["required"]:
            del schema["required"]
        schema["properties"]["kind"]["description"] = (
            "Message kind. Optional on MQTT (the topic names it; if given it must match); required in HTTP batch lines."
        )


def build_asyncapi() -> dict[str, Any]:
    """Return the AsyncAPI 3.0.0 document (a plain dict, JSON-ready) of every MQTT topic SafeCity reads."""
    struct_types: list[Any] = [*PAYLOAD_TYPES.values(), *(t for t, _ in FRIGATE_CHANNELS.values()), suricata.EveRecord]
    _, schemas = msgspec.json.schema_components(struct_types, ref_template=_SCHEMAS)
    schemas = copy.deepcopy(schemas)
    _device_schemas(schemas)

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    def add(channel_id: str, address: str, description: str, message_name: str, schema_name: str, **extra: Any) -> None:
        messages[message_name] = {
            "name": message_name,
            "title": message_name,
            "summary": description,
            "contentType": "application/json",
            "payload": {"$ref": _SCHEMAS.format(name=schema_name)},
            **extra,
        }
        channel: dict[str, Any] = {
            "address": address,
            "description": description,
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
        }
        if "{" in address:
            channel["parameters"] = {
                "community": {"$ref": "#/components/parameters/community"},
                "device": {"$ref": "#/components/parameters/device"},
            }
        channels[channel_id] = channel
        operations[f"receive{_title(channel_id)}"] = {
            "action": "receive",
            "title": f"SafeCity reads {address}",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_name}"}],
        }

    for kind, ptype in PAYLOAD_TYPES.items():
        add(
            f"device_{kind}",
            f"safecity/{{community}}/{kind}/{{device}}",
            KIND_SUMMARIES[kind],
            f"{_title(kind)}Message",
            ptype.__name__,
            examples=[{"name": f"{kind}_example", "payload": EXAMPLES[kind]}],
        )
    add(
        "device_netsec",
        "safecity/{community}/netsec/{device}",
        "Suricata EVE JSON records of the city network's IDS; only `event_type: alert` is kept.",
        "EveRecordMessage",
        suricata.EveRecord.__name__,
    )
    for address, (stype, description) in FRIGATE_CHANNELS.items():
        channel_id = address.replace("/", "_")
        add(channel_id, address, description, f"{stype.__name__}Message", stype.__name__)

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:safecity:device-interface",
        "info": {
            "title": "SafeCity device interface",
            "version": DOC_VERSION,
            "description": (
                "MQTT topics SafeCity reads from devices, video analytics (Frigate) and the network IDS. "
                "Payloads are UTF-8 JSON objects; coordinates are WGS84 (lon, lat); times are unix seconds or "
                "RFC 3339 with an offset. See docs/devices.md."
            ),
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "{host}:{port}",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "The district's MQTT broker (Mosquitto or NATS's MQTT listener); 3.1.1 also works.",
                "variables": {"host": {"default": "localhost"}, "port": {"default": "1883", "enum": ["1883", "8883"]}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "parameters": {
                "community": {"description": "Community (or building) code the device is installed in."},
                "device": {"description": "The device id as registered with SafeCity; no `/`, `+`, `#` or spaces."},
            },
        },
    }


def render() -> str:
    """The document as committed in docs/asyncapi.json (stable order, UTF-8, trailing newline)."""
    return json.dumps(build_asyncapi(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
