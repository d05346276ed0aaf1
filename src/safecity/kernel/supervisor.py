"""Supervision of a node's long-running tasks: a loop that dies is logged, counted, restarted with backoff.

A background loop that fails must never leave the node half-alive and still answering "ready": the supervisor
restarts it after a doubling delay (1 s to 30 s, reset once a run has lasted a minute), counts each failure in
`safecity_task_failures_total{task}`, shows `safecity_task_up{task}`, and `down()` names every loop that is not
running, which `/readyz` reports. Tasks that components run themselves (the event writer, the dead-letter flusher)
are `watch`ed: they are not restarted here, but a dead one makes the node not ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

log = structlog.get_logger(__name__)

LoopFactory = Callable[[], Coroutine[Any, Any, Any]]


class Supervisor:
    """Runs named loops, restarting one that fails; reports which are down."""

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
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._down: set[str] = set()
        self._watched: dict[str, Callable[[], asyncio.Task[Any] | None]] = {}
        self._retiring: set[str] = set()
        self.restarts: dict[str, int] = {}

    def spawn(self, name: str, factory: LoopFactory, *, restart: bool = True) -> asyncio.Task[None]:
        """Run `factory()` supervised: run again after it fails or returns (a one-off job: `restart=False`)."""
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"a task named {name!r} is running already")
        task = asyncio.create_task(self._supervise(name, factory, restart), name=name)
        self._tasks[name] = task
        self._set_up(name, True)
        return task

    def retire(self, name: str) -> None:
        """Say that loop `name` is being stopped on purpose: when it returns, it is done, not restarted."""
        self._retiring.add(name)

    def watch(self, name: str, task: Callable[[], asyncio.Task[Any] | None]) -> None:
        """Report a component's own task (given by a getter, as components replace theirs) as down once it ends."""
        self._watched[name] = task

    def down(self) -> list[str]:
        """Names of the loops not running now (failed and waiting to restart, or watched and ended)."""
        names = set(self._down)
        for name, getter in self._watched.items():
            task = getter()
            if task is None or task.done():
                names.add(name)
        return sorted(names)

    async def stop(self) -> None:
        """Cancel every supervised loop and wait for them."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        # return_exceptions collects the loops' CancelledErrors without swallowing a cancellation of stop() itself.
        await asyncio.gather(*tasks, return_exceptions=True)

    def _set_up(self, name: str, up: bool) -> None:
        if up:
            self._down.discard(name)
        else:
            self._down.add(name)
        if self._up is not None:
            self._up.labels(name).set(1 if up else 0)

    async def _supervise(self, name: str, factory: LoopFactory, restart: bool) -> None:
        delay = self.initial_backoff_s
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
            else:
                if name in self._retiring:
                    restart = False
                elif restart:
                    log.warning("background_task_exited", task=name, restart_in_s=delay)
            if not restart:  # a one-off job: done either way, and not a loop that is down
                self._down.discard(name)
                if self._up is not None:
                    self._up.remove(name)
                return
            if time.monotonic() - started >= self.healthy_after_s:
                delay = self.initial_backoff_s  # it ran well for a while: this is a new fault, not the same one
            self._set_up(name, False)
            await asyncio.sleep(delay)
            self._set_up(name, True)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log.info("background_task_restarted", task=name, restarts=self.restarts[name])
            delay = min(delay * 2, self.max_backoff_s)
