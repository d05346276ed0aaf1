"""Personal fields out of refused inputs: a dead letter keeps its raw bytes only with those fields pseudonymized.

Pure module. A refused message is refused before the pipeline pseudonymizes it, so its raw bytes may still hold a
clear plate or a known vehicle's name (ARCHITECTURE §7: personal fields are stored pseudonymized, dead letters
included). JSON bytes are rewritten with every personal field's value replaced by its keyed pseudonym (the same
hex HMAC the event would have carried in `pseudonyms`); bytes that are not a JSON object or array are kept only for
device kinds whose messages hold no personal fields, and dropped (size kept) for all others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from safecity.sensing.normalize._common import normalize_plate

# Keys whose values are personal in any payload we accept (device payload `plate`; Frigate `recognized_license_plate`,
# `sub_label` (a known vehicle's or a recognized person's name) and the lpr update's `name`), mapped to the field
# name the pipeline pseudonymizes them under, so a dead letter's pseudonym matches the events' `pseudonyms`.
PERSONAL_KEYS: dict[str, str] = {
    "plate": "plate",
    "recognized_license_plate": "plate",
    "sub_label": "sub_label",
    "name": "plate_name",
    "plate_name": "plate_name",
}
# Device kinds whose messages carry no personal field: their unparseable bytes are kept as they came.
IMPERSONAL_KINDS = frozenset({"smoke", "door", "parking", "crowd", "heartbeat"})

Pseudonymize = Callable[[str, str], str]


class Scrubbed:
    """What may be kept of one refused input: `raw` (None: keep no bytes) and the clear values it replaced."""

    __slots__ = ("clear", "raw")

    def __init__(self, raw: bytes | None, clear: dict[str, str]) -> None:
        self.raw = raw
        self.clear = clear

    def scrub_text(self, text: str) -> str:
        """Replace every clear personal value found in the raw bytes by its pseudonym in `text` (a detail)."""
        for value in sorted(self.clear, key=len, reverse=True):
            text = text.replace(value, self.clear[value])
        return text


def _pseudonym(field: str, value: Any, pseudonymize: Pseudonymize, clear: dict[str, str]) -> Any:
    if isinstance(value, list):
        # Frigate >= 0.14 sends [name, score]: the name goes, the score stays.
        return [v if isinstance(v, int | float) else _pseudonym(field, v, pseudonymize, clear) for v in value]
    if value is None or isinstance(value, bool):
        return value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    canonical = (normalize_plate(text) if field == "plate" else None) or text.strip().upper()
    hashed = pseudonymize(field, canonical)
    for form in {text, text.strip(), canonical}:
        if form:
            clear[form] = hashed
    return hashed


def _walk(node: Any, pseudonymize: Pseudonymize, clear: dict[str, str], found: list[str]) -> Any:
    if isinstance(node, dict):
        found.extend(key for key in node if key in PERSONAL_KEYS)
        return {
            key: (
                _pseudonym(PERSONAL_KEYS[key], value, pseudonymize, clear)
                if key in PERSONAL_KEYS
                else _walk(value, pseudonymize, clear, found)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_walk(item, pseudonymize, clear, found) for item in node]
    return node


def scrub(raw: bytes, *, kind: str | None, pseudonymize: Pseudonymize) -> Scrubbed:
    """Return what may be stored of `raw`: personal fields pseudonymized, or no bytes when that cannot be done."""
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        parsed = None
    if not isinstance(parsed, dict | list):
        return Scrubbed(raw if kind in IMPERSONAL_KINDS else None, {})
    clear: dict[str, str] = {}
    found: list[str] = []
    try:
        cleaned = _walk(parsed, pseudonymize, clear, found)
    except RecursionError:
        return Scrubbed(None, {})
    if not found:
        return Scrubbed(raw, {})  # nothing personal: the bytes stay exactly as they came
    # Re-serialized even when every personal value was null: a duplicate key's earlier (clear) value is gone too.
    return Scrubbed(json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode(), clear)
