"""Fixtures for the store tests: a migrated engine on each backend, and event envelopes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel.envelope import Context, Envelope, make_envelope
from safecity.sensing.model import EventKind, SensorEvent, Tags, event_key
from safecity.store.engine import create_engine, upgrade


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database on SQLite and on PostgreSQL."""
    await upgrade(db_url)
    eng = create_engine(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


def sensor_envelope(
    i: int,
    *,
    kind: EventKind = EventKind.SMOKE,
    device_id: str = "dev-1",
    message_id: str | None = None,
    town: str | None = "town-a",
    community: str | None = "comm-a",
    building: str | None = "bldg-a",
    occurred_at: datetime | None = None,
    envelope_id: str | None = None,
) -> Envelope:
    """A tagged sensor event like the ingest pipeline publishes."""
    payload = SensorEvent(
        device_id=device_id,
        kind=kind,
        tags=Tags(town=town, community=community, building=building, device_kind=kind.value),
        message_id=message_id,
        lon=121.47 + i * 1e-6,
        lat=31.23,
        value=float(i),
        state="alarm" if i % 2 else "normal",
        data={"i": i, "note": "烟雾"},
        pseudonyms={"plate": "ab" * 16} if i % 3 == 0 else {},
    )
    env = make_envelope(
        event_key(kind),
        payload,
        source="test",
        tier="community",
        occurred_at=occurred_at,
        envelope_id=envelope_id,
        context=Context(correlation_id=f"corr-{i}", actor="tester"),
    )
    env.stamp("tagged")
    return env


MakeEvent = Callable[..., Envelope]


@pytest.fixture
def make_event() -> MakeEvent:
    """The `sensor_envelope` factory (test folders here are not packages, so helpers travel as fixtures)."""
    return sensor_envelope
