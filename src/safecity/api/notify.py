"""Subscriptions CRUD (admin, operator; secrets never returned) and the live alert WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, WebSocket, WebSocketDisconnect, status
from pydantic import BaseModel

from safecity.api.auth import require
from safecity.api.deps import KeysDep, NotifyDep
from safecity.api.ports import Keys
from safecity.api.problems import PROBLEM_RESPONSES
from safecity.sharing.principal import Principal, Role
from safecity.warning.model import Category, Severity
from safecity.warning.notify.channels import ChannelKey
from safecity.warning.notify.channels import websocket as websocket_channel
from safecity.warning.notify.subscriptions import (
    Locale,
    Subscription,
    SubscriptionCreate,
    SubscriptionFilter,
    SubscriptionPatch,
    masked_target,
)

SubId = Annotated[str, Path(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$", description="Subscription id.")]
Manager = Annotated[Principal, require(Role.OPERATOR)]
LIVE_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER})
# The live socket's subprotocol; a client offers it beside `bearer.<key>` and the server selects it (RFC 6455
# §4.2.2: the server answers with one offered protocol, so the key is never echoed in the response headers).
LIVE_PROTOCOL = "safecity"
BEARER_PROTOCOL_PREFIX = "bearer."

router = APIRouter(prefix="/api/v1", tags=["notify"], responses=PROBLEM_RESPONSES)


class SubscriptionView(BaseModel):
    """A subscription as the API shows it: target masked, secret never included."""

    id: str
    name: str
    channel: ChannelKey
    target: str
    has_secret: bool
    filter: SubscriptionFilter
    locale: Locale
    escalate_after_s: float | None
    escalate_to: str | None
    enabled: bool
    created_at: datetime

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionView:
        """Build the public view."""
        return cls(
            id=sub.id,
            name=sub.name,
            channel=sub.channel,
            target=masked_target(sub.channel, sub.target),
            has_secret=bool(sub.secret),
            filter=sub.filter,
            locale=sub.locale,
            escalate_after_s=sub.escalate_after_s,
            escalate_to=sub.escalate_to,
            enabled=sub.enabled,
            created_at=sub.created_at,
        )


class SubscriptionCreated(SubscriptionView):
    """The created subscription; `secret` holds a generated webhook secret, shown this once."""

    secret: str | None = None


class DeliveryView(BaseModel):
    """One outbox row: where a message stands (pending, delivered, dead, cancelled)."""

    id: str
    subscription_id: str
    alert_id: str
    kind: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@router.post("/subscriptions", response_model=SubscriptionCreated, status_code=201, summary="Create a subscription")
async def create_subscription(body: SubscriptionCreate, notify: NotifyDep, _: Manager) -> SubscriptionCreated:
    """Create a subscription; a webhook without a secret gets one, returned only in this response."""
    sub, secret = await notify.create(body)
    return SubscriptionCreated(**SubscriptionView.of(sub).model_dump(), secret=secret)


@router.get("/subscriptions", response_model=list[SubscriptionView], summary="List subscriptions")
async def list_subscriptions(notify: NotifyDep, _: Manager) -> list[SubscriptionView]:
    """Every subscription (targets masked, no secrets)."""
    return [SubscriptionView.of(s) for s in notify.subscriptions()]


@router.get("/subscriptions/{sub_id}", response_model=SubscriptionView, summary="Get a subscription")
async def get_subscription(notify: NotifyDep, sub_id: SubId, _: Manager) -> SubscriptionView:
    """One subscription."""
    return SubscriptionView.of(notify.get(sub_id))


@router.patch("/subscriptions/{sub_id}", response_model=SubscriptionView, summary="Change a subscription")
async def patch_subscription(body: SubscriptionPatch, notify: NotifyDep, sub_id: SubId, _: Manager) -> SubscriptionView:
    """Change some fields of a subscription."""
    return SubscriptionView.of(await notify.update(sub_id, body))


@router.delete("/subscriptions/{sub_id}", response_model=SubscriptionView, summary="Delete a subscription")
async def delete_subscription(notify: NotifyDep, sub_id: SubId, _: Manager) -> SubscriptionView:
    """Delete a subscription."""
    return SubscriptionView.of(await notify.delete(sub_id))


@router.get(
    "/subscriptions/{sub_id}/deliveries", response_model=list[DeliveryView], summary="Deliveries of a subscription"
)
async def list_deliveries(
    notify: NotifyDep,
    sub_id: SubId,
    _: Manager,
    state: Annotated[str | None, Query(pattern="^(pending|delivered|dead|cancelled)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryView]:
    """Outbox rows of a subscription, newest first (dead letters carry their last error)."""
    notify.get(sub_id)
    rows = await notify.deliveries(subscription_id=sub_id, state=state, limit=limit)
    return [DeliveryView.model_validate({k: v for k, v in r.items() if k != "body"}) for r in rows]


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _offered_bearer(websocket: WebSocket) -> str | None:
    """The key of a `bearer.<key>` subprotocol the client offered, if any."""
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.lower().startswith(BEARER_PROTOCOL_PREFIX):
            return str(protocol[len(BEARER_PROTOCOL_PREFIX) :])
    return None


async def principal_of(websocket: WebSocket, keys: Keys, key: str | None) -> Principal | None:
    """The caller of a WebSocket: a `bearer.<key>` subprotocol, the key headers, or `?key=`; None when unknown."""
    header = websocket.headers.get("x-api-key")
    auth = websocket.headers.get("authorization", "")
    bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    token = _offered_bearer(websocket) or header or bearer or key
    if not token:
        return None
    return await keys.verify(token)


@router.websocket("/alerts/live")
async def alerts_live(
    websocket: WebSocket,
    service: NotifyDep,
    keys: KeysDep,
    key: Annotated[
        str | None, Query(description="Deprecated: an API key in the URL (redacted from logs; prefer a header).")
    ] = None,
    subscription: str | None = None,
    min_severity: Severity = Severity.UNKNOWN,
    categories: str | None = None,
    towns: str | None = None,
    communities: str | None = None,
) -> None:
    """Live alerts as JSON messages; roles operator/dispatcher/responder.

    Auth, best first: the subprotocols `safecity, bearer.<key>` (`new WebSocket(url, ["safecity", "bearer." + key])`
    in a browser; the server selects `safecity`, never echoing the key), `X-API-Key` or `Authorization: Bearer`
    headers (non-browser clients), or `?key=` (kept for old clients; redacted from every log line).

    Without `subscription`, alerts passing the query filter are pushed as they happen. With `subscription=<id>` of a
    stored `websocket` subscription, this connection receives that subscription's outbox deliveries (durable:
    anything missed while disconnected is retried until a client is back).
    """
    principal = await principal_of(websocket, keys, key)
    if principal is None or principal.role not in LIVE_ROLES:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    try:
        flt = SubscriptionFilter(
            min_severity=min_severity,
            categories=[Category(c) for c in _split(categories)],
            towns=_split(towns),
            communities=_split(communities),
        )
        if subscription is not None:
            sub = service.get(subscription)
            if sub.channel != websocket_channel.CHANNEL.key:
                raise ValueError("not a websocket subscription")
    except Exception:
        # Bad filter or unknown subscription: refuse the socket (a WebSocket has no problem+json body).
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=LIVE_PROTOCOL if LIVE_PROTOCOL in offered else None)
    client = service.hub.connect(flt, subscription_id=subscription, actor=principal.key_id)
    if subscription is not None:
        service.dispatcher.wake()

    async def pump() -> None:
        while True:
            message: dict[str, Any] = await client.queue.get()
            await websocket.send_json(message)

    sender = asyncio.create_task(pump(), name=f"live-{client.id}")
    try:
        # Reading is how we learn the client left; anything it sends is ignored.
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        service.hub.disconnect(client)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
