"""Synthetic sensor traffic (clearly labelled synthetic): realistic payloads for every device kind.

Messages go through exactly the path real devices use: either straight into the ingest pipeline with the topic a
device would use, or published over MQTT to a broker.
"""

from __future__ import annotations

import asyncio
import random
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

SYNTHETIC_LABEL = "合成数据 / synthetic"

_PLATE_PROVINCES = "沪苏浙皖"


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message as a device would send it."""

    topic: str
    payload: bytes


class TrafficSimulator:
    """Deterministic (seeded) stream of device messages over a fleet; a small share is deliberately bad."""

    def __init__(
        self,
        devices: Sequence[dict[str, Any]],
        *,
        seed: int = 11,
        bad_fraction: float = 0.005,
        prefix: str = "safecity",
        watched_plates: Sequence[str] = (),
    ) -> None:
        if not devices:
            raise ValueError("the simulator needs at least one device")
        self.devices = list(devices)
        self.rng = random.Random(seed)
        self.bad_fraction = bad_fraction
        self.prefix = prefix
        self.watched_plates = list(watched_plates)
        self.seq = 0

    def _topic(self, device: dict[str, Any], kind: str) -> str:
        return f"{self.prefix}/{device['community']}/{kind}/{device['id']}"

    def _plate(self) -> str:
        if self.watched_plates and self.rng.random() < 0.01:
            # Now and then a car on the demo watch list passes a checkpoint, so the hotlist rule has work.
            return self.rng.choice(self.watched_plates)
        letters = "".join(self.rng.choices(string.ascii_uppercase.replace("I", "").replace("O", ""), k=1))
        digits = "".join(self.rng.choices(string.digits + "ABCDEFGHJK", k=5))
        return f"{self.rng.choice(_PLATE_PROVINCES)}{letters}{digits}"

    def message(self, now: float | None = None) -> SimMessage:
        """Return the next message; `now` (unix seconds) stamps it."""
        ts = time.time() if now is None else now
        self.seq += 1
        device = self.rng.choice(self.devices)
        kind = device["kind"]
        if self.rng.random() < self.bad_fraction:
            return self._bad(device, ts)
        if self.rng.random() < 0.1:
            body: dict[str, Any] = {
                "battery": round(self.rng.uniform(20, 100), 1),
                "rssi": self.rng.randint(-110, -60),
            }
            return self._msg(device, "heartbeat", body, ts)
        rng = self.rng
        if kind == "smoke":
            alarm = rng.random() < 0.002
            body = {
                "alarm": alarm,
                "smoke_density": round(rng.uniform(0.0, 0.3 if not alarm else 3.0), 3),
                "temp": round(rng.uniform(18, 32 if not alarm else 75), 1),
            }
        elif kind == "door":
            body = {"open": rng.random() < 0.3}
        elif kind == "parking":
            body = {"occupied": rng.random() < 0.6}
        elif kind == "crowd":
            body = {"count": rng.randint(0, 400), "zone": "entrance"}
        elif kind == "checkpoint":
            body = {
                "plate": self._plate(),
                "direction": rng.choice(["in", "out"]),
                "lane": rng.randint(1, 4),
                "vehicle_type": rng.choice(["car", "truck", "bus", "van"]),
            }
        elif kind == "video":
            label = rng.choice(["person", "car", "bicycle"])
            body = {"value": round(rng.uniform(0.5, 0.95), 2), "state": label, "data": {"label": label, "zone": "gate"}}
        else:
            body = {"value": round(rng.uniform(0, 100), 2)}
        return self._msg(device, kind, body, ts)

    def _msg(self, device: dict[str, Any], kind: str, body: dict[str, Any], ts: float) -> SimMessage:
        body["id"] = f"m{self.seq}"
        body["ts"] = ts
        return SimMessage(self._topic(device, kind), orjson.dumps(body))

    def _bad(self, device: dict[str, Any], ts: float) -> SimMessage:
        """A realistic fault: truncated JSON, wrong type, unknown device, a clock years off."""
        choice = self.rng.randrange(4)
        topic = self._topic(device, device["kind"])
        if choice == 0:
            return SimMessage(topic, b'{"alarm": tru')
        if choice == 1:
            return SimMessage(topic, orjson.dumps({"id": f"m{self.seq}", "ts": "yesterday", "open": "maybe"}))
        if choice == 2:
            ghost = f"{self.prefix}/{device['community']}/{device['kind']}/ghost-{self.seq}"
            return SimMessage(ghost, orjson.dumps({"id": f"m{self.seq}", "ts": ts}))
        return SimMessage(topic, orjson.dumps({"id": f"m{self.seq}", "ts": ts + 86_400 * 400}))


async def pace(rate_per_s: float, started: float, sent: int) -> None:
    """Sleep just enough to hold `rate_per_s` since `started` (monotonic seconds)."""
    ahead = sent / rate_per_s - (time.monotonic() - started)
    if ahead > 0.002:
        await asyncio.sleep(ahead)
