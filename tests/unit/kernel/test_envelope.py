"""Envelopes survive encode/decode unchanged, with their payload's registered type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from safecity.kernel import envelope as env_mod
from safecity.kernel.envelope import Context, Envelope, EventKey, Payload, decode, encode, make_envelope


class Probe(Payload):
    """A payload with every field shape the bus carries."""

    name: str
    count: int
    ratio: float
    flag: bool
    at: datetime
    tags: list[str]
    data: dict[str, Any]
    note: str | None = None


PROBE: EventKey[Probe] = EventKey("test.envelope.probe", Probe)

offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(min_value=-14 * 60, max_value=14 * 60)
)
aware = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive by contract
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=offsets,
)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalar = st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53) | finite | st.text()
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
probes = st.builds(
    Probe,
    name=st.text(),
    count=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ratio=finite,
    flag=st.booleans(),
    at=aware,
    tags=st.lists(st.text(), max_size=5),
    data=st.dictionaries(st.text(max_size=10), json_value, max_size=5),
    note=st.none() | st.text(),
)
contexts = st.builds(
    Context, correlation_id=st.text(min_size=1), actor=st.none() | st.text(), parent_id=st.none() | st.text()
)


@given(
    payload=probes,
    occurred=aware,
    received=aware,
    context=contexts,
    source=st.text(),
    tier=st.sampled_from(["community", "town", "district"]),
    hops=st.dictionaries(st.text(min_size=1, max_size=12), aware, max_size=4),
)
def test_encode_decode_round_trip(
    payload: Probe,
    occurred: datetime,
    received: datetime,
    context: Context,
    source: str,
    tier: str,
    hops: dict[str, datetime],
) -> None:
    original = make_envelope(
        PROBE, payload, source=source, tier=tier, occurred_at=occurred, received_at=received, context=context
    )
    original.hops.update(hops)
    back = decode(encode(original))
    assert back == original
    assert type(back.payload) is Probe
    assert back.occurred_at.utcoffset() is not None


def test_decoded_times_keep_their_instant() -> None:
    shanghai = timezone(timedelta(hours=8))
    at = datetime(2025, 3, 1, 8, 0, tzinfo=shanghai)
    env = make_envelope(PROBE, _probe(at=at), source="t", occurred_at=at)
    back = decode(encode(env))
    assert back.occurred_at == datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
    assert back.payload.at == at


def _probe(**kw: Any) -> Probe:
    fields: dict[str, Any] = {
        "name": "n",
        "count": 1,
        "ratio": 0.5,
        "flag": True,
        "at": datetime(2025, 1, 1, tzinfo=UTC),
        "tags": [],
        "data": {},
    }
    return Probe(**{**fields, **kw})


def test_make_envelope_defaults() -> None:
    env = make_envelope(PROBE, _probe(), source="unit")
    assert env.key == "test.envelope.probe"
    assert env.context.correlation_id == env.id
    assert env.occurred_at.tzinfo is not None
    assert env.tier == "district"
    assert make_envelope("test.envelope.probe", _probe(), source="u", envelope_id="X").id == "X"


def test_unknown_key_is_refused() -> None:
    env = make_envelope("nobody.registered.this", _probe(), source="unit")
    with pytest.raises(KeyError, match="no payload type"):
        decode(encode(env))


def test_unknown_payload_field_is_refused() -> None:
    data = msgspec.json.decode(encode(make_envelope(PROBE, _probe(), source="unit")))
    data["payload"]["surprise"] = 1
    with pytest.raises(msgspec.ValidationError):
        decode(msgspec.json.encode(data))


def test_prefix_registration_and_exact_keys_win() -> None:
    class Other(Payload):
        """Another payload."""

        x: int

    env_mod.register_prefix("testprefix", Other)
    assert env_mod.payload_type_for("testprefix.anything.deep") is Other
    EventKey("testprefix.special", Probe)
    assert env_mod.payload_type_for("testprefix.special") is Probe
    assert "testprefix.special" in env_mod.registered_keys()


@pytest.mark.parametrize("bad", ["", "event.*", "event.>", "has space"])
def test_event_key_rejects_wildcards_and_blanks(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid event key"):
        EventKey(bad, Probe)


def test_payloads_are_frozen() -> None:
    probe = _probe()
    with pytest.raises(AttributeError):
        probe.name = "changed"  # type: ignore[misc]


def test_hops_and_latency() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    env: Envelope = make_envelope(PROBE, _probe(), source="u", occurred_at=t0, received_at=t0)
    env.stamp("alerted", t0 + timedelta(milliseconds=12.5))
    assert env.latency_ms("occurred", "alerted") == pytest.approx(12.5)
    assert env.latency_ms("occurred", "missing") is None
    env.stamp("now")
    assert env.hops["now"].tzinfo is not None
