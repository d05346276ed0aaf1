"""Device health as a service of its own: typed `device.offline` on the bus, loops owned by the supervisor, status
and last report times written to the registry, the last of them when it stops."""

from __future__ import annotations

import asyncio

from safecity.kernel import clock
from safecity.kernel.bus import MemoryBus
from safecity.kernel.envelope import Envelope
from safecity.kernel.keys import subscribe
from safecity.kernel.supervisor import Supervisor
from safecity.sensing.device_health import MONITOR, PERSIST, DeviceHealthService
from safecity.sensing.device_service import DeviceService
from safecity.sensing.devices import DeviceIn
from safecity.sensing.model import DEVICE_OFFLINE, DeviceKind, DeviceOffline
from safecity.store.engine import create_engine, upgrade


async def test_a_silent_device_goes_offline_on_the_bus_and_in_the_registry(db_url: str) -> None:
    await upgrade(db_url)
    engine = create_engine(db_url)
    bus = MemoryBus()
    tasks = Supervisor()
    devices = DeviceService(engine)
    await devices.create(
        DeviceIn(id="smoke-1", kind=DeviceKind.SMOKE, town="t1", community="c1", building="b1", offline_after_s=0.3)
    )
    await devices.create(DeviceIn(id="door-1", kind=DeviceKind.DOOR, community="c1", offline_after_s=3600))
    await devices.load_index()
    service = DeviceHealthService(
        devices, bus, heartbeat_timeout_s=600, source="node-1", tier="community", persist_every_s=3600, tasks=tasks
    )
    offline: list[DeviceOffline] = []
    arrived = asyncio.Event()

    async def on_offline(envelope: Envelope, event: DeviceOffline) -> None:
        assert envelope.source == "node-1" and envelope.tier == "community"
        offline.append(event)
        arrived.set()

    await tasks.enter("bus", bus.start, bus.close)
    await subscribe(bus, DEVICE_OFFLINE, on_offline)
    try:
        await tasks.enter("device-health", service.start, service.stop)
        assert {t.get_name() for t in tasks.running()} == {MONITOR, PERSIST}
        service.monitor.seen("door-1", clock.now())  # the door reports; the smoke detector stays silent
        await asyncio.wait_for(arrived.wait(), 5)
    finally:
        await tasks.stop()  # stops the service (writing what its hourly loop has not), then the bus
    assert tasks.running() == []
    assert [(e.device_id, e.kind, e.tags.building) for e in offline] == [("smoke-1", DeviceKind.SMOKE, "b1")]
    smoke, door = await devices.get("smoke-1"), await devices.get("door-1")
    assert smoke.status == "offline"
    assert door.status == "active" and door.last_seen is not None
    await engine.dispose()
