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


# Two characters (10 bits) per lookup. An id is its 48-bit millisecond (10 characters, 2 leading zero bits) and
# its 80 random bits as two 40-bit halves (8 characters each). The millisecond's and the high half's texts are kept
# from the previous id: ids made in one millisecond (thousands a second under load) differ in the low half only,
# and encoding 40 bits in machine-sized ints is a fraction of one pass over a 128-bit int.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_M40 = (1 << 40) - 1
_texts: list[tuple[int, str]] = [(-1, ""), (-1, "")]  # (millisecond, its text), (high half, its text)


def _encode40(value: int) -> str:
    pairs = _PAIRS
    return pairs[value >> 30] + pairs[(value >> 20) & 1023] + pairs[(value >> 10) & 1023] + pairs[value & 1023]


def _encode(ms: int, rand: int) -> str:
    """The 26 Crockford base32 characters of the 128-bit value `ms << 80 | rand`."""
    texts = _texts
    if texts[0][0] != ms:
        texts[0] = (ms, _PAIRS[(ms >> 40) & 1023] + _encode40(ms & _M40))
    hi = rand >> 40
    if texts[1][0] != hi:
        texts[1] = (hi, _encode40(hi))
    return texts[0][1] + texts[1][1] + _encode40(rand & _M40)


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
        return _encode(ms, _last_rand)


def floor_id(ms: int) -> str:
    """Return the smallest id `new_id` can make at millisecond `ms` (ids >= it were made at or after `ms`)."""
    return "".join(_ALPHABET[(ms >> (5 * (9 - i))) & 31] for i in range(10)) + "0" * 16


def id_time_ms(identifier: str) -> int:
    """Return the millisecond timestamp encoded in an id made by `new_id`."""
    value = 0
    for ch in identifier[:10].upper():
        value = value * 32 + _ALPHABET.index(ch)
    return value
