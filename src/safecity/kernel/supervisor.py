"""One lifecycle for a node: services register their start and stop here, and every background task runs here.

A service is entered (`enter`, `enter_context`, `on_stop`) and its loops are spawned (`spawn`, `every`); `stop()`
undoes everything in the reverse order it was registered, so a service stops before whatever it was started after
(intake before the engine, the engine before the store, the store before the database). A stop step registered after
a service's start runs before the tasks that start spawned are cancelled: the service stops its own loops in the order
it needs (flush, then cancel), and the supervisor cancels whatever is still running afterwards.

A background loop that fails must never leave the node half-alive and still answering "ready": the supervisor
restarts it after a doubling delay (1 s to 30 s, reset once a run has lasted a minute), counts each failure in
`safecity_task_failures_total{task}`, shows `safecity_task_up{task}`, and `down()` names every loop that is not
running, which `/readyz` reports. An *essential* task (the event writer, the dead-letter flusher) is not restarted:
its failure is kept (`failed`), re-raised to whoever holds the task, and makes the node not ready until it stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from prometheus_client import Counter, Gauge

log = structlog.get_logger(__name__)

LoopFactory = Callable[[], Coroutine[Any, Any, Any]]
Step = Callable[[], Awaitable[Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class _Registered:
    """One entry of the shutdown order: a stop callback or a task to cancel."""

    name: str
    stop: Step | None = None
    task: asyncio.Task[None] | None = None


class Supervisor:
    """Owns a node's start/stop order and its background tasks; restarts a loop that fails; reports which are down."""

    def __init__(
        self,
        failures: Counter | None = None,
        up: Gauge | None = None,
        *,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        self._failures = failures
        self._up = up
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy_after_s = healthy_after_s
        self._order: list[_Registered] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()
        self._retiring: set[str] = set()
        self.restarts: dict[str, int] = {}
        # Essential tasks that failed, by name, with their error (they stay down until `stop`).
        self.failed: dict[str, BaseException] = {}

    # --- registration ---------------------------------------------------------------------------------------

    async def enter(self, name: str, start: Step | None = None, stop: Step | None = None) -> None:
        """Run `start()` now and register `stop()` to run at shutdown, before anything registered earlier.

        When `start()` raises, nothing is registered for `name` (tasks it spawned before failing still are).
        """
        if start is not None:
            await start()
        if stop is not None:
            self._order.append(_Registered(name, stop=stop))

    async def enter_context(self, name: str, context: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager now; it is exited at shutdown, in reverse registration order."""
        value = await context.__aenter__()

        async def leave() -> None:
            await context.__aexit__(None, None, None)

        self._order.append(_Registered(name, stop=leave))
        return value

    def on_stop(self, name: str, stop: Step) -> None:
        """Register `stop()` to run at shutdown (for what needs no start, or was started by hand)."""
        self._order.append(_Registered(name, stop=stop))

    def spawn(
        self,
        name: str,
        factory: LoopFactory,
        *,
        restart: bool = True,
        essential: bool = False,
        backoff_s: tuple[float, float] | None = None,
    ) -> asyncio.Task[None]:
        """Run `factory()` as a task owned here.

        By default it is a loop, run again after it fails or returns, after the supervisor's backoff (or this
        task's own `backoff_s` = (first, longest) delay); `restart=False` makes it a one-off job; `essential=True`
        makes it a task the node cannot do without: never restarted, its failure kept in `failed`, shown by
        `down()` and raised from the task. Every task is cancelled by `stop()` in registration order.
        """
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"a task named {name!r} is running already")
        first, longest = backoff_s if backoff_s is not None else (self.initial_backoff_s, self.max_backoff_s)
        task = asyncio.create_task(
            self._supervise(name, factory, restart and not essential, essential, first, longest), name=name
        )
        self._tasks[name] = task
        self._order.append(_Registered(name, task=task))
        self._set_up(name, True)
        return task

    def every(self, name: str, period_s: float, job: Step) -> asyncio.Task[None]:
        """Run `job()` every `period_s` seconds (the first time after one period), as a supervised loop."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(period_s)
                await job()

        return self.spawn(name, loop)

    def retire(self, name: str) -> None:
        """Say that loop `name` is being stopped on purpose: when it returns, it is done, not restarted."""
        self._retiring.add(name)

    async def cancel(self, name: str) -> None:
        """Cancel task `name` now and wait for it (its owner stopping it in its own order); no-op when not running."""
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # --- state ----------------------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Names of the loops not running now (failed and waiting to restart, or essential and failed)."""
        return sorted(self._down)

    def running(self) -> list[asyncio.Task[None]]:
        """The tasks owned here that have not finished."""
        return [t for t in self._tasks.values() if not t.done()]

    def registered(self) -> list[str]:
        """Names in registration order (stop steps and tasks); shutdown walks this list backwards."""
        return [entry.name for entry in self._order]

    # --- shutdown -------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Undo everything in reverse registration order: run each stop step, cancel each task and wait for it.

        A stop step that fails is logged and the rest still run (a half-stopped node would lose buffered data);
        the first failure is raised once every step has run.
        """
        first_error: Exception | None = None
        while self._order:
            entry = self._order.pop()
            if entry.task is not None:
                if self._tasks.get(entry.name) is entry.task:
                    del self._tasks[entry.name]
                entry.task.cancel()
                # return_exceptions collects the task's CancelledError without swallowing a cancellation of stop().
                await asyncio.gather(entry.task, return_exceptions=True)
                continue
            assert entry.stop is not None
            try:
                await entry.stop()
            except Exception as err:
                log.exception("stop_step_failed", step=entry.name)
                first_error = first_error or err
        # Tasks registered by name only (none today) or left behind: nothing outlives the supervisor.
        rest = list(self._tasks.values())
        self._tasks.clear()
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        self._retiring.clear()
        if first_error is not None:
            raise first_error

    # --- internals ------------------------------------------------------------------------------------------

    def _set_up(self, name: str, up: bool) -> None:
        if up:
            self._down.discard(name)
        else:
            self._down.add(name)
        if self._up is not None:
            self._up.labels(name).set(1 if up else 0)

    def _done(self, name: str) -> None:
        """A one-off job ended: not a loop that is down, and no longer shown."""
        self._down.discard(name)
        if self._up is not None:
            self._up.remove(name)

    async def _supervise(
        self, name: str, factory: LoopFactory, restart: bool, essential: bool, first_s: float, longest_s: float
    ) -> None:
        delay = first_s
        while True:
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if self._failures is not None:
                    self._failures.labels(name).inc()
                log.exception("background_task_failed", task=name, error=repr(err), restart=restart, backoff_s=delay)
                if essential:
                    self.failed[name] = err
                    self._set_up(name, False)
                    raise
            else:
                if name in self._retiring:
                    restart = False
                elif restart:
                    log.warning("background_task_exited", task=name, restart_in_s=delay)
            if not restart:  # a one-off job (or an essential task that finished its work): done either way
                self._done(name)
                return
            if time.monotonic() - started >= self.healthy_after_s:
                delay = first_s  # it ran well for a while: this is a new fault, not the same one
            self._set_up(name, False)
            await asyncio.sleep(delay)
            self._set_up(name, True)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log.info("background_task_restarted", task=name, restarts=self.restarts[name])
            delay = min(delay * 2, longest_s)
