"""Time-sortable identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import random
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
# Seeded once from the OS; per-id os.urandom released and re-took the GIL on every call, which under a busy
# ingest thread cost ~0.4 ms an id. Ids need uniqueness and order, not secrecy.
_random = random.Random(os.urandom(32))
_last_ms = 0
_last_rand = 0


# Two characters (10 bits) per lookup: an id is 13 lookups instead of 26 shifts (ids are made per event).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -10, -10))


def _encode128(value: int) -> str:
    """Encode a 128-bit value as 26 Crockford base32 characters (the top 2 of 130 bits are zero)."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(now_ms: int | None = None) -> str:
    """Return a new 26-character id; ids made in one process sort in creation order."""
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            # Same (or earlier) millisecond: increment the random part so order holds (ULID monotonicity).
            ms = _last_ms
            rand = _last_rand + 1
        else:
            rand = _random.getrandbits(80)
        _last_ms, _last_rand = ms, rand & ((1 << 80) - 1)
        value = (ms << 80) | _last_rand
    return _encode128(value)


def id_time_ms(identifier: str) -> int:
    """Return the millisecond timestamp encoded in an id made by `new_id`."""
    value = 0
    for ch in identifier[:10].upper():
        value = value * 32 + _ALPHABET.index(ch)
    return value
