"""The NATS JetStream bus: the same `Bus` protocol as the in-process bus, durable and shared between processes.

Every envelope is one JetStream message on subject `[<subject_prefix>.]<envelope.key>`, with `Nats-Msg-Id` set to
the envelope id so the stream drops repeats inside its duplicate window (safe retries, store-and-forward catch-up).
Subscriptions are pull consumers with explicit acks, driven by our own pull loop: one outstanding pull request per
subscription, messages handled as they arrive (nats-py's `fetch` waits for a full batch, which would add latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as _RawSubscription
from nats.js import JetStreamContext, api

from safecity.kernel.bus import Bus, BusStats, Handler, OverflowHook
from safecity.kernel.envelope import Envelope, decode, encode
from safecity.kernel.errors import ServiceUnavailable

log = structlog.get_logger(__name__)

DEFAULT_SUBJECTS = ("event.>", "device.>", "alert.>", "incident.>", "responder.>", "deadletter.>")
MSG_ID_HEADER = "Nats-Msg-Id"
# JetStream names may not contain '.', '*', '>', whitespace or path separators.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
# Pull-request status codes (JetStream ADR-13).
_STATUS_HEARTBEAT = "100"
_STATUS_DONE = ("404", "408", "409")
SETTLE_WAIT_S = 10.0  # how long a stopping worker waits for acks deferred to a handler's group commit


def _check_name(kind: str, value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"invalid {kind} name {value!r}: use letters, digits, '-' and '_'")
    return value


class NatsSubscription:
    """One worker on a JetStream pull consumer: a pull loop feeding the handler, acking after success.

    At most one pull request is open at a time. `stop()` lets it end (filled, or expired after `pull_expires_s`)
    before handing unhandled messages back with a nak: a nak while our request is still open would send the message
    straight back to us, and it would then sit unacked until `ack_wait` ran out.
    """

    def __init__(
        self,
        bus: NatsBus,
        pattern: str,
        name: str,
        consumer: str,
        handler: Handler,
        *,
        durable: bool,
        batch: int,
    ) -> None:
        self.bus = bus
        self.pattern = pattern
        self.name = name
        self.consumer = consumer
        self.durable = durable
        self._handler = handler
        self._batch = batch
        self._inbox: asyncio.Queue[Msg] = asyncio.Queue()
        self._handback: list[Msg] = []
        self._settling: set[asyncio.Task[None]] = set()  # acks waiting for their handler's settle future
        self._sub: _RawSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._requested = 0
        self._request_open = False
        self._last_pull = 0.0
        self._last_pending = 0

    async def _on_msg(self, msg: Msg) -> None:
        self._inbox.put_nowait(msg)

    async def start(self) -> None:
        """Subscribe our reply inbox, send the first pull request, and start the loop."""
        nc = self.bus._conn()
        self._sub = await nc.subscribe(nc.new_inbox(), cb=self._on_msg)
        await self._pull()
        self._task = asyncio.create_task(self._run(), name=f"nats-sub-{self.name}")

    async def _pull(self) -> None:
        assert self._sub is not None
        request = {"batch": self._batch, "expires": int(self.bus.pull_expires_s * 1e9)}
        self._last_pull = time.monotonic()
        self._requested = self._batch
        self._request_open = True
        await self.bus._conn().publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.bus.stream}.{self.consumer}",
            json.dumps(request).encode(),
            reply=self._sub.subject,
        )

    def _take(self, msg: Msg) -> bool:
        """Account for one arrival; return True when it is a message to handle (not a status)."""
        status = msg.headers.get(api.Header.STATUS) if msg.headers else None
        if status is None:
            self._requested -= 1
            if self._requested <= 0:
                self._request_open = False
            return True
        if status in _STATUS_DONE:
            self._request_open = False
            if status == "409":
                log.warning("bus_pull_refused", subscription=self.name, status=status)
        return False

    async def _run(self) -> None:
        # Wait a little longer than the pull request lives: a missing 408 means the request was lost (reconnect).
        idle_timeout = self.bus.pull_expires_s + 2.0
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    msg = await self._inbox.get()
            except TimeoutError:
                await self._pull()
                continue
            is_message = self._take(msg)
            if not self._request_open:
                if not is_message and msg.headers and msg.headers.get(api.Header.STATUS) == "409":
                    # Refused (consumer deleted, too many waiting pulls): back off instead of spinning.
                    await asyncio.sleep(max(self.bus.redelivery_delay_s, 0.1))
                # Ask for the next batch before handling this message, so the server can send while we work.
                await self._pull()
            if is_message:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        bus = self.bus
        stats = bus.stats
        meta = msg.metadata
        self._last_pending = meta.num_pending or 0
        try:
            envelope = decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError):
            # Poison bytes can never succeed: stop redelivering them.
            stats.handler_errors += 1
            log.exception("bus_message_undecodable", subscription=self.name, subject=msg.subject)
            await msg.term()
            return
        try:
            settle = await self._handler(envelope)
        except asyncio.CancelledError:
            # Stopped mid-message: `stop()` hands it back once our pull request has ended.
            self._handback.append(msg)
            raise
        except Exception:
            await self._failed(msg, envelope)
            return
        if settle is not None and not settle.done():
            # Acknowledged once the handler's future is done (its group commit), while we go on to the next message.
            task = asyncio.create_task(self._ack_when(msg, envelope, settle), name=f"nats-ack-{self.name}")
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
            return
        await self._finish(msg, envelope, settle)

    async def _ack_when(self, msg: Msg, envelope: Envelope, settle: asyncio.Future[Any]) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(settle)
        await self._finish(msg, envelope, settle)

    async def _finish(self, msg: Msg, envelope: Envelope, settle: asyncio.Future[Any] | None) -> None:
        if settle is not None and (settle.cancelled() or settle.exception() is not None):
            await self._failed(msg, envelope)
            return
        await msg.ack()
        self.bus.stats.delivered += 1

    async def _failed(self, msg: Msg, envelope: Envelope) -> None:
        """A failing handler never blocks other messages: nak with a delay, give up after max_deliver."""
        bus = self.bus
        bus.stats.handler_errors += 1
        attempt = msg.metadata.num_delivered or 1
        log.exception("bus_handler_failed", subscription=self.name, key=envelope.key, id=envelope.id, attempt=attempt)
        if attempt >= bus.max_deliver:
            await msg.term()
            log.error("bus_message_given_up", subscription=self.name, key=envelope.key, id=envelope.id)
            if bus.on_dead_letter is not None:
                bus.on_dead_letter(self.name, envelope)
        else:
            await msg.nak(delay=bus.redelivery_delay_s)

    def pending(self) -> int:
        """Messages waiting for this worker: received but not handled, plus the consumer's backlog last seen."""
        return self._inbox.qsize() + self._last_pending

    async def stop(self) -> None:
        """Stop this worker; a durable consumer is kept (re-subscribe resumes), an ephemeral one is deleted."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._settling:
            # Acks waiting for a commit: give them the time a commit takes; the rest is redelivered after ack_wait.
            await asyncio.wait(set(self._settling), timeout=SETTLE_WAIT_S)
        # Let our open pull request end (filled or expired); keep what it still brings, unhandled.
        deadline = self._last_pull + self.bus.pull_expires_s + 0.5
        while self._request_open and self._sub is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    msg = await self._inbox.get()
            except TimeoutError:
                break
            if self._take(msg):
                self._handback.append(msg)
        if self._sub is not None:
            # Drain, not unsubscribe: a flush round trip makes sure every message the server sent us reaches our
            # inbox before we let go of it.
            with contextlib.suppress(nats.errors.Error):
                await self._sub.drain()  # type: ignore[no-untyped-call]
            self._sub = None
        while not self._inbox.empty():
            msg = self._inbox.get_nowait()
            if self._take(msg):
                self._handback.append(msg)
        # Hand back what we did not handle at once, instead of letting it wait out ack_wait.
        for msg in self._handback:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()
        self._handback.clear()
        await self.bus._remove(self)


class NatsBus:
    """JetStream bus: durable stream with id deduplication, pull consumers, competing workers per durable name.

    `subject_prefix` puts this bus in its own subject namespace (`<prefix>.event.>`) so several buses (tests, tiers)
    can share one server; envelope keys stay unprefixed for callers. Durable consumers created for the first time
    start at `durable_start` ("new": only messages published from now on, like the in-process bus; "all": the whole
    retained stream).
    """

    # JetStream holds a message once it acknowledges the publish, and redelivers what a stopped worker did not ack.
    holds_in_memory = False

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream: str = "SAFECITY",
        subjects: Iterable[str] = DEFAULT_SUBJECTS,
        subject_prefix: str | None = None,
        dedupe_window_s: float = 120.0,
        max_age_s: float | None = None,
        ack_wait_s: float = 30.0,
        max_deliver: int = 5,
        redelivery_delay_s: float = 1.0,
        fetch_batch: int = 256,
        pull_expires_s: float = 2.0,
        publish_timeout_s: float = 5.0,
        max_inflight: int = 8192,
        durable_start: Literal["new", "all"] = "new",
        ephemeral_inactive_s: float = 30.0,
        on_dead_letter: OverflowHook | None = None,
        client_name: str = "safecity",
        connect_timeout_s: float = 10.0,
    ) -> None:
        if subject_prefix is not None and not _PREFIX_RE.match(subject_prefix):
            raise ValueError(f"invalid subject prefix {subject_prefix!r}")
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        self.url = url
        self.stream = _check_name("stream", stream)
        self.subjects = tuple(subjects)
        self.subject_prefix = subject_prefix
        self.dedupe_window_s = dedupe_window_s
        self.max_age_s = max_age_s
        self.ack_wait_s = ack_wait_s
        self.max_deliver = max_deliver
        self.redelivery_delay_s = redelivery_delay_s
        self.fetch_batch = fetch_batch
        self.pull_expires_s = pull_expires_s
        self.publish_timeout_s = publish_timeout_s
        self.max_inflight = max_inflight
        self.durable_start = durable_start
        self.ephemeral_inactive_s = ephemeral_inactive_s
        self.on_dead_letter = on_dead_letter
        self.client_name = client_name
        self.connect_timeout_s = connect_timeout_s
        self.stats = BusStats()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._subs: list[NatsSubscription] = []
        self._ephemeral_count = 0
        self._closing = False

    # --- connection -------------------------------------------------------------------------------------------

    def _conn(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeError("bus is not started")
        return self._nc

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("bus is not started")
        return self._js

    def subject(self, key: str) -> str:
        """Return the NATS subject of an envelope key or pattern in this bus's namespace."""
        return f"{self.subject_prefix}.{key}" if self.subject_prefix else key

    async def _on_error(self, err: Exception) -> None:
        log.warning("nats_error", error=repr(err))

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("nats_disconnected", url=self.url)

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected", url=self.url)

    async def start(self) -> None:
        """Connect, then create the stream or bring its configuration up to date."""
        self._closing = False
        nc = NatsClient()
        try:
            # Reconnects are unbounded once connected (links can fail for hours); the first connect is bounded.
            async with asyncio.timeout(self.connect_timeout_s):
                await nc.connect(
                    self.url,
                    name=self.client_name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
        except (nats.errors.Error, OSError, TimeoutError) as err:
            with contextlib.suppress(nats.errors.Error):
                await nc.close()
            raise ServiceUnavailable(service="NATS") from err
        self._nc = nc
        self._js = self._nc.jetstream(timeout=self.publish_timeout_s)
        config = api.StreamConfig(
            name=self.stream,
            subjects=[self.subject(s) for s in self.subjects],
            storage=api.StorageType.FILE,
            duplicate_window=self.dedupe_window_s,
            max_age=self.max_age_s,
        )
        try:
            await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self._js.add_stream(config)
            log.info("nats_stream_created", stream=self.stream, subjects=config.subjects)
        else:
            await self._js.update_stream(config)

    async def close(self) -> None:
        """Stop every subscription and drain the connection (pending publishes and acks are flushed)."""
        self._closing = True
        # Concurrently: each stop may wait for its pull request to end.
        await asyncio.gather(*(sub.stop() for sub in list(self._subs)))
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.drain()
        self._nc = None
        self._js = None

    async def healthy(self) -> bool:
        """Connected, and the stream answers."""
        if self._nc is None or not self._nc.is_connected or self._js is None:
            return False
        try:
            await self._js.stream_info(self.stream)
        except (nats.errors.Error, TimeoutError):
            return False
        return True

    async def delete_stream(self) -> None:
        """Delete this bus's stream and everything in it (tests, decommissioning)."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._jetstream().delete_stream(self.stream)

    # --- publishing -------------------------------------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> bool:
        """Publish one envelope and wait for the stream's ack; False when the id was already in the window."""
        try:
            ack = await self._jetstream().publish(
                self.subject(envelope.key),
                encode(envelope),
                headers={MSG_ID_HEADER: envelope.id},
                stream=self.stream,
            )
        except (nats.errors.Error, TimeoutError) as err:
            raise ServiceUnavailable(service="NATS JetStream") from err
        if ack.duplicate:
            self.stats.duplicates += 1
            return False
        self.stats.published += 1
        return True

    async def publish_many(self, envelopes: Iterable[Envelope]) -> int:
        """Publish many envelopes with at most `max_inflight` acks outstanding; return how many were new.

        All-or-error: if any publish fails or is not acked within `publish_timeout_s`, ServiceUnavailable is raised.
        Retrying the whole batch (within the dedupe window) is safe: ids already stored come back as duplicates.
        """
        # Our own pipeline rather than nats-py's publish_async: that one yields to the loop on every message (one
        # socket write each) and reaches about 10k/s; this one lets the client batch writes (~2-3x faster).
        nc = self._conn()
        window = asyncio.Semaphore(self.max_inflight)
        prefix = nc.new_inbox()
        tally = {"new": 0, "dup": 0, "acked": 0, "sent": 0}
        errors: list[str] = []
        settled = asyncio.Event()
        sending = True

        async def on_ack(msg: Msg) -> None:
            status = msg.headers.get(api.Header.STATUS) if msg.headers else None
            resp = {} if status else json.loads(msg.data or b"{}")
            if status or "error" in resp:
                errors.append(str(status or resp["error"]))
            elif resp.get("duplicate"):
                tally["dup"] += 1
            else:
                tally["new"] += 1
            tally["acked"] += 1
            window.release()
            if not sending and tally["acked"] >= tally["sent"]:
                settled.set()

        sub = await nc.subscribe(f"{prefix}.*", cb=on_ack)
        try:
            for envelope in envelopes:
                if window.locked():
                    async with asyncio.timeout(self.publish_timeout_s):
                        await window.acquire()
                else:
                    await window.acquire()  # free slot: returns at once, without yielding to the loop
                await nc.publish(
                    self.subject(envelope.key),
                    encode(envelope),
                    reply=f"{prefix}.{tally['sent']}",
                    headers={MSG_ID_HEADER: envelope.id, "Nats-Expected-Stream": self.stream},
                )
                tally["sent"] += 1
            sending = False
            if tally["acked"] < tally["sent"]:
                async with asyncio.timeout(self.publish_timeout_s):
                    await settled.wait()
        except (nats.errors.Error, TimeoutError) as err:
            self._count_many(tally)
            log.warning("bus_publish_many_failed", sent=tally["sent"], acked=tally["acked"])
            raise ServiceUnavailable(service="NATS JetStream") from err
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self._count_many(tally)
        if errors:
            log.warning("bus_publish_many_rejected", rejected=len(errors), first=errors[0])
            raise ServiceUnavailable(f"{len(errors)} rejected, first: {errors[0]}", service="NATS JetStream")
        return tally["new"]

    def _count_many(self, tally: dict[str, int]) -> None:
        self.stats.published += tally["new"]
        self.stats.duplicates += tally["dup"]

    # --- subscribing ------------------------------------------------------------------------------------------

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        durable: str | None = None,
        queue_size: int = 10_000,
    ) -> NatsSubscription:
        """Start a worker on a pull consumer; the same durable name again adds a competing worker."""
        js = self._jetstream()
        filter_subject = self.subject(pattern)
        if durable is not None:
            consumer = _check_name("durable", durable)
            try:
                info = await js.consumer_info(self.stream, consumer)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None:
                bound = info.config.filter_subject
                if bound != filter_subject:
                    raise ValueError(f"durable {durable!r} is bound to {bound!r}, not {filter_subject!r}")
            else:
                await js.add_consumer(self.stream, self._consumer_config(consumer, filter_subject, queue_size, True))
            name = durable
        else:
            consumer = f"eph-{uuid.uuid4().hex}"
            await js.add_consumer(self.stream, self._consumer_config(consumer, filter_subject, queue_size, False))
            self._ephemeral_count += 1
            name = f"{pattern}#{self._ephemeral_count}"
        sub = NatsSubscription(
            self,
            pattern,
            name,
            consumer,
            handler,
            durable=durable is not None,
            batch=max(1, min(self.fetch_batch, queue_size)),
        )
        await sub.start()
        self._subs.append(sub)
        return sub

    def _consumer_config(self, name: str, filter_subject: str, queue_size: int, durable: bool) -> api.ConsumerConfig:
        start = self.durable_start if durable else "new"
        return api.ConsumerConfig(
            name=name,
            durable_name=name if durable else None,
            filter_subject=filter_subject,
            deliver_policy=api.DeliverPolicy.NEW if start == "new" else api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            # Bounds messages in flight (delivered, not yet acked) for the consumer, like the in-process queue size.
            max_ack_pending=queue_size,
            inactive_threshold=None if durable else self.ephemeral_inactive_s,
        )

    async def _remove(self, sub: NatsSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if not sub.durable and self._js is not None:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.NotFoundError):
                await self._js.delete_consumer(self.stream, sub.consumer)

    async def drain(self) -> None:
        """Nothing to wait for: what a worker has not acknowledged stays in the stream and is handed back on stop
        (redelivered to the next worker), so stopping loses nothing that draining would have saved."""

    def lag(self) -> dict[str, int]:
        """Pending messages per subscription, as last seen in delivered messages (see `refresh_lag`)."""
        result = {s.name: s.pending() for s in self._subs}
        self.stats.lag = result
        return result

    async def refresh_lag(self) -> dict[str, int]:
        """Ask the server for each consumer's backlog (consumer info num_pending), then return `lag()`."""
        js = self._jetstream()
        for sub in self._subs:
            try:
                info = await js.consumer_info(self.stream, sub.consumer)
            except (nats.errors.Error, nats.js.errors.NotFoundError, TimeoutError):
                continue
            sub._last_pending = int(info.num_pending or 0)
        return self.lag()

    async def consumer_info(self, name: str) -> Any:
        """Return JetStream's info for a consumer of this bus's stream (operations, tests)."""
        return await self._jetstream().consumer_info(self.stream, name)


if TYPE_CHECKING:  # mypy proves NatsBus satisfies the Bus protocol

    def _is_a_bus(bus: NatsBus) -> Bus:
        return bus
