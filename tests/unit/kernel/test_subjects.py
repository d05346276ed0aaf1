"""NATS-style subject matching: '*' is one token, '>' is one or more trailing tokens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safecity.kernel.bus import subject_matches

tokens = st.text(alphabet="abcxyz_-0123", min_size=1, max_size=6)
subjects = st.lists(tokens, min_size=1, max_size=6)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("event.smoke", "event.smoke", True),
        ("event.smoke", "event.door", False),
        ("event.*", "event.smoke", True),
        ("event.*", "event.smoke.extra", False),
        ("event.*", "event", False),
        ("event.>", "event.smoke", True),
        ("event.>", "event.smoke.extra.deep", True),
        ("event.>", "event", False),
        (">", "event", True),
        (">", "event.smoke", True),
        ("*", "event", True),
        ("*", "event.smoke", False),
        ("*.smoke", "event.smoke", True),
        ("*.smoke", "event.door", False),
        ("*.*", "event.smoke", True),
        ("event.*.x", "event.smoke.x", True),
        ("event.*.x", "event.smoke.y", False),
        ("event.*.>", "event.smoke", False),
        ("event.*.>", "event.smoke.x", True),
        ("event.smoke.extra", "event.smoke", False),
        ("event", "event.smoke", False),
        ("alert.*", "event.smoke", False),
    ],
)
def test_subject_table(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


@given(subjects)
def test_a_subject_matches_itself(parts: list[str]) -> None:
    assert subject_matches(".".join(parts), ".".join(parts))


@given(subjects, st.data())
def test_star_matches_any_single_token(parts: list[str], data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(parts) - 1))
    pattern = [*parts[:i], "*", *parts[i + 1 :]]
    assert subject_matches(".".join(pattern), ".".join(parts))


@given(subjects, st.data())
def test_tail_matches_one_or_more_trailing_tokens(parts: list[str], data: st.DataObject) -> None:
    keep = data.draw(st.integers(min_value=0, max_value=len(parts)))
    pattern = ".".join([*parts[:keep], ">"])
    # '>' needs at least one token after the kept prefix.
    assert subject_matches(pattern, ".".join(parts)) is (keep < len(parts))


@given(subjects, subjects)
def test_literal_patterns_match_only_equal_subjects(a: list[str], b: list[str]) -> None:
    assert subject_matches(".".join(a), ".".join(b)) is (a == b)


@given(subjects, tokens)
def test_longer_pattern_never_matches(parts: list[str], extra: str) -> None:
    assert not subject_matches(".".join([*parts, extra]), ".".join(parts))
    assert not subject_matches(".".join([*parts, "*"]), ".".join(parts))
