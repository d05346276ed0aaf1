"""Hypothesis strategies shared by the normalizer tests."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

NAME = st.from_regex(r"\A[a-z0-9][a-z0-9_\-]{0,20}\Z")
FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
LON = st.floats(min_value=-180, max_value=180, allow_nan=False)
LAT = st.floats(min_value=-90, max_value=90, allow_nan=False)
EPOCH = st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False)

JSON_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def json_objects(keys: list[str]) -> st.SearchStrategy[bytes]:
    """JSON objects that mostly use the format's own keys with values of any type: exercises every check."""
    key = st.sampled_from(keys) | st.text(max_size=12)
    return st.dictionaries(key, JSON_VALUE, max_size=len(keys) + 2).map(lambda d: json.dumps(d).encode())


def dumps(obj: dict[str, Any]) -> bytes:
    """Encode a payload like a device would."""
    return json.dumps(obj).encode()
