"""Readiness: every check runs, each under its timeout; failures are reported by error type, never raised."""

from __future__ import annotations

import asyncio
import socket

from safecity.kernel.readiness import LoopsDown, NotReady, readiness, tasks_check, tcp_check


async def _ok() -> None:
    return None


async def _boom() -> None:
    raise ConnectionRefusedError("secret internals: host db-7:5432")


async def _hang() -> None:
    await asyncio.sleep(60)


async def test_ready_when_every_check_passes() -> None:
    report = await readiness({"database": _ok, "bus": _ok})
    assert report.ready is True
    assert report.body()["status"] == "ready"
    assert set(report.checks) == {"database", "bus"}
    assert all(c["ok"] is True and c["ms"] >= 0 for c in report.checks.values())


async def test_a_failing_check_makes_the_node_not_ready_and_names_the_error_only() -> None:
    report = await readiness({"database": _boom, "bus": _ok})
    assert report.ready is False
    assert report.body()["status"] == "not_ready"
    assert report.checks["database"]["ok"] is False
    assert report.checks["database"]["error"] == "ConnectionRefusedError"
    assert "secret" not in str(report.body())
    assert report.checks["bus"]["ok"] is True


async def test_a_hanging_check_times_out_without_holding_the_others() -> None:
    report = await readiness({"broker": _hang, "bus": _ok}, timeout_s=0.05)
    assert report.checks["broker"] == {"ok": False, "error": "TimeoutError", "ms": report.checks["broker"]["ms"]}
    assert report.checks["bus"]["ok"] is True


async def test_loops_down_are_listed() -> None:
    down: list[str] = ["flaky-loop", "device-health"]
    check = tasks_check(lambda: down)
    report = await readiness({"tasks": check})
    assert report.checks["tasks"]["error"] == LoopsDown.__name__
    assert report.checks["tasks"]["down"] == ["flaky-loop", "device-health"]
    assert issubclass(LoopsDown, NotReady)
    down.clear()
    assert (await readiness({"tasks": check})).ready is True


async def test_tcp_check_against_an_open_and_a_closed_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        assert (await readiness({"broker": tcp_check("127.0.0.1", port)})).ready is True
    # Closed now: nothing listens on that port any more.
    report = await readiness({"broker": tcp_check("127.0.0.1", port)})
    assert report.ready is False
    assert report.checks["broker"]["error"] in {"ConnectionRefusedError", "OSError"}
