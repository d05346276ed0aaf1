"""Topic routing micro-benchmark: what the MQTT path spends working out which normalizer serves a topic.

Before the normalizer registry, a device message's topic was split twice: once by the MQTT router against its
table of topic kinds (`mqtt.route_topic`), once more by the generic normalizer against its own (`parse_topic`).
Now the registry's `route` splits it once and keeps the answer per topic string; the normalizer's `parse_topic` reads
the same cached route. The "before" code is copied below verbatim from commit 2c1836f (src/safecity/sensing/mqtt.py
and normalize/generic.py), so both run in one process on the same machine.

    python bench/topics.py [--quick] [--topics N]

Figures are ns per message, best of several rounds, over N distinct device topics (cycled, as a fleet
reports) plus Frigate's; "cold" is a topic's first sighting (cache miss). The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from safecity.sensing.model import DeviceKind, EventKind
from safecity.sensing.normalize import registry
from safecity.sensing.normalize.generic import parse_topic

# --- before (commit 2c1836f) ----------------------------------------------------------------------------------------

_TOPIC_KINDS: dict[str, tuple[str, DeviceKind | None]] = {
    **{k.value: ("generic", k) for k in DeviceKind if k is not DeviceKind.CHECKPOINT},
    DeviceKind.CHECKPOINT.value: ("checkpoint", DeviceKind.CHECKPOINT),
    EventKind.HEARTBEAT.value: ("generic", None),
    EventKind.NETSEC.value: ("suricata", None),
}
_MESSAGE_KINDS = {"smoke", "door", "parking", "crowd", "heartbeat", "generic", "video", "checkpoint"}


def _old_route_topic(topic: str, prefix: str) -> tuple[str, str | None, DeviceKind | None] | None:
    if topic.startswith("frigate/"):
        return ("frigate", None, DeviceKind.VIDEO)
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != prefix:
        return None
    _, _community, topic_kind, device_id = parts
    found = _TOPIC_KINDS.get(topic_kind)
    if found is None:
        return None
    fmt, kind = found
    return (fmt, device_id, kind)


def _old_parse_topic(topic: str) -> tuple[str, str, str, str]:
    parts = topic.split("/")
    if len(parts) != 4 or not all(parts) or parts[2] not in _MESSAGE_KINDS:
        raise ValueError(topic)
    return (parts[0], parts[1], parts[2], parts[3])


def before(topic: str) -> object:
    """The old MQTT path: the router's split, then the generic normalizer's."""
    route = _old_route_topic(topic, "safecity")
    if route is not None and route[0] in ("generic", "checkpoint"):
        _old_parse_topic(topic)
    return route


# --- after ------------------------------------------------------------------------------------------------------------


def after(topic: str) -> object:
    """The registry's path: one cached route, read again by the normalizer."""
    route = registry.route(topic)
    if route.spec is not None and route.spec.key in ("generic", "checkpoint"):
        parse_topic(topic)
    return route


def topics(n: int) -> list[str]:
    """N device topics over the built-in kinds and 100 communities, plus Frigate's events topic every 50th."""
    kinds = ["smoke", "door", "parking", "crowd", "heartbeat", "generic", "video", "checkpoint"]
    out = [f"safecity/c{i % 100:03d}/{kinds[i % len(kinds)]}/dev-{i:06d}" for i in range(n)]
    return [t if i % 50 else "frigate/events" for i, t in enumerate(out)]


def per_message_ns(fn: Callable[[str], object], names: list[str], rounds: int, *, cold: bool = False) -> float:
    """Best ns per call over `rounds` passes of `names` (`cold`: the route cache emptied before each pass)."""
    best = float("inf")
    for _ in range(rounds):
        if cold:
            registry._ROUTES.clear()
        started = time.perf_counter_ns()
        for name in names:
            fn(name)
        best = min(best, (time.perf_counter_ns() - started) / len(names))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A few seconds: fewer rounds.")
    parser.add_argument("--topics", type=int, default=10_000, help="Distinct device topics (the fleet).")
    args = parser.parse_args()
    rounds = 5 if args.quick else 30
    names = topics(args.topics)
    for name in names:  # the same format before and after
        old = _old_route_topic(name, "safecity")
        new = registry.route(name).spec
        assert (old[0] if old else None) == (new.key if new else None), name
    figures = {
        "topics": len(names),
        "before_ns": round(per_message_ns(before, names, rounds), 1),
        "after_warm_ns": round(per_message_ns(after, names, rounds), 1),
        "after_cold_ns": round(per_message_ns(after, names, rounds, cold=True), 1),
    }
    figures["speedup_warm"] = round(figures["before_ns"] / figures["after_warm_ns"], 2)
    print(f"topic routing over {len(names):,} topics, ns per message (best of {rounds}):")
    print(f"  before (split twice, two kind tables)   {figures['before_ns']:8.1f}")
    print(f"  after, route cached per topic string    {figures['after_warm_ns']:8.1f}")
    print(f"  after, first sighting (cache miss)      {figures['after_cold_ns']:8.1f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
