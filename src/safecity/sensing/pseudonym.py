"""Keyed pseudonyms for personal fields (ARCHITECTURE §7): HMAC-SHA256 under the district's secret key."""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymizer:
    """Turns a personal value (a plate) into a stable keyed hash; the same value always maps to the same hash."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("pseudonym key must have at least 16 bytes")
        self._key = key

    def __call__(self, field: str, value: str) -> str:
        """Return the hex HMAC of `field:value` (the field name keeps a plate and a phone number apart)."""
        return hmac.new(self._key, f"{field}:{value}".encode(), hashlib.sha256).hexdigest()
