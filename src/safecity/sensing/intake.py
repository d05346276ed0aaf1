"""HTTP batch intake: the ingest pipeline behind a back-pressure gate (what `POST /api/v1/ingest/batch` uses)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter

from safecity.sensing.pipeline import IngestPipeline, IngestResult


class BatchIntake:
    """Say whether intake should slow down now, count refusals, and pass lines through the pipeline."""

    def __init__(self, pipeline: IngestPipeline, pressure: Callable[[], str | None], refused: Counter) -> None:
        self.pipeline = pipeline
        self._pressure = pressure
        self._refused = refused

    def pressure(self) -> str | None:
        """Why intake should slow down now (the store is stalled or its queues are filling), or None."""
        return self._pressure()

    def refused(self, cause: str) -> None:
        """Count a batch refused for `cause`."""
        self._refused.labels(cause).inc()

    async def ingest(self, raw: bytes, *, fmt: str, source: str) -> IngestResult:
        """Process one raw message; refusals are dead-lettered, never raised."""
        return await self.pipeline.ingest(raw, fmt=fmt, source=source)

    async def settle(self, results: Iterable[IngestResult]) -> None:
        """Wait until every event and dead letter of `results` is durable."""
        await self.pipeline.settle(results)
