"""A refused checkpoint read never leaves its clear plate anywhere: not in the dead letter's raw bytes or detail,
not in any other table, not in the logs (docs/devices.md "Dead letters and personal data"), on both backends."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from tests.integration.api.conftest import AppFactory, HeadersFactory

from safecity.sensing.pseudonym import Pseudonymizer
from safecity.sharing.keys import Role
from safecity.sim.district import build_district
from safecity.store.tables import metadata

DISTRICT = build_district(devices=200)
CHECKPOINT = next(d for d in DISTRICT.devices if d["kind"] == "checkpoint")
PLATE = "沪A·54321"
# Every form the clear plate could be kept in: as sent, unspaced (normalized), and its distinctive prefix.
CLEAR_FORMS = (PLATE, "沪A54321", "沪A")


def _lines(device: str) -> list[tuple[str, dict[str, Any] | bytes]]:
    """One message per refusal kind (and one good read first, so the duplicate has something to repeat)."""
    now = time.time()
    base = {"ts": now, "plate": PLATE, "direction": "in"}
    return [
        ("accepted", {**base, "device": device, "id": "m1"}),
        ("invalid_payload", {**base, "device": device, "owner": "张三"}),  # unknown field
        ("time_out_of_range", {**base, "device": device, "ts": now - 30 * 86400}),
        ("duplicate", {**base, "device": device, "id": "m1"}),
        ("unknown_device", {**base, "device": "ghost-checkpoint-9"}),
        ("invalid_payload", {**base, "device": device, "lane": "left"}),  # wrong type
        ("invalid_payload", {**base, "device": device, "plate": f"{PLATE}·{PLATE}·X"}),  # implausible plate
        ("invalid_payload", {**base, "device": device, "plate": [PLATE, 0.93]}),  # wrong type, plate in a list
        ("malformed_json", f'{{"device": "{device}", "plate": "{PLATE}", '.encode()),  # cannot be parsed
    ]


def _bytes(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def _database_text(app: FastAPI) -> str:
    """Every value of every column of every table, as text."""
    parts: list[str] = []
    async with app.state.runtime.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                parts.extend(_text(v) for v in row if v is not None)
    return "\n".join(parts)


@pytest.mark.parametrize("route", ["http_batch", "topic"])
async def test_refused_checkpoint_reads_keep_no_clear_plate(
    db_url: str,
    app_factory: AppFactory,
    key_headers: HeadersFactory,
    route: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    app, client = await app_factory(db_url)
    runtime = app.state.runtime
    await runtime.devices.upsert_many([CHECKPOINT])
    ingest = await key_headers(app, Role.INGEST)
    operator = await key_headers(app, Role.OPERATOR)
    cases = _lines(CHECKPOINT["id"])

    if route == "http_batch":
        body = b"\n".join(_bytes(b) for _, b in cases)
        report = await client.post("/api/v1/ingest/batch?format=checkpoint", content=body, headers=ingest)
        assert report.status_code == 202, report.text
        assert [r["reason"] for r in report.json()["dead_lettered"]] == [r for r, _ in cases[1:]]
    else:
        # The in-process MQTT route: the device id travels in the topic, not in the payload.
        community = CHECKPOINT["community"]
        routed: list[tuple[str, dict[str, Any] | bytes]] = []
        for reason, sent in cases:
            device, message = CHECKPOINT["id"], sent
            if isinstance(sent, dict):
                device = sent["device"]
                message = {k: v for k, v in sent.items() if k != "device"}
            routed.append((reason, message))
            await runtime.mqtt_route(f"safecity/{community}/checkpoint/{device}", _bytes(message))
        cases = routed
    await runtime.bus.drain()
    await runtime.writer.flush()
    await runtime.dead_letters.flush()

    page = (await client.get("/api/v1/dead-letters", params={"limit": 100}, headers=operator)).json()
    items = sorted(page["items"], key=lambda i: i["id"])
    assert [i["reason"] for i in items] == [r for r, _ in cases[1:]]
    pseudonym = Pseudonymizer(runtime.settings.security.pseudonym_key.get_secret_value().encode())("plate", "沪A54321")
    for item, (_, sent) in zip(items, cases[1:], strict=True):
        raw = base64.b64decode(item["raw_base64"])
        assert item["raw_size"] == len(_bytes(sent))
        if isinstance(sent, bytes):
            assert raw == b""  # unparseable bytes of a kind that carries plates: none kept
        elif sent["plate"] == PLATE:
            # The rest of the message stays for diagnosis; the plate is its pseudonym, as in events.
            kept = orjson.loads(raw)
            assert kept["plate"] == pseudonym
            assert {k: v for k, v in kept.items() if k != "plate"} == {k: v for k, v in sent.items() if k != "plate"}
    events = (await client.get("/api/v1/events", params={"kind": "checkpoint"}, headers=operator)).json()["items"]
    assert [e["pseudonyms"]["plate"] for e in events] == [pseudonym]

    stored = await _database_text(app)
    assert pseudonym in stored  # the scan reads the rows that matter
    captured = capsys.readouterr()
    logs = "\n".join([caplog.text, captured.out, captured.err])
    assert "input_dead_lettered" in logs  # the scan reads the log lines that matter
    for form in CLEAR_FORMS:
        assert form not in stored, f"{form!r} stored in the clear"
        assert form not in logs, f"{form!r} logged in the clear"
