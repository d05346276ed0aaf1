"""Dead-letter sink: buffers refused inputs and writes them in batches, and announces each on the bus.

Personal fields are pseudonymized before a dead letter is kept (`sensing.scrub`): its raw bytes, its detail and
what the bus announces never hold a clear plate.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from safecity.kernel import clock, ids
from safecity.kernel.bus import Bus
from safecity.kernel.envelope import make_envelope
from safecity.kernel.supervisor import Supervisor
from safecity.sensing.model import DEAD_LETTERED, DeadLettered
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.sensing.scrub import scrub
from safecity.store.deadletters import DeadLetterRepo

log = structlog.get_logger(__name__)


class DeadLetterService:
    """Never blocks the ingest path: `put` appends to a bounded buffer; a task flushes it every 100 ms.

    `durable()` waits until every dead letter put before the call is written: MQTT ingest acknowledges a refused
    message only then, so a crash cannot lose one.
    """

    def __init__(
        self,
        repo: DeadLetterRepo,
        bus: Bus,
        *,
        pseudonymize: Pseudonymizer,
        raw_cap: int,
        source: str,
        tier: str,
        max_buffer: int = 100_000,
        tasks: Supervisor | None = None,
    ) -> None:
        self.repo = repo
        # The node's supervisor owns the flusher (used alone, the service owns a supervisor of its own).
        self._tasks = tasks if tasks is not None else Supervisor()
        self.pseudonymize = pseudonymize
        self.bus = bus
        self.raw_cap = raw_cap
        self.source = source
        self.tier = tier
        self.max_buffer = max_buffer
        self._buffer: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._written_changed = asyncio.Event()
        self.queued = 0  # dead letters ever buffered (the sequence number of the latest)
        self.written = 0
        self.overflowed = 0

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The background flusher (None before `start`)."""
        return self._task

    @property
    def buffered(self) -> int:
        """Dead letters waiting to be written."""
        return len(self._buffer)

    def put(
        self,
        *,
        reason: str,
        detail: str,
        source: str,
        raw: bytes,
        topic: str | None = None,
        device_id: str | None = None,
        kind: str | None = None,
        raw_size: int | None = None,
    ) -> None:
        """Queue one dead letter for writing (`raw_size` when `raw` was withheld on purpose).

        Personal fields in `raw` are replaced by their pseudonyms first (and their clear values in `detail`); bytes
        that cannot be parsed are dropped unless the device kind carries no personal field.
        """
        if len(self._buffer) >= self.max_buffer:
            # Even the dead-letter buffer is bounded; the counter (and metrics) still record the refusal.
            self.overflowed += 1
            log.error("dead_letter_buffer_full", reason=reason, source=source, device_id=device_id)
            return
        size = len(raw) if raw_size is None else raw_size
        kept = scrub(raw, kind=kind, pseudonymize=self.pseudonymize) if raw else None
        if kept is not None:
            detail = kept.scrub_text(detail)
        self.queued += 1
        self._buffer.append(
            {
                "id": ids.new_id(),
                "received_at": clock.now(),
                "reason": reason,
                "detail": detail[:2000],
                "source": source,
                "topic": topic,
                "device_id": device_id,
                "kind": kind,
                "raw": bytes(kept.raw[: self.raw_cap]) if kept is not None and kept.raw is not None else b"",
                "raw_size": size,
            }
        )

    async def start(self) -> None:
        """Start the background flusher."""
        self._task = self._tasks.spawn("dead-letter-writer", self._run, essential=True)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def durable(self) -> None:
        """Wait until every dead letter buffered before this call is written (retried while the store fails)."""
        target = self.queued
        wake = True
        while self.written < target:
            if self._task is None or self._task.done():
                await self.flush()  # no flusher running (not started, or stopping): write here
                if self.written < target:
                    await asyncio.sleep(0.1)
                continue
            self._written_changed.clear()
            if wake:  # write now rather than at the next tick; after a failure the flusher keeps its own pace
                self._wake.set()
                wake = False
            await self._written_changed.wait()

    async def flush(self) -> None:
        """Write everything buffered so far (one writer at a time, so they are written in the order put)."""
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer = self._buffer, []
            try:
                await self.repo.add_many(batch)
            except Exception as err:  # transient (a locked or unreachable store): kept and tried again
                error = str(getattr(err, "orig", None) or err)[:300]
                log.warning("dead_letter_write_failed", rows=len(batch), error=error)
                self._buffer[:0] = batch  # keep them for the next try
                self._written_changed.set()  # let waiters look again (they wait on, and wake the flusher)
                return
            self.written += len(batch)
            self._written_changed.set()
        for row in batch:
            payload = DeadLettered(
                reason=row["reason"],
                detail=row["detail"],
                source=row["source"],
                topic=row["topic"],
                device_id=row["device_id"],
            )
            await self.bus.publish(make_envelope(DEAD_LETTERED, payload, source=self.source, tier=self.tier))

    async def stop(self) -> None:
        """Flush and stop."""
        if self._task is not None:
            await self._tasks.cancel("dead-letter-writer")
        await self.flush()
