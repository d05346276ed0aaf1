"""Readiness: named checks run together, each under a timeout, into one report (what `/readyz` answers).

A check is an async callable that returns when its dependency is ready and raises when it is not. The report names
each check with `ok`, its time in ms and, on failure, the error type only (never internals); a `NotReady` error
may list what is down (`down`, e.g. the background loops that are not running).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from pydantic import BaseModel, Field

log = structlog.get_logger(__name__)

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 2.0


class NotReady(Exception):
    """A dependency answered but is not ready; `down` names the parts that are not (shown in the report)."""

    def __init__(self, down: Iterable[str] = ()) -> None:
        self.down = list(down)
        super().__init__(", ".join(self.down))


class Readiness(BaseModel):
    """The report: ready when every check passed; one entry a check."""

    ready: bool
    checks: dict[str, dict[str, Any]] = Field(description="Per check: ok, ms, and on failure error (and down).")

    def body(self) -> dict[str, Any]:
        """The `/readyz` JSON body."""
        return {"status": "ready" if self.ready else "not_ready", "checks": self.checks}


async def _run(name: str, check: Check, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            await check()
    except Exception as err:
        # A probe reports failures; it must not raise. The reason is the error type only (no internals).
        log.warning("readiness_check_failed", check=name, error=type(err).__name__)
        report: dict[str, Any] = {
            "ok": False,
            "error": type(err).__name__,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if isinstance(err, NotReady):
            report["down"] = err.down
        return report
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


async def readiness(checks: Mapping[str, Check], *, timeout_s: float = CHECK_TIMEOUT_S) -> Readiness:
    """Run every check at once (each under `timeout_s`) and report."""
    names = list(checks)
    results = await asyncio.gather(*(_run(n, checks[n], timeout_s) for n in names))
    return Readiness(ready=all(r["ok"] for r in results), checks=dict(zip(names, results, strict=True)))


class LoopsDown(NotReady):
    """Supervised background loops are not running (failed and waiting to restart, or ended)."""


def tasks_check(down: Callable[[], Iterable[str]]) -> Check:
    """A check that fails with `LoopsDown` while `down()` names any loop."""

    async def check() -> None:
        names = list(down())
        if names:
            raise LoopsDown(names)

    return check


def tcp_check(host: str, port: int) -> Check:
    """A check that passes when a TCP connection to host:port opens (a broker answering)."""

    async def check() -> None:
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()

    return check
