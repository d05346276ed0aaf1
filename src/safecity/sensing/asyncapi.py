"""The AsyncAPI 3.0.0 document of the device interface: the MQTT topics we read, with payload schemas.

The channels, payload schemas, summaries and examples come from the normalizer registry (the msgspec structs the
normalizers decode with and the documentation they register), so the document and the code cannot drift;
`docs/asyncapi.json` is this module's output and a test fails when it is stale.
Regenerate: `uv run python -m safecity.sensing.asyncapi > docs/asyncapi.json`.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from safecity.sensing.normalize import registry

ASYNCAPI_VERSION = "3.0.0"
DOC_VERSION = "1.0.0"
_SCHEMAS = "#/components/schemas/{name}"


class _Examples(Mapping[str, dict[str, Any]]):
    """Device-topic kind -> its registered example payload (a view of the normalizer registry)."""

    def _table(self) -> dict[str, dict[str, Any]]:
        return {kind: k.example for kind, (_, k) in registry.topic_kinds().items() if k.example is not None}

    def __getitem__(self, kind: str) -> dict[str, Any]:
        return self._table()[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


EXAMPLES: Mapping[str, dict[str, Any]] = _Examples()
"""One valid payload per device message kind (used in the document, in docs/devices.md and in tests)."""


def _title(kind: str) -> str:
    return "".join(p.capitalize() for p in kind.split("_"))


def _device_schemas(components: dict[str, Any], payloads: list[type[Any]]) -> None:
    """On MQTT the topic names the kind: `kind` becomes optional and documented (it is required in HTTP lines)."""
    for ptype in payloads:
        if getattr(ptype, "__struct_config__", None) is None or ptype.__struct_config__.tag_field != "kind":
            continue
        schema = components[ptype.__name__]
        schema["description"] = (ptype.__doc__ or "").strip()
        schema["required"] = [f for f in schema.get("required", []) if f != "kind"]
        if not schema["required"]:
            del schema["required"]
        schema["properties"]["kind"]["description"] = (
            "Message kind. Optional on MQTT (the topic names it; if given it must match); required in HTTP batch lines."
        )


def build_asyncapi() -> dict[str, Any]:
    """Return the AsyncAPI 3.0.0 document (a plain dict, JSON-ready) of every MQTT topic SafeCity reads.

    Derived from the normalizer registry: a channel for every device-topic kind, then every format's own topics.
    """
    kinds = registry.topic_kinds()
    fixed = registry.channels()
    struct_types: list[Any] = list(
        dict.fromkeys([*(k.payload for _, k in kinds.values()), *(c.payload for _, c in fixed.values())])
    )
    _, schemas = msgspec.json.schema_components(struct_types, ref_template=_SCHEMAS)
    schemas = copy.deepcopy(schemas)
    _device_schemas(schemas, struct_types)

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

    for kind, (_, topic_kind) in kinds.items():
        examples = (
            {}
            if topic_kind.example is None
            else {"examples": [{"name": f"{kind}_example", "payload": topic_kind.example}]}
        )
        add(
            f"device_{kind}",
            f"safecity/{{community}}/{kind}/{{device}}",
            topic_kind.summary,
            topic_kind.message or f"{_title(kind)}Message",
            topic_kind.payload.__name__,
            **examples,
        )
    for address, (_, channel) in fixed.items():
        channel_id = address.replace("/", "_")
        add(channel_id, address, channel.summary, f"{channel.payload.__name__}Message", channel.payload.__name__)

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
