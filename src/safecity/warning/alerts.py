"""Alerts: store what the engine raises (`alert.raised` / `alert.updated`), run the lifecycle, render CAP.

Lifecycle (one place): new -> acknowledged -> assigned -> resolved; cancelled from any open state; a dispatcher may
assign a new alert directly; resolved and cancelled are closed for good. Every step is stored with its actor,
feedback and time, and published as `alert.state_changed`.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec
import structlog
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock, ids
from safecity.kernel.bus import Bus, Subscription
from safecity.kernel.envelope import Context, Envelope, make_envelope
from safecity.kernel.errors import Conflict
from safecity.kernel.keys import subscribe
from safecity.kernel.supervisor import Supervisor
from safecity.store.alerts import AlertRepo
from safecity.store.engine import write_transaction
from safecity.warning import cap
from safecity.warning.alert_views import (
    FEED_PAGE,
    HOP_ORDER,
    Alert,
    AlertContributor,
    AlertNotFound,
    AlertPage,
    AlertStep,
    FeedPage,
    alert_of_public_id,
    latencies_ms,
    public_id,
)
from safecity.warning.model import (
    ALERT_RAISED,
    ALERT_STATE_CHANGED,
    ALERT_UPDATED,
    AlertRaised,
    AlertState,
    AlertStateChanged,
    Area,
    Audience,
    Category,
    Severity,
    Text,
    Urgency,
)
from safecity.warning.notify.writer import OutboxWrite, OutboxWriter

# The read models live in alert_views (the API imports them from there); named here too for existing callers.
__all__ = [
    "FEED_PAGE",
    "HOP_ORDER",
    "Action",
    "Alert",
    "AlertContributor",
    "AlertNotFound",
    "AlertPage",
    "AlertService",
    "AlertStep",
    "AlertTransitionInvalid",
    "FeedPage",
    "alert_of_public_id",
    "cap_message",
    "latencies_ms",
    "next_state",
    "public_id",
    "row_of",
]

log = structlog.get_logger(__name__)

# Rounds (0.2 s each) a delivered stamp waits for its alert to be stored before it is dropped.
DELIVERED_STAMP_TRIES = 50
DELIVERED_FLUSH_S = 0.2  # how often the delivered stamps noted meanwhile are written
FLUSHER = "alert-delivered-stamps"
STORE_RETRY_S = 120.0  # how long storing an alert is retried through a locked or unreachable database

OPEN_STATES = frozenset({AlertState.NEW, AlertState.ACKNOWLEDGED, AlertState.ASSIGNED})
CLOSED_STATES = frozenset({AlertState.RESOLVED, AlertState.CANCELLED})
MAX_PAGE = 1000
# Every CAP message expires this long after it was sent (CAP `<expires>`); a repeat or a close sends a new one.
ALERT_EXPIRES = timedelta(hours=24)
# The public feed covers alerts changed within this window (older ones leave it; the feed is paged inside it).
FEED_WINDOW = timedelta(days=7)
# CAP 1.2 `restriction` of a Restricted message.
RESTRICTION = "Operations staff only (police, command centre, responders); not for public distribution."


class Action(StrEnum):
    """What a person can do to an alert."""

    ACKNOWLEDGE = "acknowledge"
    ASSIGN = "assign"
    RESOLVE = "resolve"
    CANCEL = "cancel"


# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[Action, tuple[frozenset[AlertState], AlertState]] = {
    Action.ACKNOWLEDGE: (frozenset({AlertState.NEW}), AlertState.ACKNOWLEDGED),
    Action.ASSIGN: (OPEN_STATES, AlertState.ASSIGNED),
    Action.RESOLVE: (frozenset({AlertState.ACKNOWLEDGED, AlertState.ASSIGNED}), AlertState.RESOLVED),
    Action.CANCEL: (OPEN_STATES, AlertState.CANCELLED),
}


class AlertTransitionInvalid(Conflict):
    """The alert's state does not allow this action."""

    code = "alert.invalid_transition"
    title_en = "Not allowed in this state"
    title_zh = "当前状态不允许此操作"
    message_en = "Cannot {action} an alert that is {state}."
    message_zh = "告警处于 {state} 状态，不能执行 {action}。"


def next_state(current: AlertState, action: Action) -> AlertState:
    """Return the state `action` leads to from `current`; AlertTransitionInvalid when it is not allowed."""
    sources, target = TRANSITIONS[action]
    if current not in sources:
        raise AlertTransitionInvalid(action=action.value, state=current.value)
    return target


def _hops_of(raw: dict[str, Any]) -> dict[str, datetime]:
    return {k: (v if isinstance(v, datetime) else datetime.fromisoformat(v)) for k, v in raw.items()}


def _model(row: dict[str, Any], steps: builtins.list[dict[str, Any]] | None = None) -> Alert:
    hops = _hops_of(row["hops"] or {})
    contributors = row.get("contributors") or []
    return Alert.model_validate(
        {
            **row,
            "hops": hops,
            "latency_ms": latencies_ms(hops),
            "steps": steps or [],
            "contributors": contributors,
            "devices": [c["device_id"] for c in contributors],
        },
        from_attributes=False,
    )


def row_of(payload: AlertRaised, *, stored_at: datetime) -> dict[str, Any]:
    """The `alerts` row of a raised/updated alert, with the `stored` hop stamped."""
    hops = {**payload.hops, "stored": stored_at}
    return {
        "id": payload.alert_id,
        "rule_id": payload.rule_id,
        "group_key": payload.group_key,
        "state": AlertState.NEW.value,
        "category": payload.category.value,
        "severity": payload.severity.value,
        "urgency": payload.urgency.value,
        "certainty": payload.certainty.value,
        "headline": msgspec.to_builtins(payload.headline),
        "description": msgspec.to_builtins(payload.description),
        "opens_incident": int(payload.opens_incident),
        "town": payload.tags.town,
        "community": payload.tags.community,
        "building": payload.tags.building,
        "area": msgspec.to_builtins(payload.area) if payload.area is not None else None,
        "trigger_event_ids": list(payload.trigger_event_ids),
        "trigger_message_id": payload.trigger_message_id,
        "contributors": [
            {"device_id": c.device_id, "event_id": c.event_id, "at": c.at.isoformat()} for c in payload.contributors
        ],
        "count": payload.count,
        "first_at": payload.first_at,
        "last_at": payload.last_at,
        "hops": {k: v.isoformat() for k, v in hops.items()},
        "assignee": None,
        "references": None,
        "created_at": stored_at,
        "updated_at": stored_at,
        "scope": payload.scope.value,
    }


def cap_message(
    alert: Alert,
    *,
    sender: str,
    original: Alert | None = None,
    id_of: Callable[[str], str] = str,
) -> cap.CapAlert:
    """The CAP 1.2 message for an alert's current state.

    First raise: msgType Alert, identifier = alert id, sent = first_at. A repeat (count > 1): Update with identifier
    `<id>-u<count>`. Resolved: Update `<id>-resolved` with urgency Past and responseType AllClear. Cancelled: Cancel
    `<id>-cancel`. Updates and cancels reference the original message ("sender,identifier,sent"), which is
    re-derived, so every node renders the same references. `id_of` maps alert ids to the ids shown (the public
    feed's unguessable ids). Every message expires `ALERT_EXPIRES` after it was sent; its scope is the rule's
    audience.
    """
    own = id_of(alert.id)
    refs = [cap.Reference(sender=sender, identifier=own, sent=alert.first_at)]
    if original is not None:
        refs = [cap.Reference(sender=sender, identifier=id_of(original.id), sent=original.first_at), *refs]
    urgency, responses = alert.urgency, []
    if alert.state is AlertState.CANCELLED:
        msg_type, identifier, sent = cap.MsgType.CANCEL, f"{own}-cancel", alert.updated_at
    elif alert.state is AlertState.RESOLVED:
        msg_type, identifier, sent = cap.MsgType.UPDATE, f"{own}-resolved", alert.updated_at
        urgency, responses = Urgency.PAST, ["AllClear"]
    elif alert.count > 1:
        msg_type, identifier, sent = cap.MsgType.UPDATE, f"{own}-u{alert.count}", alert.last_at
    elif original is not None:
        msg_type, identifier, sent, refs = cap.MsgType.UPDATE, own, alert.first_at, refs[:1]
    else:
        msg_type, identifier, sent, refs = cap.MsgType.ALERT, own, alert.first_at, []
    area = msgspec.convert(alert.area, Area) if alert.area else None
    scope = cap.Scope(alert.scope.value)
    return cap.CapAlert(
        identifier=identifier,
        sender=sender,
        sent=sent,
        msg_type=msg_type,
        scope=scope,
        restriction=RESTRICTION if scope is cap.Scope.RESTRICTED else None,
        references=refs,
        infos=cap.bilingual_infos(
            headline=Text(**alert.headline),
            description=Text(**alert.description),
            category=alert.category,
            urgency=urgency,
            severity=alert.severity,
            certainty=alert.certainty,
            area=area,
            parameters=[("safecity:rule", alert.rule_id), ("safecity:count", str(alert.count))],
            expires=sent + ALERT_EXPIRES,
            response_types=responses,
        ),
    )


async def _stamp_hop(repo: AlertRepo, hop: str, times: dict[str, datetime]) -> set[str]:
    """Set `hop` on each stored alert among `times` that does not have it yet (the first time stays); return the ids
    not stored."""
    stored = await repo.hops_of(times)
    await repo.set_hops({a: {**hops, hop: times[a].isoformat()} for a, hops in stored.items() if hop not in hops})
    return times.keys() - stored.keys()


class AlertService:
    """Stores alerts from the bus, moves them through the lifecycle, and renders them as CAP."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: Bus,
        *,
        node_id: str,
        tier: str = "district",
        tasks: Supervisor | None = None,
        writer: OutboxWriter | None = None,
    ) -> None:
        self.engine = engine
        # The alert path's group-commit writer: with it, alerts from the bus are stored in its batches (one
        # transaction for many alerts, their outbox rows and delivered stamps) instead of one transaction each.
        self.writer = writer
        # The node's supervisor owns the stamp flusher (used alone, the service owns a supervisor of its own).
        self._tasks = tasks if tasks is not None else Supervisor()
        self.bus = bus
        self.node_id = node_id
        self.tier = tier
        self.sender = f"safecity@{node_id}"
        self._subs: builtins.list[Subscription] = []
        # Delivered stamps wait here and are written in one transaction a round: one write per delivery fought the
        # event writer for SQLite's lock, and a delivery can overtake the storing of its alert.
        self._delivered: dict[str, tuple[datetime, int]] = {}

    async def start(self) -> None:
        """Subscribe to `alert.raised` and `alert.updated` (durable, so a restart misses nothing)."""
        for key in (ALERT_RAISED, ALERT_UPDATED):
            durable = f"alert-store-{key.name.split('.', 1)[1]}"
            self._subs.append(await subscribe(self.bus, key, self.store_retrying, durable=durable))
        self._tasks.every(FLUSHER, DELIVERED_FLUSH_S, self.flush_delivered)

    async def stop(self) -> None:
        """Stop the subscriptions and write the pending delivered stamps."""
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        await self._tasks.cancel(FLUSHER)
        await self.flush_delivered()

    def note_delivered(self, alert_id: str, at: datetime) -> None:
        """Remember an alert's first delivery; written by the next flush (never blocks a channel)."""
        known = self._delivered.get(alert_id)
        if known is None or at < known[0]:
            self._delivered[alert_id] = (at, known[1] if known else 0)

    async def flush_delivered(self) -> None:
        """Stamp `delivered` on every noted alert in one transaction; alerts not stored yet wait for the next round."""
        if not self._delivered:
            return
        batch, self._delivered = self._delivered, {}
        waiting: dict[str, tuple[datetime, int]]
        try:
            async with write_transaction(self.engine) as conn:
                missing = await _stamp_hop(AlertRepo(conn), "delivered", {a: at for a, (at, _) in batch.items()})
            waiting = {a: (batch[a][0], batch[a][1] + 1) for a in missing if batch[a][1] < DELIVERED_STAMP_TRIES}
        except Exception:  # locked or unreachable database: keep every stamp for the next round
            log.warning("alert_delivered_stamps_deferred", alerts=len(batch), exc_info=True)
            waiting = batch
        for alert_id, (at, tries) in waiting.items():
            newer = self._delivered.get(alert_id)  # noted again during the flush: keep the earlier time
            self._delivered[alert_id] = (min(at, newer[0]) if newer else at, tries)

    async def store_retrying(self, _envelope: Envelope, alert: AlertRaised) -> asyncio.Future[None] | None:
        """Store one `alert.raised` / `alert.updated` (idempotent: upsert by alert id), retrying with backoff.

        With the alert path's writer, the row goes into its next group commit (which retries transient failures
        itself) and the commit's future is returned: the bus acknowledges the message once the row is durable.
        Without it, one transaction; a locked or unreachable database is retried for up to `STORE_RETRY_S`: a failed
        handler would otherwise leave the alert delivered but never stored.
        """
        if self.writer is not None and self.writer.running:
            row = row_of(alert, stored_at=clock.now())  # the writer stamps `stored` with its commit's time
            return await self.writer.add(OutboxWrite(alert_row=row, alert_id=alert.alert_id))
        delay, waited = 0.05, 0.0
        while True:
            try:
                await self.store(alert)
                return None
            except (OperationalError, OSError) as err:
                if waited >= STORE_RETRY_S:
                    raise
                log.warning("alert_store_retry", alert_id=alert.alert_id, retry_in_s=delay, error=str(err))
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)

    async def store(self, payload: AlertRaised, *, stored_at: datetime | None = None) -> None:
        """Insert or move forward one alert (same id: count, last_at and hops move; lifecycle stays)."""
        row = row_of(payload, stored_at=stored_at or clock.now())
        async with write_transaction(self.engine) as conn:
            await AlertRepo(conn).upsert(row)
        log.info("alert_stored", alert_id=payload.alert_id, rule_id=payload.rule_id, count=payload.count)

    async def stamp_hop(self, alert_id: str, hop: str, at: datetime | None = None) -> None:
        """Record the time an alert passed a hop (e.g. `delivered`, stamped by the first channel that delivers)."""
        async with write_transaction(self.engine) as conn:
            if await _stamp_hop(AlertRepo(conn), hop, {alert_id: at or clock.now()}):
                raise AlertNotFound(id=alert_id)

    async def get(self, alert_id: str) -> Alert:
        """Return one alert with its steps; AlertNotFound when absent."""
        async with self.engine.connect() as conn:
            repo = AlertRepo(conn)
            row = await repo.get(alert_id)
            if row is None:
                raise AlertNotFound(id=alert_id)
            steps = await repo.steps(alert_id)
        return _model(row, steps)

    async def list(
        self,
        *,
        state: AlertState | None = None,
        severity: Severity | None = None,
        category: Category | None = None,
        town: str | None = None,
        community: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> AlertPage:
        """Return one page of alerts (newest first) matching the filters."""
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        async with self.engine.connect() as conn:
            rows, total = await AlertRepo(conn).list(
                states=[state.value] if state is not None else None,
                severity=severity.value if severity is not None else None,
                category=category.value if category is not None else None,
                town=town,
                community=community,
                since=since,
                limit=limit,
                offset=offset,
            )
        return AlertPage(items=[_model(r) for r in rows], total=total, limit=limit, offset=offset)

    async def acknowledge(self, alert_id: str, actor: str, feedback: str | None = None) -> Alert:
        """new -> acknowledged."""
        return await self.transition(alert_id, Action.ACKNOWLEDGE, actor, feedback=feedback)

    async def assign(self, alert_id: str, actor: str, assignee: str, feedback: str | None = None) -> Alert:
        """Any open state -> assigned (to `assignee`)."""
        return await self.transition(alert_id, Action.ASSIGN, actor, feedback=feedback, assignee=assignee)

    async def resolve(self, alert_id: str, actor: str, feedback: str) -> Alert:
        """acknowledged | assigned -> resolved, with the responder's feedback."""
        return await self.transition(alert_id, Action.RESOLVE, actor, feedback=feedback)

    async def resolve_handled(self, alert_id: str, actor: str, feedback: str) -> Alert:
        """Resolve an alert whose incident was handled and closed, acknowledging it first when nobody had."""
        if (await self.get(alert_id)).state is AlertState.NEW:
            await self.acknowledge(alert_id, actor, "its incident was handled")
        return await self.resolve(alert_id, actor, feedback)

    async def cancel(self, alert_id: str, actor: str, reason: str) -> Alert:
        """Any open state -> cancelled (a false alarm, a duplicate ...), with the reason."""
        return await self.transition(alert_id, Action.CANCEL, actor, feedback=reason)

    async def transition(
        self,
        alert_id: str,
        action: Action,
        actor: str,
        *,
        feedback: str | None = None,
        assignee: str | None = None,
    ) -> Alert:
        """Apply one action: validate, store the state and its step in one transaction, then publish."""
        at = clock.now()
        async with write_transaction(self.engine) as conn:
            repo = AlertRepo(conn)
            row = await repo.get(alert_id, for_update=True)
            if row is None:
                raise AlertNotFound(id=alert_id)
            current = AlertState(row["state"])
            target = next_state(current, action)
            # Compare-and-set: a concurrent step on SQLite (no row locks) makes this one fail, not both win.
            if not await repo.set_state(alert_id, expected=current.value, state=target.value, at=at, assignee=assignee):
                raise AlertTransitionInvalid(action=action.value, state="changed meanwhile")
            await repo.add_step(
                {
                    "id": ids.new_id(),
                    "alert_id": alert_id,
                    "state": target.value,
                    "actor": actor,
                    "at": at,
                    "feedback": feedback,
                    "assignee": assignee,
                }
            )
        change = AlertStateChanged(
            alert_id=alert_id, state=target, actor=actor, at=at, feedback=feedback, assignee=assignee
        )
        envelope = make_envelope(
            ALERT_STATE_CHANGED,
            change,
            source=self.node_id,
            tier=self.tier,
            occurred_at=at,
            received_at=at,
            context=Context(correlation_id=alert_id, actor=actor),
        )
        await self.bus.publish(envelope)
        log.info("alert_state_changed", alert_id=alert_id, state=target.value, action=action.value)
        return await self.get(alert_id)

    async def cap_of(self, alert_id: str) -> cap.CapAlert:
        """The CAP 1.2 message of one alert's current public state."""
        alert = await self.get(alert_id)
        original = None
        if alert.references:
            original = await self.get(alert.references)
        return cap_message(alert, sender=self.sender, original=original)

    async def public_cap_of(self, alert_id: str, *, id_of: Callable[[str], str]) -> cap.CapAlert:
        """The CAP message of a Public alert for the public feed; AlertNotFound for any other alert."""
        alert = await self.get(alert_id)
        if alert.scope is not Audience.PUBLIC:
            raise AlertNotFound(id=alert_id)  # not "forbidden": the public side does not learn it exists
        original = await self.get(alert.references) if alert.references else None
        return cap_message(alert, sender=self.sender, original=original, id_of=id_of)

    async def feed(
        self,
        *,
        id_of: Callable[[str], str] = str,
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = FEED_PAGE,
    ) -> FeedPage:
        """One page of the public CAP feed: Public alerts changed since `since` (default: `FEED_WINDOW` ago), each
        as its current message (Alert, Update, resolved Update or Cancel), newest change first."""
        since = since or clock.now() - FEED_WINDOW
        async with self.engine.connect() as conn:
            rows = await AlertRepo(conn).feed_page(
                scope=Audience.PUBLIC.value, since=since, before=before, after=after, limit=limit + 1
            )
        # One row more than the page tells whether another page lies beyond it in the direction read.
        more = len(rows) > limit
        if after is not None and before is None:
            rows = rows[-limit:] if more else rows
            has_newer, has_older = more, True
        else:
            rows = rows[:limit]
            has_older, has_newer = more, before is not None
        entries = [(a, cap_message(a, sender=self.sender, id_of=id_of)) for a in (_model(r) for r in rows)]
        return FeedPage(entries=entries, has_older=has_older, has_newer=has_newer)
