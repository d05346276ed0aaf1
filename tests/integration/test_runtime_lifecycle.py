"""A real node starts and stops through one supervisor: every task is owned, stop runs backwards, nothing is left."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from safecity.kernel.settings import Settings
from safecity.runtime import Runtime

# Registration order of a node with the default settings (no MQTT, no roads): start order, stop order reversed.
# On SQLite the WAL checkpoint thread comes after the database (`REGISTERED_SQLITE`).
REGISTERED = [
    "database",
    "bus",
    "roads",
    "dead-letter-writer",
    "dead-letters",
    "event-writer",
    "event-writer",
    "store-subscription",
    "live-feed",
    "notify-writer",
    "notify-dispatcher",
    "notify-refresh",
    "notify",
    "alert-delivered-stamps",
    "alerts",
    "warning-timers",
    "warning",
    "dispatch-sla",
    "dispatch-rerank",
    "dispatch",
    "api-key-last-used",
    "api-key-last-used",
    "device-health",
    "device-last-seen",
    "device-health",
    "bus-drain",
]
REGISTERED_SQLITE = [REGISTERED[0], "wal-checkpoint", *REGISTERED[1:]]

OWNED_TASKS = {
    "event-writer",
    "dead-letter-writer",
    "alert-delivered-stamps",
    "notify-writer",
    "notify-dispatcher",
    "notify-refresh",
    "warning-timers",
    "dispatch-sla",
    "dispatch-rerank",
    "api-key-last-used",
    "device-health",
    "device-last-seen",
}


def _recording(calls: list[str], name: str, step: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        calls.append(name)
        return await step()

    return run


async def test_a_runtime_starts_and_stops_through_one_supervisor_leaving_no_task(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = asyncio.all_tasks()
    rt = Runtime(Settings(database={"url": db_url}, log_json=False))
    assert rt.warning is not None
    calls: list[str] = []
    # Record each real stop step as it runs (each still does its work).
    for name, owner, attr in [
        ("bus.close", rt.bus, "close"),
        ("bus.drain", rt.bus, "drain"),
        ("roads.close", rt.roads, "close"),
        ("dead_letters.stop", rt.dead_letters, "stop"),
        ("writer.close", rt.writer, "close"),
        ("alerts.stop", rt.alerts, "stop"),
        ("notify.stop", rt.notify, "stop"),
        ("warning.stop", rt.warning, "stop"),
        ("device_health.stop", rt.device_health, "stop"),
        ("dispatch.stop", rt.dispatch, "stop"),
        *([("checkpointer.stop", rt.checkpointer, "stop")] if rt.checkpointer is not None else []),
    ]:
        monkeypatch.setattr(owner, attr, _recording(calls, name, getattr(owner, attr)))

    await rt.start()
    try:
        sqlite = db_url.startswith("sqlite")
        assert (rt.checkpointer is not None) is sqlite
        assert rt.supervisor.registered() == (REGISTERED_SQLITE if sqlite else REGISTERED)
        assert rt.checkpointer is None or rt.checkpointer.running
        started = asyncio.all_tasks() - before
        owned = set(rt.supervisor.running())
        assert {t.get_name() for t in owned} == OWNED_TASKS
        # Every task the node started is the supervisor's, bar the bus's own subscription workers (the bus stops
        # them when its subscriptions stop) and, on Python 3.11, the inner task `asyncio.wait_for` makes for the
        # awaitable it times (here an owned loop's `Event.wait`).
        inner = {t for t in started - owned if getattr(t.get_coro(), "__qualname__", "") == "Event.wait"}
        # The live feed's subscriptions are not durable (a browser feed starts from now): the bus numbers them.
        live_feed = {
            t for t in started if re.fullmatch(r"bus-sub-(incident|responder|alert|device)\.>#\d+", t.get_name())
        }
        assert len(live_feed) == 4
        assert {t.get_name() for t in started - owned - inner - live_feed} <= {
            "bus-sub-store-writer",
            "bus-sub-alert-store-raised",
            "bus-sub-alert-store-updated",
            "bus-sub-notify",
            "bus-sub-warning-engine",
            "bus-sub-warning-engine-offline",
            "bus-sub-dispatch-alerts",
        }
        assert rt.supervisor.down() == []
    finally:
        with capture_logs() as logs:
            await rt.stop()

    assert calls == [
        "bus.drain",
        "device_health.stop",
        "dispatch.stop",
        "warning.stop",
        "alerts.stop",
        "notify.stop",
        "writer.close",
        "dead_letters.stop",
        "roads.close",
        "bus.close",
        *(["checkpointer.stop"] if sqlite else []),
    ]
    assert rt.checkpointer is None or not rt.checkpointer.running
    events = [entry["event"] for entry in logs]
    assert events.index("warning_stopped") < events.index("event_writer_closed") < events.index("runtime_stopped")
    assert asyncio.all_tasks() - before == set(), "no task outlives the node"
    assert rt.supervisor.registered() == []
    assert not rt.started
