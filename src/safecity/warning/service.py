"""Warning service: bus events -> rule engine -> `alert.raised` / `alert.updated` on the bus.

The engine work per event is synchronous and small (microseconds); it runs inline in the bus handler, so alerts go out
on the completing event without waiting for storage. Absence / dwell / hold timers are in event time: each event moves
its source's watermark and fires the timers it passes; a timer loop (like sensing/health.py) sleeps until the wall
time at which a silent source's watermark would reach the next deadline (see `Engine` and docs/rules.md). The
backlog (events waiting for the engine) is reported as a gauge and
its peak as a counter, so a storm degrades visibly, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import structlog

from safecity.kernel import clock
from safecity.kernel.bus import Bus, Subscription
from safecity.kernel.envelope import Context, Envelope, Payload, make_envelope
from safecity.kernel.keys import WrongPayload, payload_of, subscribe
from safecity.kernel.supervisor import Supervisor
from safecity.sensing.model import DEVICE_OFFLINE, EVENTS
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning.engine import DEFAULT_LATENESS_S, Engine, EventView, Firing, replay
from safecity.warning.handlers import UnreadableEvent
from safecity.warning.model import ALERT_RAISED, ALERT_UPDATED, AlertRaised, Area, Contributor, Text
from safecity.warning.rules import RulePack

log = structlog.get_logger(__name__)

_SEAL_BYTES = 32  # HMAC-SHA256 in front of every snapshot file

DURABLE = "warning-engine"
BACKLOG_WARN = 1_000
GAUGE_EVERY = 64  # events between two updates of the backlog gauge while a backlog lasts
TIMERS = "warning-timers"


@dataclass
class ServiceStats:
    """Counters of the service (the engine keeps its own: `service.engine.stats`)."""

    handled: int = 0
    raised: int = 0
    updated: int = 0
    errors: int = 0
    backlog: int = 0
    max_backlog: int = 0
    snapshots: int = 0


class WarningService:
    """Runs the rule engine on the bus."""

    def __init__(
        self,
        bus: Bus,
        rules: RulePack,
        *,
        pseudonymizer: Pseudonymizer | None = None,
        source: str = "warning",
        tier: str = "district",
        snapshot_path: str | Path | None = None,
        metrics: Any = None,
        queue_size: int = 100_000,
        now: Callable[[], datetime] = clock.now,
        lateness_s: float = DEFAULT_LATENESS_S,
        place_names: Callable[[str], tuple[str, str] | None] | None = None,
        tasks: Supervisor | None = None,
    ) -> None:
        self.bus = bus
        # The node's supervisor owns the timer loop (used alone, the service owns a supervisor of its own).
        self._tasks = tasks if tasks is not None else Supervisor()
        # Place id -> (zh, en) name: an alert's area is described by name, not id (CAP areaDesc, the API, the feed).
        self.place_names = place_names
        self.pseudonymizer = pseudonymizer
        self.source = source
        self.tier = tier
        self.snapshot_path = Path(snapshot_path) if snapshot_path is not None else None
        self.queue_size = queue_size
        self.now = now
        self.lateness_s = lateness_s
        self.stats = ServiceStats()
        self.restored = False
        self.engine = self._load(rules)
        self._subs: list[Subscription] = []
        self._wake = asyncio.Event()
        self._gauges = _Gauges(metrics, self) if metrics is not None else None

    def _load(self, rules: RulePack) -> Engine:
        if self.snapshot_path is not None and self.snapshot_path.is_file():
            raw = self.snapshot_path.read_bytes()
            seal, data = raw[:_SEAL_BYTES], raw[_SEAL_BYTES:]
            if not hmac.compare_digest(seal, self._seal(data)):
                # The snapshot is a pickle: only a file this node sealed with its own key is ever loaded.
                log.warning("warning_snapshot_refused", path=str(self.snapshot_path), reason="seal does not match")
                return Engine(rules, now=self.now, lateness=self.lateness_s)
            engine = Engine.restore(rules, data, now=self.now, lateness=self.lateness_s)
            log.info(
                "warning_snapshot_restored",
                rules=engine.stats.restored_rules,
                dropped=engine.stats.dropped_rules,
                open_windows=engine.open_windows(),
            )
            # An older snapshot format is not loaded: the windows are rebuilt from stored events instead.
            self.restored = engine.snapshot_loaded
            return engine
        return Engine(rules, now=self.now, lateness=self.lateness_s)

    async def rebuild(self, events: AsyncIterator[EventView]) -> int:
        """Without a snapshot, refill the open windows from stored events (their alerts were raised already).

        Firings during the replay are dropped: they are the alerts of the run before. Returns events replayed.
        """
        if self.restored:
            return 0
        replayed = 0
        batch: list[EventView] = []
        async for ev in events:
            batch.append(ev)
            if len(batch) >= 5_000:
                replay(self.engine, batch)
                replayed += len(batch)
                batch.clear()
                await asyncio.sleep(0)
        replay(self.engine, batch)
        replayed += len(batch)
        log.info("warning_windows_rebuilt", events=replayed, open_windows=self.engine.open_windows())
        return replayed

    async def start(self) -> None:
        """Subscribe to events and device.offline, and start the timer loop."""
        # Events are read at the boundary (`_on_event`): a message on an event key the engine cannot read is
        # refused with its code and counted, never taken for an engine failure.
        self._subs.append(
            await self.bus.subscribe(EVENTS.name, self._on_event, durable=DURABLE, queue_size=self.queue_size)
        )
        self._subs.append(
            await subscribe(
                self.bus, DEVICE_OFFLINE, self._on_message, durable=f"{DURABLE}-offline", queue_size=self.queue_size
            )
        )
        self._tasks.spawn(TIMERS, self.run_timers)
        log.info("warning_started", rules=len(self.engine.rules))

    async def stop(self) -> None:
        """Stop consuming and write a snapshot of every open window."""
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        await self._tasks.cancel(TIMERS)
        self.save_snapshot()
        log.info("warning_stopped", **asdict(self.stats))

    def _seal(self, data: bytes) -> bytes:
        """HMAC-SHA256 of a snapshot under a key derived from the district's secret (a fixed one in tests)."""
        secret = self.pseudonymizer("snapshot-seal", "warning-engine") if self.pseudonymizer else "unsealed"
        return hmac.new(secret.encode(), data, hashlib.sha256).digest()

    def save_snapshot(self) -> None:
        """Write the engine's state atomically (temp file + rename)."""
        if self.snapshot_path is None:
            return
        self.snapshot_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.snapshot_path.with_suffix(".tmp")
        data = self.engine.snapshot()
        tmp.write_bytes(self._seal(data) + data)
        os.replace(tmp, self.snapshot_path)
        self.stats.snapshots += 1

    def reload(self, rules: RulePack) -> None:
        """Swap in a new rule pack, keeping the open windows of every unchanged rule."""
        self.engine = Engine.restore(rules, self.engine.snapshot(), now=self.now, lateness=self.lateness_s)
        self._wake.set()
        log.info("warning_rules_reloaded", rules=len(rules.rules), kept=self.engine.stats.restored_rules)

    def backlog(self) -> int:
        """Events waiting for the engine, over its subscriptions."""
        return sum(s.pending() for s in self._subs)

    async def _on_event(self, envelope: Envelope) -> None:
        try:
            payload_of(EVENTS, envelope)
        except WrongPayload as err:
            self.stats.errors += 1
            log.warning("warning_event_unreadable", key=envelope.key, id=envelope.id, code=err.code)
            return
        await self.handle(envelope)

    async def _on_message(self, envelope: Envelope, _payload: Payload) -> None:
        """A sensor event or a `device.offline` (typed by its key): both go through the engine."""
        await self.handle(envelope)

    async def handle(self, envelope: Envelope) -> None:
        """Run one event through the engine and publish what it fires."""
        backlog = self.backlog()
        self.stats.backlog = backlog
        if backlog > self.stats.max_backlog:
            self.stats.max_backlog = backlog
            if backlog >= BACKLOG_WARN and backlog % BACKLOG_WARN == 0:
                log.warning("warning_backlog", backlog=backlog)
        if self._gauges is not None and (backlog == 0 or not self.stats.handled % GAUGE_EVERY):
            # Sampled (a scrape comes every few seconds); an empty backlog is always shown.
            self._gauges.backlog.set(backlog)
        try:
            event = EventView.from_envelope(envelope)
        except UnreadableEvent as err:
            # Only the decoding of the message is guarded: an error inside the engine is a bug and surfaces.
            self.stats.errors += 1
            log.warning("warning_event_unreadable", key=envelope.key, id=envelope.id, code=err.code)
            return
        firings = self.engine.process(event, self.now().timestamp())
        self.stats.handled += 1
        if firings:
            await self.publish(firings, envelope)
        next_deadline = self.engine.next_deadline()
        if next_deadline is not None and (self._timer_due is None or next_deadline < self._timer_due):
            self._wake.set()

    _timer_due: datetime | None = None

    async def publish(self, firings: list[Firing], cause: Envelope | None = None) -> None:
        """Turn firings into alert messages and publish them."""
        for firing in firings:
            env = self.to_envelope(firing, cause)
            await self.bus.publish(env)
            if firing.new:
                self.stats.raised += 1
            else:
                self.stats.updated += 1
            if self._gauges is not None:
                self._gauges.alerts.labels(firing.rule.id, "raised" if firing.new else "updated").inc()

    def _named(self, area: Area | None) -> Area | None:
        """The area with a place id in its description replaced by the place's names."""
        if area is None or self.place_names is None:
            return area
        names = self.place_names(area.description)
        if names is None:
            return area
        return msgspec.structs.replace(area, description=names[0], description_en=names[1])

    def to_envelope(self, firing: Firing, cause: Envelope | None = None) -> Envelope:
        """Build the `alert.raised` / `alert.updated` envelope of a firing."""
        rule = firing.rule
        fired_at = clock.now()
        hops: dict[str, datetime] = dict(firing.event.hops) if firing.event is not None else {}
        hops["fired"] = fired_at
        description = rule.description or rule.title
        payload = AlertRaised(
            alert_id=firing.alert_id,
            rule_id=rule.id,
            group_key=firing.group_key,
            headline=Text(zh=rule.title.zh, en=rule.title.en),
            description=Text(zh=description.zh, en=description.en),
            category=rule.category,
            severity=rule.severity,
            urgency=rule.urgency,
            certainty=rule.certainty,
            opens_incident=rule.opens_incident,
            tags=firing.tags,
            area=self._named(firing.area),
            trigger_event_ids=firing.trigger_event_ids,
            count=firing.count,
            first_at=firing.first_at,
            last_at=firing.last_at,
            hops=hops,
            trigger_message_id=_message_id(cause) if firing.event is not None else None,
            contributors=[Contributor(device_id=d, event_id=e, at=at) for d, e, at in firing.contributors],
            scope=rule.audience,
        )
        key = ALERT_RAISED if firing.new else ALERT_UPDATED
        context = None
        if cause is not None:
            context = Context(correlation_id=cause.context.correlation_id, parent_id=cause.id)
        elif firing.event is None:
            context = Context(correlation_id=firing.alert_id)
        env = make_envelope(
            key,
            payload,
            source=self.source,
            tier=self.tier,
            occurred_at=firing.last_at,
            received_at=fired_at,
            context=context,
        )
        env.hops.update(hops)
        return env

    async def run_timers(self) -> None:
        """Fire absence / dwell / hold timers as they come due; runs until cancelled."""
        while True:
            self._wake.clear()
            deadline = self.engine.next_deadline()
            self._timer_due = deadline
            if deadline is None:
                await self._wake.wait()
                continue
            delay = (deadline - self.now()).total_seconds()
            if delay <= 0 and self.backlog():
                # Events are waiting: they move their sources' watermarks themselves. Silence is only silence once
                # what arrived has been read, so the wall clock does not run a source on past its queued events.
                delay = 0.05
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, 60.0)):
                        await self._wake.wait()
                continue
            await self.fire_due()

    async def fire_due(self) -> None:
        """Fire the timers that silent sources' watermarks have passed by now, and publish them."""
        firings = self.engine.due(self.now())
        if firings:
            try:
                await self.publish(firings)
            except Exception:
                self.stats.errors += 1
                log.exception("warning_timer_publish_failed", firings=len(firings))

    def status(self) -> dict[str, Any]:
        """Counters of the service and its engine, for /metrics pages and logs."""
        return {
            **asdict(self.stats),
            "backlog": self.backlog(),
            "open_windows": self.engine.open_windows(),
            "engine": asdict(self.engine.stats),
        }


def _message_id(cause: Envelope | None) -> str | None:
    """The sender's message id of the event that completed a firing (sensor events carry one when sent)."""
    if cause is None:
        return None
    message_id = getattr(cause.payload, "message_id", None)
    return message_id if isinstance(message_id, str) else None


class _Suppressed:
    """Collector of `safecity_warning_suppressed_total{rule, reason}`, read from the engine's counters at scrape."""

    def __init__(self, service: WarningService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        """Yield the counter family (the engine keeps the counts; a reload keeps them per unchanged rule)."""
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "safecity_warning_suppressed",
            "Rule matches that raised no alert, by rule and reason (cooldown, suppressed_by).",
            labels=["rule", "reason"],
        )
        for rule_id, reasons in sorted(self.service.engine.stats.suppressed_by_rule.items()):
            for reason, n in sorted(reasons.items()):
                family.add_metric([rule_id, reason], n)
        yield family


class _Gauges:
    """Prometheus metrics of the warning service, registered in the node's registry."""

    def __init__(self, metrics: Any, service: WarningService) -> None:
        from prometheus_client import Counter, Gauge

        r = metrics.registry
        r.register(_Suppressed(service))
        self.backlog = Gauge("safecity_warning_backlog", "Events waiting for the rule engine.", registry=r)
        self.alerts = Counter(
            "safecity_warning_alerts", "Alerts published, by rule and raised/updated.", ["rule", "type"], registry=r
        )
