"""The supervisor: one start/stop order for services, every background task owned, loops restarted with backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from itertools import pairwise

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from safecity.kernel.supervisor import Supervisor


def _metrics() -> tuple[CollectorRegistry, Counter, Gauge]:
    registry = CollectorRegistry()
    failures = Counter("t_task_failures", "failures", ["task"], registry=registry)
    up = Gauge("t_task_up", "up", ["task"], registry=registry)
    return registry, failures, up


async def _until(check: Callable[[], bool], within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_stop_runs_in_reverse_registration_order_tasks_included() -> None:
    sup = Supervisor()
    log: list[str] = []

    def step(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            log.append(name)

        return run

    async def loop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            log.append("loop cancelled")

    await sup.enter("database", stop=step("database"))
    await sup.enter("bus", step("bus started"), step("bus"))
    sup.spawn("loop", loop)
    sup.on_stop("intake", step("intake"))
    assert sup.registered() == ["database", "bus", "loop", "intake"]
    await asyncio.sleep(0)  # let the loop start
    await sup.stop()
    assert log == ["bus started", "intake", "loop cancelled", "bus", "database"]
    assert sup.registered() == []
    assert sup.running() == []


async def test_a_service_stops_before_the_tasks_its_start_spawned_are_cancelled() -> None:
    sup = Supervisor()
    log: list[str] = []
    flushed = asyncio.Event()

    async def writer() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            log.append("writer cancelled")

    async def start() -> None:
        sup.spawn("writer", writer)

    async def stop() -> None:
        # The service flushes while its loop still runs, then the supervisor cancels what is left.
        assert sup.running(), "the service's task is still running while it stops"
        log.append("service stopped")
        flushed.set()

    await sup.enter("service", start, stop)
    await asyncio.sleep(0)
    await sup.stop()
    assert flushed.is_set()
    assert log == ["service stopped", "writer cancelled"]


async def test_enter_context_exits_at_stop_and_a_failed_start_registers_nothing() -> None:
    sup = Supervisor()
    log: list[str] = []

    @asynccontextmanager
    async def resource() -> AsyncIterator[str]:
        log.append("open")
        yield "handle"
        log.append("close")

    async def broken() -> None:
        raise OSError("cannot connect")

    async def never() -> None:
        log.append("stop of a service that never started")

    assert await sup.enter_context("resource", resource()) == "handle"
    with pytest.raises(OSError):
        await sup.enter("broken", broken, never)
    await sup.stop()
    assert log == ["open", "close"]


async def test_a_failing_stop_step_does_not_stop_the_rest_and_is_raised_after() -> None:
    sup = Supervisor()
    log: list[str] = []

    async def first() -> None:
        log.append("first")

    async def failing() -> None:
        raise RuntimeError("flush failed")

    await sup.enter("first", stop=first)
    await sup.enter("failing", stop=failing)
    with pytest.raises(RuntimeError, match="flush failed"):
        await sup.stop()
    assert log == ["first"]


async def test_a_failing_loop_is_restarted_with_doubling_backoff_counted_and_down_meanwhile() -> None:
    registry, failures, up = _metrics()
    sup = Supervisor(failures, up, initial_backoff_s=0.05, max_backoff_s=0.1)
    runs: list[float] = []
    release = asyncio.Event()

    async def flaky() -> None:
        runs.append(time.monotonic())
        if len(runs) <= 3:
            raise RuntimeError(f"boom {len(runs)}")
        await release.wait()
        await asyncio.Event().wait()

    sup.spawn("flaky", flaky)
    await _until(lambda: sup.down() == ["flaky"])
    assert registry.get_sample_value("t_task_up", {"task": "flaky"}) == 0
    await _until(lambda: len(runs) == 4)
    await _until(lambda: not sup.down())
    gaps = [b - a for a, b in pairwise(runs)]
    # 0.05 s, then doubled to 0.1 s, then held at the 0.1 s ceiling (lower bounds only: a loaded machine adds).
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.1
    assert sup.restarts == {"flaky": 3}
    assert registry.get_sample_value("t_task_failures_total", {"task": "flaky"}) == 3
    assert registry.get_sample_value("t_task_up", {"task": "flaky"}) == 1
    release.set()
    await sup.stop()


async def test_a_per_task_backoff_overrides_the_supervisors() -> None:
    sup = Supervisor(initial_backoff_s=30.0)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    sup.spawn("fast", flaky, backoff_s=(0.01, 0.02))
    await _until(lambda: runs == 2, 1.0)
    await sup.stop()


async def test_an_essential_task_that_fails_is_not_restarted_and_keeps_the_node_not_ready() -> None:
    registry, failures, up = _metrics()
    sup = Supervisor(failures, up, initial_backoff_s=0.01)
    runs = 0

    async def writer() -> None:
        nonlocal runs
        runs += 1
        raise ValueError("disk gone")

    task = sup.spawn("event-writer", writer, essential=True)
    with pytest.raises(ValueError, match="disk gone"):
        await task  # the owner holding the task sees the failure itself
    await asyncio.sleep(0.05)
    assert runs == 1, "an essential task is not restarted"
    assert sup.down() == ["event-writer"]
    assert isinstance(sup.failed["event-writer"], ValueError)
    assert registry.get_sample_value("t_task_failures_total", {"task": "event-writer"}) == 1
    assert registry.get_sample_value("t_task_up", {"task": "event-writer"}) == 0
    await sup.stop()


async def test_an_essential_task_that_finishes_its_work_is_done_not_down() -> None:
    sup = Supervisor()

    async def job() -> None:
        return None

    await sup.spawn("writer", job, essential=True)
    assert sup.down() == []
    await sup.stop()


async def test_every_runs_a_job_periodically_and_a_retired_loop_is_not_restarted() -> None:
    sup = Supervisor(initial_backoff_s=0.01)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        ticks += 1

    sup.every("ticker", 0.01, tick)
    await _until(lambda: ticks >= 3)

    stop = asyncio.Event()
    runs = 0

    async def intake() -> None:
        nonlocal runs
        runs += 1
        await stop.wait()

    task = sup.spawn("intake", intake)
    await _until(lambda: runs == 1)
    sup.retire("intake")
    stop.set()
    await task
    assert runs == 1 and sup.down() == []
    await sup.cancel("ticker")
    assert [t.get_name() for t in sup.running()] == []
    await sup.stop()


async def test_every_task_is_owned_and_none_outlives_stop() -> None:
    before = asyncio.all_tasks()
    sup = Supervisor()

    async def forever() -> None:
        await asyncio.Event().wait()

    async def once() -> None:
        await asyncio.sleep(0)

    sup.spawn("a", forever)
    sup.spawn("b", forever, essential=True)
    sup.every("c", 0.01, once)
    sup.spawn("d", once, restart=False)
    started = asyncio.all_tasks() - before
    assert {t.get_name() for t in started} == {"a", "b", "c", "d"}
    assert set(sup.running()) == started
    with pytest.raises(ValueError, match="running already"):
        sup.spawn("a", forever)
    await sup.stop()
    assert asyncio.all_tasks() - before == set()
    assert all(t.done() for t in started)
