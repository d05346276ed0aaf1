"""Helpers for notify tests: alerts, a loopback HTTP receiver, a silent server, waiting on conditions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from safecity.kernel import clock, ids
from safecity.kernel.envelope import make_envelope
from safecity.sensing.model import Tags
from safecity.warning.model import (
    ALERT_RAISED,
    ALERT_STATE_CHANGED,
    AlertRaised,
    AlertState,
    AlertStateChanged,
    Area,
    Category,
    Certainty,
    Circle,
    Severity,
    Text,
    Urgency,
)


def make_alert(
    *,
    severity: Severity = Severity.SEVERE,
    category: Category = Category.FIRE,
    community: str | None = "c-01",
    town: str | None = "t-01",
    area: Area | None = None,
) -> AlertRaised:
    """A smoke alert in community c-01 of town t-01."""
    now = clock.now()
    return AlertRaised(
        alert_id=ids.new_id(),
        rule_id="smoke",
        group_key="b-1",
        headline=Text(zh="烟感报警", en="Smoke alarm"),
        description=Text(zh="3 号楼烟感触发", en="Smoke detector in building 3"),
        category=category,
        severity=severity,
        urgency=Urgency.IMMEDIATE,
        certainty=Certainty.OBSERVED,
        opens_incident=True,
        tags=Tags(town=town, community=community, building="b-1"),
        area=area or Area(description="b-1", circle=Circle(lon=121.47, lat=31.23, radius_m=50)),
        trigger_event_ids=[ids.new_id()],
        count=1,
        first_at=now,
        last_at=now,
        hops={"fired": now},
    )


async def raise_alert(bus: Any, alert: AlertRaised) -> None:
    """Publish `alert.raised`."""
    await bus.publish(make_envelope(ALERT_RAISED, alert, source="test"))


async def acknowledge(bus: Any, alert_id: str) -> None:
    """Publish `alert.state_changed` to acknowledged."""
    change = AlertStateChanged(alert_id=alert_id, state=AlertState.ACKNOWLEDGED, actor="op-1", at=clock.now())
    await bus.publish(make_envelope(ALERT_STATE_CHANGED, change, source="test"))


async def wait_for(check: Callable[[], Awaitable[bool]] | Callable[[], bool], limit_s: float = 30.0) -> None:
    """Poll until `check()` is true (generous timeout: correctness, not speed)."""
    async with asyncio.timeout(limit_s):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


class Inbox:
    """An aiosmtpd handler that keeps every message it receives (`Controller(Inbox(), ...)`)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@dataclass
class Receiver:
    """A loopback HTTP server that records what it receives and answers `status`."""

    port: int
    status: int = 200
    delay_s: float = 0.0  # how long each answer takes
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    active: int = 0  # requests being answered now
    most: int = 0  # the most it answered at once

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}/hook"


@contextlib.asynccontextmanager
async def http_receiver(port: int, status: int = 200, delay_s: float = 0.0) -> AsyncIterator[Receiver]:
    """Run a real uvicorn server on loopback for the duration of the block."""
    receiver = Receiver(port=port, status=status, delay_s=delay_s)

    async def hook(request: Request) -> Response:
        receiver.requests.append((dict(request.headers), await request.body()))
        receiver.active += 1
        receiver.most = max(receiver.most, receiver.active)
        try:
            await asyncio.sleep(receiver.delay_s)
        finally:
            receiver.active -= 1
        return Response(status_code=receiver.status)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started, 10)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts connections and never answers (a hung endpoint)."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


def free_port() -> int:
    """A TCP port free on loopback right now (nothing listens there: a dead endpoint)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
