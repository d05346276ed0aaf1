"""Time-sortable identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


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
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = ms, rand & ((1 << 80) - 1)
    return _encode(ms, 10) + _encode(_last_rand, 16)


def id_time_ms(identifier: str) -> int:
    """Return the millisecond timestamp encoded in an id made by `new_id`."""
    value = 0
    for ch in identifier[:10].upper():
        value = value * 32 + _ALPHABET.index(ch)
    return value
