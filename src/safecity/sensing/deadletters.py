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
from safecity.sensing.model import DEAD_LETTERED, DeadLettered
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.sensing.scrub import scrub
from safecity.store.deadletters import DeadLetterRepo

log = structlog.get_logger(__name__)


class DeadLetterService:
    """Never blocks the ingest path: `put` appends to a bounded buffer; a task flushes it every 100 ms."""

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
    ) -> None:
        self.repo = repo
        self.pseudonymize = pseudonymize
        self.bus = bus
        self.raw_cap = raw_cap
        self.source = source
        self.tier = tier
        self.max_buffer = max_buffer
        self._buffer: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._flushed = asyncio.Event()
        self.written = 0
        self.overflowed = 0

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
            return
        size = len(raw) if raw_size is None else raw_size
        kept = scrub(raw, kind=kind, pseudonymize=self.pseudonymize) if raw else None
        if kept is not None:
            detail = kept.scrub_text(detail)
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
        self._task = asyncio.create_task(self._run(), name="dead-letter-writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered so far."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        try:
            await self.repo.add_many(batch)
        except Exception:
            log.exception("dead_letter_write_failed", rows=len(batch))
            self._buffer[:0] = batch  # keep them for the next try
            return
        self.written += len(batch)
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
