"""Device health as a service: the heartbeat monitor's loop, `device.offline` messages, and the registry bookkeeping.

The hot path only touches memory (`HealthMonitor.seen`); this service turns the monitor's decisions into bus messages
and, every `persist_every_s`, writes last report times and online/offline status to the device registry in batches.
It registers its loops with the node's supervisor and writes what is left when it stops.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from safecity.kernel import clock
from safecity.kernel.bus import Bus
from safecity.kernel.envelope import make_envelope
from safecity.kernel.metrics import Metrics
from safecity.kernel.supervisor import Supervisor
from safecity.sensing.device_service import DeviceService
from safecity.sensing.health import HealthMonitor
from safecity.sensing.model import DEVICE_OFFLINE, DeviceKind, DeviceOffline, Tags

log = structlog.get_logger(__name__)

PERSIST_EVERY_S = 10.0
# Task names (the supervisor's `task` metric label).
MONITOR = "device-health"
PERSIST = "device-last-seen"


class DeviceHealthService:
    """Watches device heartbeats, publishes `device.offline`, keeps the registry's last_seen and status current."""

    def __init__(
        self,
        devices: DeviceService,
        bus: Bus,
        *,
        heartbeat_timeout_s: float,
        source: str,
        tier: str,
        metrics: Metrics | None = None,
        persist_every_s: float = PERSIST_EVERY_S,
        tasks: Supervisor | None = None,
    ) -> None:
        self.devices = devices
        self.bus = bus
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.source = source
        self.tier = tier
        self.metrics = metrics
        self.persist_every_s = persist_every_s
        self.monitor = HealthMonitor(self.device_offline)
        # The node's supervisor owns the loops (used alone, the service owns a supervisor of its own).
        self._tasks = tasks if tasks is not None else Supervisor()

    async def start(self) -> None:
        """Track the registry's devices and run the monitor and the bookkeeping loops."""
        self.track_devices()
        self._tasks.spawn(MONITOR, self.monitor.run)
        self._tasks.every(PERSIST, self.persist_every_s, self.persist_last_seen)

    async def stop(self) -> None:
        """Stop the loops, then write the last report times and status changes not written yet."""
        await self._tasks.cancel(PERSIST)
        await self._tasks.cancel(MONITOR)
        await self.persist_last_seen()

    def track_devices(self) -> None:
        """Watch the heartbeat of every active device in the registry."""
        default = self.heartbeat_timeout_s
        for device_id, info in self.devices.index.items():
            if info.status in ("active", "offline"):
                self.monitor.track(
                    device_id, info.offline_after_s or default, info.last_seen, offline=info.status == "offline"
                )

    async def device_offline(self, device_id: str, last_seen: datetime | None, deadline: datetime) -> None:
        """Publish `device.offline` for a registered device whose heartbeat deadline passed."""
        info = self.devices.index.get(device_id)
        if info is None:
            return
        payload = DeviceOffline(
            device_id=device_id,
            kind=DeviceKind(info.kind),
            tags=Tags(town=info.town, community=info.community, building=info.building, device_kind=info.kind),
            last_seen=last_seen,
            deadline=deadline,
        )
        await self.bus.publish(make_envelope(DEVICE_OFFLINE, payload, source=self.source, tier=self.tier))
        if self.metrics is not None:
            self.metrics.devices_offline.inc()
        log.info("device_offline", device_id=device_id, late_ms=(clock.now() - deadline).total_seconds() * 1000)

    async def persist_last_seen(self) -> None:
        """Write devices' last report times and health status to the registry (batched; the hot path only touches
        memory)."""
        await self.persist_health()
        changed = self.monitor.take_seen()
        if not changed:
            return
        try:
            await self.devices.mark_seen(changed)
        except Exception:  # a failed bookkeeping write must not stop the loop; it is retried next round
            log.exception("last_seen_persist_failed", devices=len(changed))
            self.monitor.restore_seen(changed)

    async def persist_health(self) -> None:
        """Write device status (offline / active again) to the registry as the health monitor decided."""
        changes = self.monitor.status_changes()
        if not changes:
            return
        try:
            await self.devices.set_online(changes)
        except Exception:  # bookkeeping: retried next round, like last_seen
            log.exception("device_status_persist_failed", devices=len(changes))
            self.monitor.restore_changes(changes)
