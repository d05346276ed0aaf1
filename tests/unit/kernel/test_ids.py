"""Ids sort by creation time and encode their millisecond."""

from safecity.kernel import ids


def test_ids_are_unique_and_sorted() -> None:
    made = [ids.new_id() for _ in range(5000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert all(len(i) == 26 for i in made)


def test_id_time_roundtrip() -> None:
    identifier = ids.new_id(now_ms=1_700_000_000_123)
    assert ids.id_time_ms(identifier) >= 1_700_000_000_123
