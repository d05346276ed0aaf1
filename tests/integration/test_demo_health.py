"""The demo's fleet stays inside its heartbeat deadlines: only the devices chosen to go silent go offline."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import func, select

from safecity.sim.demo import SILENT_DEVICES, demo_devices, run_demo
from safecity.store.engine import create_engine
from safecity.store.tables import alerts, devices


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_only_the_silent_devices_go_offline_and_the_registry_says_so(tmp_path: Path, free_tcp_port: int) -> None:
    # 300 devices at 10 messages/s: drawn at random, each would report every 30 s on average, so many of the
    # cameras, checkpoints and crowd counters (60 s heartbeat) would miss a deadline within 70 s.
    fleet = 300
    _, registered, _ = demo_devices(fleet)
    silent = {d["id"] for d in registered[:SILENT_DEVICES]}
    out = io.StringIO()
    await run_demo(
        rate=10,
        port=free_tcp_port,
        duration=70,
        devices=fleet,
        mqtt=None,
        data_dir=tmp_path,
        console=Console(file=out, width=200),
    )
    assert "cannot all report" not in out.getvalue()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'safecity.db'}")
    try:
        async with engine.connect() as conn:
            offline_alerts = (
                (await conn.execute(select(alerts.c.group_key).where(alerts.c.rule_id == "infra.device_offline")))
                .scalars()
                .all()
            )
            counted = await conn.execute(select(devices.c.status, func.count()).group_by(devices.c.status))
            statuses = {status: n for status, n in counted}
            offline_ids = set(
                (await conn.execute(select(devices.c.id).where(devices.c.status == "offline"))).scalars().all()
            )
    finally:
        await engine.dispose()
    assert len(offline_alerts) == SILENT_DEVICES, offline_alerts
    assert all(any(d in key for d in silent) for key in offline_alerts), offline_alerts
    assert offline_ids == silent
    assert statuses == {"offline": SILENT_DEVICES, "active": fleet - SILENT_DEVICES}
