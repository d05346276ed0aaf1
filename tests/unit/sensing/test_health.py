"""Device health: offline within a second of the deadline, no sweeps, re-armed by reports."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from safecity.kernel import clock
from safecity.sensing.health import HealthMonitor


class Recorder:
    """Collects offline callbacks with the time they arrived."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, datetime | None, datetime, datetime]] = []
        self.event = asyncio.Event()

    async def __call__(self, device_id: str, last_seen: datetime | None, deadline: datetime) -> None:
        self.calls.append((device_id, last_seen, deadline, clock.now()))
        self.event.set()


async def _run(monitor: HealthMonitor, seconds: float) -> None:
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(seconds)
    task.cancel()


async def test_silent_device_goes_offline_within_a_second_of_its_deadline() -> None:
    rec = Recorder()
    monitor = HealthMonitor(rec)
    monitor.track("dev-1", 0.3)
    await _run(monitor, 0.8)
    assert [c[0] for c in rec.calls] == ["dev-1"]
    _, last_seen, deadline, fired_at = rec.calls[0]
    assert last_seen is None
    assert timedelta(0) <= fired_at - deadline < timedelta(seconds=1)
    assert monitor.is_offline("dev-1")


async def test_reports_postpone_the_deadline_and_only_the_silent_device_fires() -> None:
    rec = Recorder()
    monitor = HealthMonitor(rec)
    for i in range(2000):
        monitor.track(f"dev-{i}", 1.0)
    task = asyncio.create_task(monitor.run())
    # Reports every 0.1 s keep 1,999 devices far from their 1 s deadline even on a loaded machine.
    for _ in range(15):
        await asyncio.sleep(0.1)
        now = clock.now()
        for i in range(1, 2000):
            monitor.seen(f"dev-{i}", now)
    task.cancel()
    assert [c[0] for c in rec.calls] == ["dev-0"]


async def test_device_back_online_is_rearmed() -> None:
    rec = Recorder()
    monitor = HealthMonitor(rec)
    monitor.track("cam", 0.2)
    task = asyncio.create_task(monitor.run())
    await asyncio.wait_for(rec.event.wait(), 2)
    rec.event.clear()
    assert monitor.seen("cam", clock.now()) is True
    assert not monitor.is_offline("cam")
    await asyncio.wait_for(rec.event.wait(), 2)
    task.cancel()
    assert [c[0] for c in rec.calls] == ["cam", "cam"]
    assert rec.calls[1][1] is not None


async def test_old_reports_do_not_move_the_deadline_back() -> None:
    monitor = HealthMonitor(Recorder())
    now = clock.now()
    monitor.track("d", 10, last_seen=now)
    monitor.seen("d", now - timedelta(seconds=5))
    assert monitor.last_seen()["d"] == now
    monitor.untrack("d")
    assert "d" not in monitor.last_seen()


async def test_a_report_from_an_unwatched_device_starts_watching_it() -> None:
    rec = Recorder()
    monitor = HealthMonitor(rec)
    monitor.seen("new", clock.now())  # no interval: not watched
    assert "new" not in monitor.last_seen()
    monitor.seen("new", clock.now(), 0.2)
    assert "new" in monitor.last_seen()
    task = asyncio.create_task(monitor.run())
    await asyncio.wait_for(rec.event.wait(), 2)
    task.cancel()
    assert [c[0] for c in rec.calls] == ["new"]


async def test_old_event_times_do_not_make_a_device_offline_while_its_data_arrives() -> None:
    """Silence is counted from arrival: a replayed hour of a device's data does not mark it offline at once."""
    rec = Recorder()
    now = clock.now()
    monitor = HealthMonitor(rec, now=lambda: now)
    monitor.seen("replayed", now - timedelta(hours=1), 300)  # first data of a device, an hour old, arriving now
    monitor.seen("replayed", now - timedelta(minutes=59), 300)
    monitor.track("silent", 300, last_seen=now - timedelta(minutes=30))  # really silent for 30 min
    task = asyncio.create_task(monitor.run())
    await asyncio.wait_for(rec.event.wait(), 5)
    task.cancel()
    # Deadlines fire in order: "replayed" (old code: an hour ago + 300 s) would have come before "silent".
    assert [c[0] for c in rec.calls] == ["silent"]
    assert not monitor.is_offline("replayed")
    assert monitor.last_seen()["replayed"] == now - timedelta(minutes=59)


async def test_take_seen_gives_the_devices_heard_from_since_the_last_call_only() -> None:
    monitor = HealthMonitor(Recorder())
    now = clock.now()
    for n in range(1_000):
        monitor.track(f"d{n}", 60, last_seen=now - timedelta(hours=1))  # registered: already saved
    assert monitor.take_seen() == {}
    monitor.seen("d1", now)
    monitor.seen("d2", now - timedelta(seconds=1))
    monitor.seen("new", now, 60)  # starts being watched
    monitor.seen("unwatched", now)  # no interval: not watched, nothing to save
    assert monitor.take_seen() == {"d1": now, "d2": now - timedelta(seconds=1), "new": now}
    assert monitor.take_seen() == {}
    # A write that failed puts them back; what arrived meanwhile is kept too.
    monitor.seen("d3", now)
    taken = monitor.take_seen()
    monitor.seen("d4", now)
    monitor.restore_seen(taken)
    assert monitor.take_seen() == {"d3": now, "d4": now}
