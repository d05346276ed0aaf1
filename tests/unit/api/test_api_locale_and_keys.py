"""Accept-Language negotiation and the API key format (pure helpers)."""

from __future__ import annotations

import re

import pytest

from safecity.api.problems import negotiate_locale
from safecity.sharing.keys import hash_key, new_key


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "zh-CN"),
        ("", "zh-CN"),
        ("en", "en"),
        ("en-GB,en;q=0.9", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("fr, en;q=0.5", "en"),
        ("fr, de", "zh-CN"),
        ("zh;q=0.3, en;q=0.7", "en"),
        ("en;q=0, zh", "zh-CN"),
        ("*", "zh-CN"),
        ("en;q=abc, zh;q=0.1", "zh-CN"),
    ],
)
def test_negotiate_locale(header: str | None, expected: str) -> None:
    assert negotiate_locale(header) == expected


def test_default_locale_applies_when_nothing_matches() -> None:
    assert negotiate_locale("fr", default="en") == "en"
    assert negotiate_locale(None, default="en") == "en"


def test_key_format_and_hash() -> None:
    keys = {new_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(re.fullmatch(r"sc_[A-Za-z0-9_-]{32}", k) for k in keys)
    key = next(iter(keys))
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(key))
    assert hash_key(key) != hash_key(key + "x")
