"""DeviceService on a real database: the index follows every write and reloads from the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from safecity.kernel.tabular import ImportMode
from safecity.sensing.device_service import DeviceService
from safecity.sensing.devices import DeviceExists, DeviceIn, DeviceNotFound, DevicePatch
from safecity.store.engine import create_engine, upgrade


@pytest.fixture
async def service(db_url: str):
    await upgrade(db_url)
    engine = create_engine(db_url)
    yield DeviceService(engine)
    await engine.dispose()


async def test_index_follows_writes_and_reloads(service: DeviceService) -> None:
    await service.create(DeviceIn(id="a", kind="smoke", community="c1", lon=121.0, lat=31.0, heartbeat_s=30))
    with pytest.raises(DeviceExists):
        await service.create(DeviceIn(id="a", kind="door"))
    report = await service.upsert_many(
        [
            {"id": "b", "kind": "door", "town": "t1"},
            DeviceIn(id="a", kind="smoke", community="c2"),
        ]
    )
    assert (report.created, report.updated) == (1, 1)
    bad = await service.upsert_many([{"id": "c", "kind": "door"}, {"id": "", "kind": "door"}])
    assert not bad.applied and bad.errors[0].feature == 1
    assert service.index.get("c") is None

    seen = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert await service.mark_seen({"a": seen, "ghost": seen}) == 1
    await service.update("b", DevicePatch(status="retired"))
    with pytest.raises(DeviceNotFound):
        await service.delete("ghost")

    # A fresh service (another process) rebuilds the same index from the table.
    fresh = DeviceService(service.engine)
    assert await fresh.load_index() == 2
    assert dict(fresh.index.items()) == dict(service.index.items())
    a = fresh.index.get("a")
    assert (a.community, a.lon, a.offline_after_s, a.last_seen) == ("c2", None, None, seen)
    assert fresh.index.get("b").status == "retired"
    assert (await fresh.get("a")).last_seen == seen


async def test_last_seen_of_many_devices_is_written_exactly(service: DeviceService) -> None:
    """More devices than one SQLite statement holds (16,383), times with and without microseconds and in another
    zone: each device reads back its own time, and a device not registered is left out."""
    n = 17_000
    report = await service.upsert_many([{"id": f"d{i:05d}", "kind": "door"} for i in range(n)])
    assert report.created == n
    shanghai = timezone(timedelta(hours=8))
    base = datetime(2026, 12, 7, 9, 30, tzinfo=shanghai)
    seen = {f"d{i:05d}": base + timedelta(seconds=i, microseconds=(i % 3) * 250_001) for i in range(0, n, 2)}
    assert await service.mark_seen({**seen, "ghost": base}) == len(seen)
    fresh = DeviceService(service.engine)
    await fresh.load_index()
    read = {d: info.last_seen for d, info in fresh.index.items()}
    assert {d: read[d] for d in seen} == seen
    assert all(read[f"d{i:05d}"] is None for i in range(1, n, 2))


async def test_bulk_import_modes(service: DeviceService) -> None:
    text = "id,kind\nok-1,smoke\nbad,??\n"
    rejected = await service.import_csv(text, mode=ImportMode.ALL_OR_NOTHING)
    assert (rejected.applied, rejected.created, len(rejected.errors)) == (False, 0, 1)
    assert len(service.index) == 0
    assert (await service.list()).total == 0
    accepted = await service.import_csv(text, mode=ImportMode.VALID_ONLY)
    assert (accepted.applied, accepted.created, accepted.errors[0].line) == (True, 1, 3)
    assert "ok-1" in service.index
