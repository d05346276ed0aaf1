"""Ids sort by creation time and encode their millisecond."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safecity.kernel import ids


def test_ids_are_unique_and_sorted() -> None:
    made = [ids.new_id() for _ in range(5000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert all(len(i) == 26 for i in made)


def test_id_time_roundtrip(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id made at a millisecond reads back as exactly that millisecond."""
    # A fresh generator: one that made later ids already would clamp this one to its last millisecond.
    monkeypatch.setattr(ids, "_last_ms", 0)
    monkeypatch.setattr(ids, "_last_rand", 0)
    identifier = ids.new_id(now_ms=1_700_000_000_123)
    assert ids.id_time_ms(identifier) == 1_700_000_000_123
    for ms in (0, 1, 1_700_000_000_123, (1 << 48) - 1):
        assert ids.id_time_ms(ids.floor_id(ms)) == ms
        assert ids.id_time_ms(ids._encode(ms, (1 << 80) - 1)) == ms


def test_a_clock_going_back_keeps_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id made with an earlier clock takes the last millisecond and still sorts after the ids before it."""
    monkeypatch.setattr(ids, "_last_ms", 0)
    monkeypatch.setattr(ids, "_last_rand", 0)
    first = ids.new_id(now_ms=1_700_000_000_123)
    back = ids.new_id(now_ms=1_700_000_000_100)
    assert ids.id_time_ms(back) == 1_700_000_000_123
    assert back > first


def _reference(value: int) -> str:
    """Crockford base32 of a 128-bit value, five bits at a time, most significant first (130 bits, 26 characters)."""
    return "".join(ids._ALPHABET[(value >> shift) & 31] for shift in range(125, -5, -5))


@given(
    ms=st.integers(0, (1 << 48) - 1),
    rand=st.integers(0, (1 << 80) - 1),
    previous=st.tuples(st.integers(0, (1 << 48) - 1), st.integers(0, (1 << 80) - 1)),
)
def test_encoding_is_crockford_base32_of_the_128_bit_value(ms: int, rand: int, previous: tuple[int, int]) -> None:
    """Whatever id came before (its texts are cached), an id spells out `ms << 80 | rand`."""
    ids._encode(*previous)
    assert ids._encode(ms, rand) == _reference(ms << 80 | rand)
    assert ids._encode(ms, rand ^ 1) == _reference(ms << 80 | rand ^ 1)  # the same millisecond, the next id
