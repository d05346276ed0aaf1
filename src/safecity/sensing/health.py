"""Device health: a device silent for its offline timeout raises `device.offline` within a second of its deadline.

Silence is a wall-clock rule: the deadline runs from when the device's data last *arrived* here, not from the event
time it carries. A device whose events come late (a replay, a community node catching up after a cut link) is not
silent while they keep arriving; event-time rules about its data are the rule engine's job (docs/rules.md).

No periodic sweep over all devices: each device's deadline lives in a dict, and a heap holds at most one entry per
device. An event only moves the dict's deadline (O(1)); when a heap entry comes due and the device has been seen
since, it is re-armed at its new deadline. The loop sleeps until the earliest deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from safecity.kernel import clock

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Watch:
    interval_s: float
    last_seen: datetime | None
    deadline: datetime
    offline: bool = False


OfflineHandler = Callable[[str, datetime | None, datetime], Awaitable[None]]


class HealthMonitor:
    """Tracks heartbeat deadlines of devices and calls `on_offline(device_id, last_seen, deadline)` when one passes."""

    def __init__(self, on_offline: OfflineHandler, *, now: Callable[[], datetime] = clock.now) -> None:
        self._on_offline = on_offline
        self._now = now
        self._watches: dict[str, _Watch] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._wake = asyncio.Event()
        self.raised = 0
        # Devices whose online/offline state changed since `status_changes()` was last called: id -> offline.
        self._changed: dict[str, bool] = {}
        # Devices whose data arrived since `take_seen()` was last called.
        self._seen_since: set[str] = set()

    def track(
        self, device_id: str, interval_s: float, last_seen: datetime | None = None, *, offline: bool = False
    ) -> None:
        """Start (or restart) watching a device that should report at least every `interval_s` seconds.

        `offline`: the device is already known to be offline (the registry says so), so it is not raised again;
        it is watched once more when it reports.
        """
        base = last_seen or self._now()
        deadline = base + timedelta(seconds=interval_s)
        self._watches[device_id] = _Watch(interval_s, last_seen, deadline, offline=offline)
        if not offline:
            self._push(deadline, device_id)

    def untrack(self, device_id: str) -> None:
        """Stop watching a device (retired, deleted); its heap entry is dropped lazily."""
        self._watches.pop(device_id, None)

    def seen(self, device_id: str, at: datetime, interval_s: float | None = None) -> bool:
        """Record that data of a device (event time `at`) arrived now; returns True when it was offline and is back.

        `last_seen` keeps the newest event time; the offline deadline runs from the arrival (`now`).

        A device not watched yet starts being watched when `interval_s` is given (devices registered while
        the node runs need no separate call).
        """
        watch = self._watches.get(device_id)
        now = self._now()
        if watch is None:
            if interval_s is not None:
                self.track(device_id, interval_s, last_seen=at)
                self._watches[device_id].deadline = now + timedelta(seconds=interval_s)
                self._seen_since.add(device_id)
            return False
        self._seen_since.add(device_id)
        if watch.last_seen is None or at > watch.last_seen:
            watch.last_seen = at
        watch.deadline = now + timedelta(seconds=watch.interval_s)
        if watch.offline:
            watch.offline = False
            self._changed[device_id] = False
            self._push(watch.deadline, device_id)
            return True
        return False

    def take_seen(self) -> dict[str, datetime]:
        """Take the last report times of the devices whose data arrived since the last call (not of every device:
        a node tracks hundreds of thousands)."""
        seen, self._seen_since = self._seen_since, set()
        watches = self._watches
        return {d: w.last_seen for d in seen if (w := watches.get(d)) is not None and w.last_seen is not None}

    def restore_seen(self, device_ids: Iterable[str]) -> None:
        """Put back devices whose last report times could not be saved (taken again next time)."""
        self._seen_since.update(device_ids)

    def status_changes(self) -> dict[str, bool]:
        """Take the devices that went offline (True) or came back (False) since the last call."""
        changed, self._changed = self._changed, {}
        return changed

    def restore_changes(self, changes: dict[str, bool]) -> None:
        """Put back changes that could not be saved (newer ones win)."""
        self._changed = {**changes, **self._changed}

    def last_seen(self) -> dict[str, datetime]:
        """Last report time of every tracked device that has reported."""
        return {d: w.last_seen for d, w in self._watches.items() if w.last_seen is not None}

    def is_offline(self, device_id: str) -> bool:
        """Whether a tracked device is currently past its deadline."""
        watch = self._watches.get(device_id)
        return bool(watch and watch.offline)

    def _push(self, deadline: datetime, device_id: str) -> None:
        if not self._heap or deadline < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (deadline, device_id))

    async def run(self) -> None:
        """Fire offline callbacks as deadlines pass; runs until cancelled."""
        while True:
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            due, device_id = self._heap[0]
            delay = (due - self._now()).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, 60.0)):
                        await self._wake.wait()
                continue
            heapq.heappop(self._heap)
            watch = self._watches.get(device_id)
            if watch is None or watch.offline:
                continue
            if watch.deadline > due:
                # Seen since this entry was armed: re-arm at the new deadline (lazy, one entry per device).
                heapq.heappush(self._heap, (watch.deadline, device_id))
                continue
            watch.offline = True
            self._changed[device_id] = True
            self.raised += 1
            try:
                await self._on_offline(device_id, watch.last_seen, watch.deadline)
            except Exception:
                log.exception("device_offline_handler_failed", device_id=device_id)
