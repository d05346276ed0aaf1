"""The command centre's live channel: one WebSocket carrying incidents, responders, alerts and devices as they
change, numbered so a client that reconnects resumes where it stopped (or is told to reload its state).

Protocol (JSON text messages, server to client):
  {"type": "hello", "epoch": E, "seq": S, "resync": bool}   first; resync=true: reload state over HTTP, then apply
  {"type": "event", "seq": n, "key": "incident.changed", "at": ISO time, "data": {...}}   n = previous + 1
  {"type": "ping", "seq": S}                                  every PING_S seconds while quiet
A client reconnects with `?after=<last seq>&epoch=<E>`; a gap in `seq` (never sent by the server) means reconnect.
Auth as `/api/v1/alerts/live`: subprotocols `safecity, bearer.<key>` from a browser, or the key headers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect, status

from safecity.api.deps import KeysDep, LiveFeedDep
from safecity.api.notify import LIVE_PROTOCOL, principal_of
from safecity.sharing.principal import Role

router = APIRouter(prefix="/api/v1", tags=["live"])

# Every role that may read incidents, responders and alerts over HTTP may follow them live.
FEED_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER, Role.READER})
PING_S = 15.0


@router.websocket("/live")
async def live(
    websocket: WebSocket,
    feed: LiveFeedDep,
    keys: KeysDep,
    after: Annotated[int | None, Query(ge=0, description="The last sequence number this client applied.")] = None,
    epoch: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9a-f]*$")] = None,
) -> None:
    """Incidents, responders, alerts and devices as they change, sequence-numbered and resumable."""
    principal = await principal_of(websocket, keys, None)
    if principal is None or principal.role not in FEED_ROLES:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=LIVE_PROTOCOL if LIVE_PROTOCOL in offered else None)
    client = feed.connect(after=after, epoch=epoch)

    async def pump() -> None:
        await websocket.send_json(client.hello)
        while True:
            message: dict[str, Any]
            try:
                async with asyncio.timeout(PING_S):
                    message = await client.queue.get()
            except TimeoutError:
                message = {"type": "ping", "seq": feed.seq}
            await websocket.send_json(message)

    async def dropped() -> None:
        await client.dropped.wait()
        # Too far behind: close, so the client reconnects and resumes from its last sequence number.
        await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER)

    sender = asyncio.create_task(pump(), name=f"live-feed-{client.id}")
    watcher = asyncio.create_task(dropped(), name=f"live-feed-drop-{client.id}")
    try:
        while True:  # reading is how we learn the client left; what it sends is ignored
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        feed.disconnect(client)
        for task in (sender, watcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
