"""Synthetic sensor traffic (clearly labelled synthetic): realistic payloads for every device kind.

Messages go through exactly the path real devices use: either straight into the ingest pipeline with the topic a
device would use, or published over MQTT to a broker.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from safecity.sensing.normalize import registry
from safecity.sensing.normalize.registry import TopicKind

SYNTHETIC_LABEL = "合成数据 / synthetic"


def simulated_kinds() -> list[str]:
    """The device-topic kinds the simulator can send: every kind a registered normalizer serves."""
    return list(registry.topic_kinds())


_PLATE_PROVINCES = "沪苏浙皖"


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message as a device would send it."""

    topic: str
    payload: bytes


# A device is made to report again once this share of its heartbeat interval has passed without a message, so
# the fleet stays well inside the registry's offline deadlines (only devices left out of the fleet go silent).
REPORT_WITHIN = 0.5


class TrafficSimulator:
    """Deterministic (seeded) stream of device messages over a fleet; a small share is deliberately bad.

    Devices are mostly drawn at random, but one whose `offline_after_s` deadline nears (REPORT_WITHIN of it without a
    message) reports next, so no simulated device goes offline by chance: at a rate of at least `min_rate()`.
    """

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
        self._crowds: dict[str, float] = {}
        # Per device with a heartbeat: latest time (unix s) it must report by; a heap holds one entry per device,
        # re-armed lazily when the device has reported since (as the health monitor does).
        self._every = [
            float(d["offline_after_s"]) * REPORT_WITHIN if d.get("offline_after_s") else None for d in self.devices
        ]
        start = time.time()
        self._due: list[float | None] = [
            start + every * self.rng.uniform(0.2, 1.0) if every is not None else None for every in self._every
        ]
        self._heap = [(due, i) for i, due in enumerate(self._due) if due is not None]
        heapq.heapify(self._heap)

    def min_rate(self) -> float:
        """Messages per second needed to keep every device inside its deadline (before random traffic)."""
        return sum(1.0 / every for every in self._every if every is not None)

    def _next_device(self, ts: float) -> tuple[int, bool]:
        """Index of the device that sends next, and whether it was due (a due device sends a valid message)."""
        while self._heap and self._heap[0][0] <= ts:
            due, index = heapq.heappop(self._heap)
            current = self._due[index]
            assert current is not None
            if current > due:
                heapq.heappush(self._heap, (current, index))
                continue
            return index, True
        return self.rng.randrange(len(self.devices)), False

    def _reported(self, index: int, ts: float) -> None:
        every = self._every[index]
        if every is not None:
            was_due = self._due[index]
            self._due[index] = ts + every
            if was_due is not None and was_due <= ts:
                # Its heap entry was taken by _next_device: arm a new one.
                heapq.heappush(self._heap, (ts + every, index))

    def _topic(self, device: dict[str, Any], kind: str) -> str:
        return f"{self.prefix}/{device['community']}/{kind}/{device['id']}"

    def _crowd(self, device_id: str) -> int:
        """A crowd count that drifts as real ones do (a surge now and then), not a fresh random number each time."""
        level = self._crowds.get(device_id)
        if level is None:
            level = self.rng.uniform(20, 150)
        elif self.rng.random() < 0.001:
            level = self.rng.uniform(280, 400)  # an event lets out: the surge and density rules have work
        else:
            level = min(max(level + self.rng.gauss(-0.05 * (level - 80), 8), 0.0), 400.0)
        self._crowds[device_id] = level
        return round(level)

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
        index, due = self._next_device(ts)
        device = self.devices[index]
        kind = device["kind"]
        if not due and self.rng.random() < self.bad_fraction:
            return self._bad(device, ts)
        self._reported(index, ts)
        if self.rng.random() < 0.1:
            body: dict[str, Any] = {
                "battery": round(self.rng.uniform(20, 100), 1),
                "rssi": self.rng.randint(-110, -60),
            }
            return self._msg(device, "heartbeat", body, ts)
        maker = self._BODIES.get(kind)
        if maker is not None:
            return self._msg(device, kind, maker(self, device), ts)
        served = registry.topic_kinds().get(kind)
        if served is not None and served[1].example is not None:
            return self._example(device, served[1], ts)
        return self._msg(device, kind, self._reading(device), ts)

    # Realistic bodies for the built-in kinds; any other kind a normalizer registers sends its registered example.

    def _smoke(self, _device: dict[str, Any]) -> dict[str, Any]:
        alarm = self.rng.random() < 0.002
        return {
            "alarm": alarm,
            "smoke_density": round(self.rng.uniform(0.0, 0.3 if not alarm else 3.0), 3),
            "temp": round(self.rng.uniform(18, 32 if not alarm else 75), 1),
        }

    def _door(self, _device: dict[str, Any]) -> dict[str, Any]:
        return {"open": self.rng.random() < 0.3}

    def _parking(self, _device: dict[str, Any]) -> dict[str, Any]:
        return {"occupied": self.rng.random() < 0.6}

    def _crowd_count(self, device: dict[str, Any]) -> dict[str, Any]:
        return {"count": self._crowd(device["id"]), "zone": "entrance"}

    def _checkpoint(self, _device: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        return {
            "plate": self._plate(),
            "direction": rng.choice(["in", "out"]),
            "lane": rng.randint(1, 4),
            "vehicle_type": rng.choice(["car", "truck", "bus", "van"]),
        }

    def _video(self, _device: dict[str, Any]) -> dict[str, Any]:
        label = self.rng.choice(["person", "car", "bicycle"])
        value = round(self.rng.uniform(0.5, 0.95), 2)
        return {"value": value, "state": label, "data": {"label": label, "zone": "gate"}}

    def _reading(self, _device: dict[str, Any]) -> dict[str, Any]:
        return {"value": round(self.rng.uniform(0, 100), 2)}

    _BODIES: ClassVar[dict[str, Callable[[TrafficSimulator, dict[str, Any]], dict[str, Any]]]] = {
        "smoke": _smoke,
        "door": _door,
        "parking": _parking,
        "crowd": _crowd_count,
        "checkpoint": _checkpoint,
        "video": _video,
        "generic": _reading,
        "heartbeat": _reading,
    }

    def _msg(self, device: dict[str, Any], kind: str, body: dict[str, Any], ts: float) -> SimMessage:
        body["id"] = f"m{self.seq}"
        body["ts"] = ts
        return SimMessage(self._topic(device, kind), orjson.dumps(body))

    def _example(self, device: dict[str, Any], topic_kind: TopicKind, ts: float) -> SimMessage:
        """The kind's registered example, with this message's id and time where its payload has those fields."""
        body = dict(topic_kind.example or {})
        fields = getattr(topic_kind.payload, "__struct_fields__", ())
        if "id" in fields:
            body["id"] = f"m{self.seq}"
        if "ts" in fields:
            body["ts"] = ts
        return SimMessage(self._topic(device, topic_kind.kind), orjson.dumps(body))

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
