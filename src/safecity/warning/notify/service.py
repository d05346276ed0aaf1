"""NotifyService: pushes `alert.*` messages to live WebSocket clients at once, queues outbox rows for every matching
subscription (committed in batches by an OutboxWriter) and runs the dispatcher.

notify = NotifyService(runtime.engine, runtime.bus, NotifyConfig(...))
await notify.start()   # loads subscriptions, starts writer + dispatcher, subscribes `alert.>` (durable "notify")
...
await notify.stop()    # stops consuming, commits the queued outbox writes, stops delivering
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock, ids
from safecity.kernel.bus import Bus
from safecity.kernel.bus import Subscription as BusSubscription
from safecity.kernel.envelope import Envelope
from safecity.kernel.errors import NotFound
from safecity.kernel.keys import KeyRouter
from safecity.kernel.settings import NotifySettings
from safecity.kernel.supervisor import Supervisor
from safecity.store.engine import write_transaction
from safecity.warning.model import ALERT_RAISED, ALERT_STATE_CHANGED, ALERT_UPDATED, AlertRaised, AlertStateChanged
from safecity.warning.notify import channels, escalation
from safecity.warning.notify import outbox as outbox_module
from safecity.warning.notify.cache import SubscriptionCache
from safecity.warning.notify.channels import ChannelContext, InvalidSubscription
from safecity.warning.notify.delivery import Delivery, Sender
from safecity.warning.notify.mqtt import MqttSender
from safecity.warning.notify.outbox import OutboxDispatcher, RetryPolicy
from safecity.warning.notify.repo import PENDING, OutboxRepo, SubscriptionRepo
from safecity.warning.notify.subscriptions import (
    Subscription,
    SubscriptionCreate,
    SubscriptionPatch,
    matching,
)
from safecity.warning.notify.tasks import TASK_KIND, TaskMessage
from safecity.warning.notify.webhook import HostPolicy, WebhookSender, new_secret
from safecity.warning.notify.websocket import AlertHub
from safecity.warning.notify.writer import OutboxWrite, OutboxWriter

log = structlog.get_logger(__name__)

_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MAX_ESCALATION_LEVEL = 5
_ACKED_MEMORY = 100_000
# Task names (the supervisor's `task` metric label).
WRITER = "notify-writer"
DISPATCHER = "notify-dispatcher"
REFRESH = "notify-refresh"


# The delivery settings are a section of the node's settings (`[notify]`); kept under this name here.
NotifyConfig = NotifySettings


class SubscriptionNotFound(NotFound):
    """No subscription has this id."""

    code = "subscription.not_found"
    message_en = "Subscription {id} was not found."
    message_zh = "未找到订阅 {id}。"


def outbox_id(seed_id: str, subscription_id: str, kind: str) -> str:
    """A deterministic, time-sortable row id: the seed's 48-bit time prefix + a hash (redeliveries collide)."""
    digest = int.from_bytes(hashlib.blake2b(f"{seed_id}|{subscription_id}|{kind}".encode(), digest_size=10).digest())
    tail = "".join(_B32[(digest >> shift) & 31] for shift in range(75, -5, -5))
    return seed_id[:10] + tail


class NotifyService:
    """Delivery of alerts to subscriptions through the durable outbox, plus live WebSocket push."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: Bus,
        config: NotifyConfig | None = None,
        *,
        hub: AlertHub | None = None,
        senders: Mapping[str, Sender] | None = None,
        on_alert_delivered: Callable[[str, datetime], Awaitable[None]] | None = None,
        stamp_alerts: bool = False,
        writer_interval_s: float | None = None,
        writer_max_ops: int = 500,
        writer_queue_size: int = 10_000,
        writer_retry_initial_s: float = 0.05,
        writer_retry_max_s: float = 5.0,
        stop_flush_s: float = 30.0,
        tasks: Supervisor | None = None,
    ) -> None:
        self.engine = engine
        # The node's supervisor owns the writer, dispatcher and refresh loops (used alone, the service owns a
        # supervisor of its own).
        self._tasks = tasks if tasks is not None else Supervisor()
        # Called with (alert id, time) on each delivery, so the alert record can stamp its `delivered` hop.
        self.on_alert_delivered = on_alert_delivered
        # Or: the alert's `delivered` hop is stamped by the writer, in the batch that marks the row delivered.
        self.stamp_alerts = stamp_alerts
        self.stop_flush_s = stop_flush_s
        self.bus = bus
        self.config = config or NotifyConfig()
        cfg = self.config
        self.hub = hub or AlertHub()
        self.policy = HostPolicy(cfg.webhook_allow_hosts, allow_loopback=cfg.allow_loopback)
        self.channel_context = ChannelContext(config=cfg, policy=self.policy, hub=self.hub)
        # One sender per registered channel, built by the channel; `senders` replaces some (tests, plug-ins).
        self._built: dict[str, Sender] = {
            key: channel.sender(self.channel_context) for key, channel in channels.CHANNELS.items()
        }
        default: dict[str, Sender] = {**self._built, **(senders or {})}
        self._subs = SubscriptionCache()
        self._reload_lock = asyncio.Lock()
        self.dispatcher = OutboxDispatcher(
            engine,
            default,
            self.lookup,
            policy=RetryPolicy(
                max_attempts=cfg.max_attempts,
                base_s=cfg.backoff_base_s,
                max_s=cfg.backoff_max_s,
                jitter=cfg.backoff_jitter,
            ),
            retry_initial_s=writer_retry_initial_s,
            retry_max_s=writer_retry_max_s,
            attempt_timeout_s=cfg.attempt_timeout_s,
            attempt_timeout_max_s=cfg.attempt_timeout_max_s,
            lane_batch=cfg.lane_batch,
            in_flight=cfg.lane_in_flight,
            one_at_a_time=[key for key, channel in channels.CHANNELS.items() if channel.in_order],
            poll_interval_s=cfg.poll_interval_s,
            on_delivered=self._delivered,
            record_delivered=self._record_delivered,
        )
        # The bus handler only queues outbox writes; this writer commits them in batches (wakes the dispatcher).
        self.writer = OutboxWriter(
            engine,
            interval_s=cfg.commit_interval_ms / 1000 if writer_interval_s is None else writer_interval_s,
            max_ops=writer_max_ops,
            queue_size=writer_queue_size,
            retry_initial_s=writer_retry_initial_s,
            retry_max_s=writer_retry_max_s,
            on_commit=self._committed,
        )
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._bus_sub: BusSubscription | None = None
        self._writing = False
        self._router = (
            KeyRouter()
            .on(ALERT_RAISED, self._on_raised)
            .on(ALERT_UPDATED, self._on_updated)
            .on(ALERT_STATE_CHANGED, self._on_state_changed)
        )

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load subscriptions, start the outbox writer and the dispatcher, subscribe to `alert.>` (durable)."""
        if self._writing:
            return  # started already
        await self.reload()
        self._tasks.spawn(WRITER, self.writer.run)
        self._writing = True
        # A dispatcher failing on the database restarts fast (leases of rows it held expire and are retried).
        self._tasks.spawn(DISPATCHER, self.dispatcher.run, backoff_s=(0.1, 5.0))
        self._tasks.every(REFRESH, self.config.refresh_s, self.refresh)
        self._bus_sub = await self.bus.subscribe("alert.>", self.handle, durable=self.config.durable)
        log.info("notify_started", subscriptions=len(self._subs))

    async def stop(self) -> None:
        """Stop consuming, commit what is queued for the outbox, stop delivering (undelivered rows stay)."""
        if self._bus_sub is not None:
            await self._bus_sub.stop()
            self._bus_sub = None
        await self._tasks.cancel(DISPATCHER)
        await self._tasks.cancel(REFRESH)
        if self._writing:
            try:
                async with asyncio.timeout(self.stop_flush_s):
                    await self.writer.flush()
            except TimeoutError:
                # The database stayed unreachable: these alerts went to live clients but not to the outbox.
                log.error("notify_stop_flush_timeout", writes_lost=self.writer.queued)
            self.writer.close()
            await self._tasks.cancel(WRITER)
            self._writing = False
        # Senders holding a connection or a client (webhook, MQTT) close it.
        for sender in self._built.values():
            close = getattr(sender, "close", None)
            if close is not None and inspect.iscoroutinefunction(close):
                await close()

    async def refresh(self) -> None:
        """Reload the subscription cache, keeping the cached one when the database cannot be read."""
        try:
            await self.reload()
        except (SQLAlchemyError, OSError) as err:
            # Keep the cached subscriptions; the next refresh tries again.
            log.warning("notify_reload_failed", error=str(err))

    async def reload(self) -> None:
        """Reload the subscription cache from the database (changes made here meanwhile are kept, not undone)."""
        async with self._reload_lock:
            token = self._subs.begin_read()
            try:
                async with self.engine.connect() as conn:
                    subs = await SubscriptionRepo(conn).all()
            except BaseException:
                self._subs.cancel_read(token)
                raise
            self._subs.apply_all(token, subs)

    async def lookup(self, sub_id: str) -> Subscription | None:
        """A subscription from the cache, else from the database (another node may have created it since the last
        reload: its rows must be delivered, not dead-lettered as if it were deleted)."""
        sub = self._subs.get(sub_id)
        if sub is not None:
            return sub
        token = self._subs.begin_read()
        try:
            async with self.engine.connect() as conn:
                found = await SubscriptionRepo(conn).get(sub_id)
        except BaseException:
            self._subs.cancel_read(token)
            raise
        return self._subs.apply_one(token, sub_id, found)

    # --- bus --------------------------------------------------------------------------------------------------

    async def handle(self, envelope: Envelope) -> None:
        """Route one `alert.*` message to the handler of its key (keys not routed here are ignored)."""
        await self._router(envelope)

    async def _on_raised(self, envelope: Envelope, alert: AlertRaised) -> asyncio.Future[None] | None:
        return await self._on_alert(envelope, alert, is_new=True)

    async def _on_updated(self, envelope: Envelope, alert: AlertRaised) -> asyncio.Future[None] | None:
        return await self._on_alert(envelope, alert, is_new=False)

    async def _on_state_changed(self, _envelope: Envelope, change: AlertStateChanged) -> None:
        await self._on_state(change)

    def _committed(self, handed: list[dict[str, Any]], look: bool) -> None:
        """After a writer commit: deliver the rows it leased to this node; look in the table for the others."""
        self.dispatcher.hand(handed)
        if look:
            self.dispatcher.wake()

    async def _record_delivered(
        self, batch: list[tuple[Subscription, Delivery, datetime]]
    ) -> asyncio.Future[None] | None:
        """Queue a lane's delivered marks (and the alerts' `delivered` stamps) into the writer's next batch."""
        stamps: dict[str, datetime] = {}
        if self.stamp_alerts:
            for _sub, delivery, at in batch:
                if delivery.kind == TASK_KIND:
                    continue  # a task message's "alert" column names its incident: no alert to stamp
                if delivery.alert_id not in stamps or at < stamps[delivery.alert_id]:
                    stamps[delivery.alert_id] = at
        write = OutboxWrite(delivered=tuple((d.id, at, d.attempt) for _s, d, at in batch), stamps=stamps)
        if self._writing:
            # Queued for the writer's next commit (shared with other alerts' rows); the dispatcher counts the rows
            # delivered once it is done. A crash before it resends with the same ids (receivers dedupe on them).
            return await self.writer.add(write)
        async with write_transaction(self.engine) as conn:  # not started (tests driving the dispatcher alone)
            await OutboxRepo(conn).mark_delivered_many(write.delivered)
        return None

    async def _on_alert(self, envelope: Envelope, alert: AlertRaised, *, is_new: bool) -> asyncio.Future[None] | None:
        now = clock.now()
        alert_doc = msgspec.to_builtins(alert)
        base = {"type": "new" if is_new else "update", "key": envelope.key, "alert": alert_doc}
        # Live clients first, before and regardless of any database write: the push must not queue behind inserts.
        self.hub.publish_alert(alert, base)
        matched = matching(self._subs.values(), alert)
        rows: list[dict[str, Any]] = []
        for sub in matched:
            rows.append(self._row(envelope.id, sub.id, envelope.key, alert.alert_id, {**base}, now, now))
            due = escalation.escalation_due(sub, now) if is_new else None
            if due is not None and sub.escalate_to and alert.alert_id not in self._acked:
                body = {**base, "type": "escalation", "escalated_from": sub.id, "level": 1}
                rows.append(
                    self._row(envelope.id, sub.escalate_to, escalation.ESCALATED, alert.alert_id, body, due, now)
                )
        if not rows:
            return None
        # Coalesce: an update not yet tried is replaced, so an alert storm costs one message per endpoint.
        coalesce = None if is_new else {**base, "subscription_id": None}
        # Rows due now are inserted leased to this node and handed to the dispatcher after the commit (unless that
        # many wait in memory already: then they wait in the table, due now, and are claimed from there).
        lease_until = None
        if self.dispatcher.handed() + self.writer.leased_queued < outbox_module.HANDED_MAX:
            lease_until = now + timedelta(seconds=self.dispatcher.lease_s())
        write = OutboxWrite(rows=rows, alert_id=alert.alert_id, coalesce_body=coalesce, lease_until=lease_until)
        # The bus acknowledges the message once the rows are committed (the returned future).
        return await self.writer.add(write)

    @staticmethod
    def _row(
        seed: str, sub_id: str, kind: str, alert_id: str, body: dict[str, Any], due: datetime, now: datetime
    ) -> dict[str, Any]:
        return {
            "id": outbox_id(seed, sub_id, kind),
            "subscription_id": sub_id,
            "alert_id": alert_id,
            "kind": kind,
            "body": {**body, "subscription_id": sub_id},
            "state": PENDING,
            "attempts": 0,
            "next_attempt_at": due,
            "last_error": None,
            "created_at": now,
            "delivered_at": None,
        }

    async def send_task(self, task: TaskMessage) -> str:
        """Queue a task message for its subscription through the durable outbox (retried like an alert; a dead one
        keeps its last error); returns the outbox row id. Raises SubscriptionNotFound for an unknown subscription and
        InvalidSubscription for a disabled one."""
        sub = await self.lookup(task.subscription_id)
        if sub is None:
            raise SubscriptionNotFound(id=task.subscription_id)
        if not sub.enabled:
            raise InvalidSubscription(reason=f"subscription {sub.id} is disabled")
        now = clock.now()
        # The outbox's alert column names what the message is about: here the incident.
        row = self._row(task.id, sub.id, TASK_KIND, task.incident_id, task.body(), now, now)
        await self.writer.add(OutboxWrite(rows=[row]))
        log.info("notify_task_enqueued", incident_id=task.incident_id, subscription_id=sub.id)
        return str(row["id"])

    async def _on_state(self, change: AlertStateChanged) -> None:
        self.hub.publish_state({"type": "state", "key": "alert.state_changed", "change": msgspec.to_builtins(change)})
        if escalation.acknowledges(change.state):
            self._acked[change.alert_id] = None
            if len(self._acked) > _ACKED_MEMORY:
                self._acked.popitem(last=False)
            # Same queue as the inserts: the cancellation is applied after the escalation rows it cancels.
            await self.writer.add(OutboxWrite(cancel_escalations_of=change.alert_id, at=clock.now()))
        log.info("notify_state_changed", alert_id=change.alert_id, state=str(change.state))

    async def _delivered(self, sub: Subscription, delivery: Delivery, at: datetime) -> None:
        """Stamp the alert's delivery; after an escalation reached `sub`, schedule the chain's next step."""
        if delivery.kind == TASK_KIND:
            return
        if self.on_alert_delivered is not None:
            try:
                await self.on_alert_delivered(delivery.alert_id, at)
            except Exception:  # bookkeeping must not fail a delivery that happened
                log.exception("alert_delivered_stamp_failed", alert_id=delivery.alert_id)
        if delivery.kind != escalation.ESCALATED or delivery.alert_id in self._acked:
            return
        level = int(delivery.body.get("level", 1))
        due = escalation.escalation_due(sub, at)
        if due is None or not sub.escalate_to or level >= MAX_ESCALATION_LEVEL:
            return
        body = {**delivery.body, "escalated_from": sub.id, "level": level + 1}
        row = self._row(delivery.id, sub.escalate_to, escalation.ESCALATED, delivery.alert_id, body, due, at)
        await self.writer.add(OutboxWrite(rows=[row], alert_id=delivery.alert_id))

    @property
    def webhooks(self) -> WebhookSender:
        """The webhook channel's sender, as built for this service."""
        sender = self._built["webhook"]
        assert isinstance(sender, WebhookSender)
        return sender

    @property
    def mqtt(self) -> MqttSender:
        """The MQTT channel's sender, as built for this service."""
        sender = self._built["mqtt"]
        assert isinstance(sender, MqttSender)
        return sender

    # --- subscriptions ----------------------------------------------------------------------------------------

    def _validate(self, sub: Subscription) -> None:
        channels.component(sub.channel).check_target(sub.target, self.channel_context)
        if (sub.escalate_after_s is None) != (sub.escalate_to is None):
            raise InvalidSubscription(reason="escalate_after_s and escalate_to go together")
        if sub.escalate_to is not None and self._subs.get(sub.escalate_to) is None and sub.escalate_to != sub.id:
            raise InvalidSubscription(reason=f"escalate_to {sub.escalate_to} does not exist")
        if sub.escalate_to == sub.id:
            raise InvalidSubscription(reason="a subscription cannot escalate to itself")

    async def create(self, data: SubscriptionCreate) -> tuple[Subscription, str | None]:
        """Store a subscription; return it and, when one was generated, the webhook secret (shown once)."""
        channel = channels.component(data.channel)
        generated = new_secret() if channel.signed and not data.secret else None
        target = data.target or channel.default_target(self.config)
        sub = Subscription(
            id=ids.new_id(),
            created_at=clock.now(),
            **{**data.model_dump(), "target": target, "secret": data.secret or generated},
        )
        self._validate(sub)
        async with write_transaction(self.engine) as conn:
            await SubscriptionRepo(conn).add(sub)
        self._subs.put(sub)
        log.info("subscription_created", subscription_id=sub.id, channel=str(sub.channel))
        return sub, generated

    def subscriptions(self) -> list[Subscription]:
        """Every subscription (from the cache), oldest first."""
        return sorted(self._subs.values(), key=lambda s: s.id)

    def get(self, sub_id: str) -> Subscription:
        """One subscription, or SubscriptionNotFound."""
        sub = self._subs.get(sub_id)
        if sub is None:
            raise SubscriptionNotFound(id=sub_id)
        return sub

    async def update(self, sub_id: str, patch: SubscriptionPatch) -> Subscription:
        """Apply a partial change."""
        current = self.get(sub_id)
        # The given fields as models (a dumped `filter` would be a dict inside a Subscription: a serializer warning).
        changes = {name: getattr(patch, name) for name in patch.model_fields_set}
        sub = Subscription.model_validate({**current.model_dump(), **changes})
        self._validate(sub)
        async with write_transaction(self.engine) as conn:
            await SubscriptionRepo(conn).replace(sub)
        self._subs.put(sub)
        return sub

    async def delete(self, sub_id: str) -> Subscription:
        """Delete a subscription (its pending rows go dead when their turn comes)."""
        sub = self.get(sub_id)
        async with write_transaction(self.engine) as conn:
            await SubscriptionRepo(conn).delete(sub_id)
        self._subs.remove(sub_id)
        return sub

    async def deliveries(
        self,
        *,
        subscription_id: str | None = None,
        alert_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Outbox rows for inspection (delivery times, retries, dead letters with their last error)."""
        async with self.engine.connect() as conn:
            return await OutboxRepo(conn).rows(
                subscription_id=subscription_id, alert_id=alert_id, state=state, limit=limit
            )
