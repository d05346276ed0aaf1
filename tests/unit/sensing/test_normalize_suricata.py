"""The Suricata EVE normalizer: alerts become NETSEC readings, other records are discarded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from _normalize_strategies import NAME, dumps, json_objects
from hypothesis import given
from hypothesis import strategies as st

from safecity.sensing.model import DeadLetterReason, Discarded, EventKind, NormalizeError, Reading
from safecity.sensing.normalize import normalize

RECEIVED = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)

# The alert example of Suricata's EVE JSON format documentation.
DOC_ALERT: dict[str, Any] = {
    "timestamp": "2017-04-07T22:24:37.251547+0100",
    "flow_id": 586497171462735,
    "pcap_cnt": 53381,
    "event_type": "alert",
    "src_ip": "192.168.2.14",
    "src_port": 50096,
    "dest_ip": "209.53.113.5",
    "dest_port": 80,
    "proto": "TCP",
    "metadata": {"flowbits": ["http.dottedquadhost"]},
    "tx_id": 4,
    "alert": {
        "action": "allowed",
        "gid": 1,
        "signature_id": 2018358,
        "rev": 10,
        "signature": "ET HUNTING GENERIC SUSPICIOUS POST to Dotted Quad with Fake Browser 1",
        "category": "Potentially Bad Traffic",
        "severity": 2,
    },
    "app_proto": "http",
}


def eve(raw: bytes, device_id: str | None = None) -> Reading:
    """Normalize one EVE record and expect one reading."""
    readings = normalize("suricata", raw, topic=None, device_id=device_id, kind=None, received_at=RECEIVED)
    assert len(readings) == 1
    return readings[0]


def test_documented_alert() -> None:
    """The documented alert maps signature, severity, addresses and time (offset +0100 to UTC)."""
    r = eve(dumps(DOC_ALERT))
    assert r.kind == EventKind.NETSEC and r.device_id == "ids:suricata"
    assert r.value == 2.0 and r.state == "allowed"
    assert r.occurred_at == datetime(2017, 4, 7, 21, 24, 37, 251547, tzinfo=UTC)
    assert r.data["signature_id"] == 2018358 and r.data["category"] == "Potentially Bad Traffic"
    assert (r.data["src_ip"], r.data["dest_ip"], r.data["dest_port"], r.data["proto"]) == (
        "192.168.2.14",
        "209.53.113.5",
        80,
        "TCP",
    )
    assert r.message_id == "586497171462735:1:2018358:2017-04-07T21:24:37.251547+00:00"
    assert r.personal == {}


def test_sensor_name() -> None:
    """The device is `ids:<host>` (EVE sensor-name), else the caller's id, else `ids:suricata`."""
    assert eve(dumps({**DOC_ALERT, "host": "edge-fw-2"})).device_id == "ids:edge-fw-2"
    assert eve(dumps(DOC_ALERT), device_id="core").device_id == "ids:core"
    assert eve(dumps(DOC_ALERT), device_id="ids:core").device_id == "ids:core"


@pytest.mark.parametrize("event_type", ["flow", "dns", "stats", "http", "anomaly", "fileinfo"])
def test_non_alerts_are_discarded(event_type: str) -> None:
    """Only alerts are events; flow, dns, stats ... are dropped on purpose."""
    with pytest.raises(Discarded) as info:
        eve(dumps({"timestamp": "x", "event_type": event_type, "stats": {"uptime": 5}}))
    assert info.value.reason == "not_alert"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({**DOC_ALERT, "timestamp": "2009-11-24T21:27:09.534255"}, DeadLetterReason.INVALID_PAYLOAD),
        ({**DOC_ALERT, "timestamp": "not a time"}, DeadLetterReason.INVALID_PAYLOAD),
        ({k: v for k, v in DOC_ALERT.items() if k != "alert"}, DeadLetterReason.INVALID_PAYLOAD),
        ({**DOC_ALERT, "alert": {"signature": "x", "severity": 1}}, DeadLetterReason.INVALID_PAYLOAD),
        ({**DOC_ALERT, "alert": {**DOC_ALERT["alert"], "severity": "high"}}, DeadLetterReason.INVALID_PAYLOAD),
        ({"event_type": 7}, DeadLetterReason.INVALID_PAYLOAD),
    ],
)
def test_bad_alerts(record: dict[str, Any], reason: DeadLetterReason) -> None:
    """Naive times, missing alert objects and mistyped fields are refused."""
    with pytest.raises(NormalizeError) as info:
        eve(dumps(record))
    assert info.value.reason == reason


def test_malformed_json() -> None:
    """A cut line is MALFORMED_JSON."""
    with pytest.raises(NormalizeError) as info:
        eve(dumps(DOC_ALERT)[:-5])
    assert info.value.reason == DeadLetterReason.MALFORMED_JSON


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive; the zone is drawn below
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]),
    ),
    st.integers(1, 3),
    st.integers(1, 10_000_000),
    NAME,
    st.ip_addresses().map(str),
    st.sampled_from(["allowed", "blocked"]),
)
def test_generated_alerts(when: datetime, severity: int, sid: int, host: str, src: str, action: str) -> None:
    """Generated alerts map severity, sid, sensor, source address, action and time."""
    record = {
        **DOC_ALERT,
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f%z"),
        "host": host,
        "src_ip": src,
        "alert": {**DOC_ALERT["alert"], "severity": severity, "signature_id": sid, "action": action},
    }
    r = eve(dumps(record))
    assert (r.device_id, r.value, r.state) == (f"ids:{host}", float(severity), action)
    assert (r.data["signature_id"], r.data["src_ip"], r.data["severity"]) == (sid, src, severity)
    assert r.occurred_at == when and r.occurred_at.tzinfo is UTC


EVE_KEYS = [
    "timestamp",
    "event_type",
    "flow_id",
    "host",
    "src_ip",
    "src_port",
    "dest_ip",
    "dest_port",
    "proto",
    "alert",
]


@given(
    st.binary(max_size=200)
    | json_objects(EVE_KEYS)
    | json_objects(EVE_KEYS).map(lambda b: b[:-1] + b', "event_type": "alert"}')
)
def test_any_input_raises_only_normalize_error(raw: bytes) -> None:
    """Whatever arrives, the EVE normalizer returns readings or raises NormalizeError / Discarded."""
    try:
        readings = eve(raw)
    except (NormalizeError, Discarded):
        return
    json.dumps(readings.data)
