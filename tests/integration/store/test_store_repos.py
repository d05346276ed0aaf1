"""Event and dead-letter repositories on SQLite and PostgreSQL: filters, pagination, counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel.envelope import Envelope
from safecity.kernel.errors import InvalidInput
from safecity.sensing.model import DeadLetterReason, EventKind
from safecity.store.deadletters import DeadLetterRepo
from safecity.store.events import EventRepo
from safecity.store.writer import EventWriter

MakeEvent = Callable[..., Envelope]
BASE = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)


@pytest.fixture
async def stored(engine: AsyncEngine, make_event: MakeEvent) -> list[Envelope]:
    """60 events: 3 kinds, 4 devices, 2 towns, 3 communities, 2 buildings, one a minute from BASE."""
    kinds = [EventKind.SMOKE, EventKind.DOOR, EventKind.PARKING]
    envelopes = [
        make_event(
            i,
            kind=kinds[i % 3],
            device_id=f"dev-{i % 4}",
            town=f"town-{i % 2}",
            community=f"comm-{i % 3}",
            building=None if i % 5 == 0 else f"bldg-{i % 2}",
            # Half the times given in UTC+8, to check everything is compared as instants.
            occurred_at=(BASE + timedelta(minutes=i)).astimezone(timezone(timedelta(hours=8 * (i % 2)))),
        )
        for i in range(60)
    ]
    async with EventWriter(engine, interval_ms=10) as writer:
        for env in envelopes:
            await writer.add(env)
        await writer.flush()
    return envelopes


def _ids(rows: list[dict[str, object]]) -> list[str]:
    return [str(r["id"]) for r in rows]


async def test_event_counts(engine: AsyncEngine, stored: list[Envelope]) -> None:
    """count() and count_by_kind() agree with what was written."""
    repo = EventRepo(engine)
    assert await repo.count() == 60
    assert await repo.count(kind="smoke") == 20
    assert await repo.count(kind=EventKind.DOOR) == 20
    assert await repo.count(kind="crowd") == 0
    assert await repo.count_by_kind() == {"smoke": 20, "door": 20, "parking": 20}


async def test_event_filters(engine: AsyncEngine, stored: list[Envelope]) -> None:
    """Each filter, and several together, select exactly the matching events, newest first."""
    repo = EventRepo(engine)

    def expect(pred: Callable[[int, Envelope], bool]) -> list[str]:
        return sorted((e.id for i, e in enumerate(stored) if pred(i, e)), reverse=True)

    assert _ids(await repo.list(limit=1000)) == expect(lambda i, e: True)
    assert _ids(await repo.list(kind="door", limit=1000)) == expect(lambda i, e: i % 3 == 1)
    assert _ids(await repo.list(device_id="dev-2", limit=1000)) == expect(lambda i, e: i % 4 == 2)
    assert _ids(await repo.list(town="town-1", limit=1000)) == expect(lambda i, e: i % 2 == 1)
    assert _ids(await repo.list(community="comm-0", limit=1000)) == expect(lambda i, e: i % 3 == 0)
    assert _ids(await repo.list(building="bldg-0", limit=1000)) == expect(lambda i, e: i % 5 != 0 and i % 2 == 0)
    since, until = BASE + timedelta(minutes=10), BASE + timedelta(minutes=20)
    assert _ids(await repo.list(since=since, until=until, limit=1000)) == expect(lambda i, e: 10 <= i < 20)
    # The same instant written in another zone selects the same events.
    shanghai = timezone(timedelta(hours=8))
    got = await repo.list(since=since.astimezone(shanghai), until=until.astimezone(shanghai), limit=1000)
    assert _ids(got) == expect(lambda i, e: 10 <= i < 20)
    got = await repo.list(kind="smoke", town="town-0", since=since, limit=1000)
    assert _ids(got) == expect(lambda i, e: i % 3 == 0 and i % 2 == 0 and i >= 10)
    assert await repo.list(device_id="nobody") == []
    with pytest.raises(InvalidInput):
        await repo.list(since=datetime(2026, 5, 1))  # noqa: DTZ001 - a naive time must be refused


async def test_event_keyset_pagination(engine: AsyncEngine, stored: list[Envelope]) -> None:
    """Pages by after_id cover every event once, in both orders."""
    repo = EventRepo(engine)
    for order in ("desc", "asc"):
        seen: list[str] = []
        after: str | None = None
        while True:
            page = await repo.list(limit=7, after_id=after, order=order)
            if not page:
                break
            assert len(page) <= 7
            seen.extend(_ids(page))
            after = seen[-1]
        expected = sorted((e.id for e in stored), reverse=order == "desc")
        assert seen == expected


async def test_event_get_and_ids_for_device(engine: AsyncEngine, stored: list[Envelope]) -> None:
    """get() returns one event with aware times; ids_for_device lists a device's events oldest first."""
    repo = EventRepo(engine)
    row = await repo.get(stored[7].id)
    assert row is not None
    assert row["device_id"] == "dev-3"
    assert row["occurred_at"] == BASE + timedelta(minutes=7)
    assert row["occurred_at"].tzinfo is not None
    assert await repo.get("0" * 26) is None
    assert await repo.ids_for_device("dev-1") == [e.id for i, e in enumerate(stored) if i % 4 == 1]
    assert await repo.ids_for_device("nobody") == []


async def test_dead_letters(engine: AsyncEngine) -> None:
    """Dead letters keep raw bytes up to the cap and the full size; list, get and counts work."""
    repo = DeadLetterRepo(engine)
    raw = b"\x00\xff" + b"x" * 5000
    first = await repo.add(
        reason=DeadLetterReason.TOO_LARGE,
        detail="5002 bytes",
        source="mqtt",
        raw=raw,
        raw_cap=1024,
        topic="safecity/" + "t" * 1000,
        device_id="dev-1",
        kind="smoke",
    )
    got = await repo.get(first)
    assert got is not None
    assert got["raw"] == raw[:1024]
    assert got["raw_size"] == 5002
    assert got["reason"] == "too_large"
    assert len(got["topic"]) == 512
    assert got["received_at"].tzinfo is not None
    assert await repo.get("0" * 26) is None

    many = await repo.add_many(
        [
            {"reason": "malformed_json", "detail": f"bad {i}", "source": "http", "raw": b"{" * i, "raw_cap": 3}
            for i in range(10)
        ]
        + [
            # Rows the dead-letter service prepares itself: id, time, cut raw and full size given.
            {
                "id": f"01J0000000000000000000000{i}",
                "received_at": datetime(2020, 1, 1, tzinfo=UTC),
                "reason": "unknown_device",
                "detail": "who?",
                "source": "mqtt",
                "topic": "safecity/c/smoke/x",
                "device_id": "x",
                "kind": None,
                "raw": b"ab",
                "raw_size": 99,
            }
            for i in range(2)
        ]
    )
    assert len(many) == 12
    assert await repo.add_many([]) == []
    assert await repo.count_by_reason() == {"too_large": 1, "malformed_json": 10, "unknown_device": 2}

    old = await repo.get("01J00000000000000000000001")
    assert old is not None
    assert (old["raw"], old["raw_size"], old["received_at"]) == (b"ab", 99, datetime(2020, 1, 1, tzinfo=UTC))
    malformed = await repo.list(reason="malformed_json", limit=100)
    assert len(malformed) == 10
    assert all(len(r["raw"]) <= 3 for r in malformed)
    assert sorted(r["raw_size"] for r in malformed) == list(range(10))

    recent = await repo.list(since=datetime(2025, 1, 1, tzinfo=UTC))
    assert {r["reason"] for r in recent} == {"too_large", "malformed_json"}
    everything: list[str] = []
    after: str | None = None
    while page := await repo.list(limit=5, after_id=after):
        everything.extend(_ids(page))
        after = everything[-1]
    assert everything == sorted([first, *many], reverse=True)
