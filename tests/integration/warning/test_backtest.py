"""Backtest on a real SQLite store: `--until`, example groups with their trigger events, the pseudonym key check."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safecity.kernel.envelope import Envelope, make_envelope
from safecity.kernel.settings import DEV_PSEUDONYM_KEY
from safecity.sensing.model import EventKind, SensorEvent, Tags, event_key
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.store.engine import create_engine, upgrade
from safecity.store.events import EventRepo
from safecity.store.writer import EventWriter
from safecity.warning.backtest import backtest
from safecity.warning.commands import rules_app
from safecity.warning.rules import parse_pack

NODE_KEY = "node-pseudonym-key-0123456789"
NODE = Pseudonymizer(NODE_KEY.encode())
DEV = Pseudonymizer(DEV_PSEUDONYM_KEY.encode())
PACK = """watchlists:
  stolen: {field: plate, values: [沪A12345]}
rules:
  - id: hot
    kind: hotlist
    title: {zh: 布控车辆, en: Watch-listed vehicle}
    watchlist: stolen
    group_window: 1h
"""


def read(plate: str, at: datetime, camera: str = "cam-1") -> Envelope:
    """A checkpoint read stored as the node stores it: the plate only as its pseudonym under the node's key."""
    payload = SensorEvent(
        device_id=camera,
        kind=EventKind.CHECKPOINT,
        tags=Tags(town="t1", community="c1", building=None, device_kind="checkpoint"),
        lon=121.25,
        lat=31.37,
        data={"direction": "in"},
        pseudonyms={"plate": NODE("plate", plate)},
    )
    return make_envelope(event_key(EventKind.CHECKPOINT), payload, source="test", occurred_at=at, received_at=at)


@pytest.fixture
async def store(sqlite_url: str) -> tuple[str, datetime, list[str]]:
    """Reads over the last three hours: the listed plate 2 h and 30 min ago (two alerts), others in between."""
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    now = datetime.now(UTC)
    listed = [read("沪A12345", now - timedelta(hours=2)), read("沪A12345", now - timedelta(minutes=30), "cam-2")]
    async with EventWriter(engine, interval_ms=10, max_rows=500) as writer:
        for env in listed:
            await writer.add(env)
        for k in range(5):
            await writer.add(read(f"沪B0000{k}", now - timedelta(minutes=20 * k + 10)))
    await engine.dispose()
    return sqlite_url, now, [env.id for env in listed]


async def test_backtest_reports_groups_trigger_events_and_a_key_that_cannot_match(store) -> None:
    url, now, listed = store
    engine = create_engine(url)
    repo = EventRepo(engine)
    try:
        under_node_key = await backtest(
            parse_pack(PACK, pseudonymize=NODE), repo, now - timedelta(hours=3), now, pseudonymize=NODE
        )
        under_dev_key = await backtest(
            parse_pack(PACK, pseudonymize=DEV), repo, now - timedelta(hours=3), now, pseudonymize=DEV
        )
        first_hour = await backtest(
            parse_pack(PACK, pseudonymize=NODE),
            repo,
            now - timedelta(hours=3),
            now - timedelta(hours=1),
            pseudonymize=NODE,
        )
    finally:
        await engine.dispose()
    hot = under_node_key.rules["hot"]
    assert hot.raised == 2
    assert [ex.trigger_event_ids for ex in hot.examples] == [[listed[0]], [listed[1]]]
    assert (
        hot.examples[0].group_key == hot.examples[1].group_key == f"hot:plate:{NODE('plate', '沪A12345')[:16]}"
        and "沪A" not in hot.examples[0].group_key
    )
    assert under_node_key.key.warning is None
    # The same stored reads under the development key: nothing matches, and the report says why.
    assert under_dev_key.rules["hot"].raised == 0
    assert under_dev_key.key.dev_key and under_dev_key.key.reads == 7 and under_dev_key.key.listed == 0
    assert under_dev_key.key.warning is not None and "DEVELOPMENT pseudonym key" in under_dev_key.key.warning
    # `until` ends the period: of the listed plate, only the read 2 h ago is before it.
    assert first_hour.events == 3 and first_hour.rules["hot"].raised == 1


async def test_rules_test_cli_until_examples_and_key_warning(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, listed = store
    pack = tmp_path / "hot.yaml"
    pack.write_text(PACK, encoding="utf-8")
    runner = CliRunner()
    args = ["test", str(pack), "--since", "3h", "--db", url]

    monkeypatch.delenv("SAFECITY_SECURITY__PSEUDONYM_KEY", raising=False)
    result = await asyncio.to_thread(runner.invoke, rules_app, args)
    assert result.exit_code == 0, result.output
    assert "raised=0" in result.output
    assert "WARNING: This backtest pseudonymizes watch lists with the DEVELOPMENT pseudonym key" in result.stderr

    monkeypatch.setenv("SAFECITY_SECURITY__PSEUDONYM_KEY", NODE_KEY)
    result = await asyncio.to_thread(runner.invoke, rules_app, args)
    assert result.exit_code == 0, result.output
    assert "raised=2 updated=0 events=7" in result.stdout
    assert f"events {listed[0]}" in result.stdout and f"events {listed[1]}" in result.stdout
    assert "WARNING" not in result.output
    result = await asyncio.to_thread(runner.invoke, rules_app, [*args, "--until", "1h"])
    assert result.exit_code == 0, result.output
    assert "raised=1 updated=0 events=3" in result.stdout
    result = await asyncio.to_thread(runner.invoke, rules_app, [*args, "--until", "4h"])
    assert result.exit_code == 2 and "must be later than --since" in result.output
    result = await asyncio.to_thread(runner.invoke, rules_app, [*args, "--until", "yesterday"])
    assert result.exit_code == 2 and "'yesterday' is neither a duration ago" in result.output
