"""Keyed pseudonyms for personal fields (ARCHITECTURE §7): HMAC-SHA256 under the district's secret key."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safecity.kernel.settings import Settings


class Pseudonymizer:
    """Turns a personal value (a plate) into a stable keyed hash; the same value always maps to the same hash."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("pseudonym key must have at least 16 bytes")
        self._key = key

    @classmethod
    def of(cls, settings: Settings) -> Pseudonymizer:
        """The node's pseudonymizer, keyed with `security.pseudonym_key` (watch lists and stored fields alike)."""
        return cls(settings.security.pseudonym_key.get_secret_value().encode())

    def __call__(self, field: str, value: str) -> str:
        """Return the hex HMAC of `field:value` (the field name keeps a plate and a phone number apart)."""
        return hmac.new(self._key, f"{field}:{value}".encode(), hashlib.sha256).hexdigest()
