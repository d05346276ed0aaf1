"""The cyclic garbage collector, set for a node that allocates many short-lived objects an event."""

from __future__ import annotations

import gc

# (generation 0, 1, 2) thresholds. CPython's (700, 10, 10) were made for small programs. On the hot path at 9,000
# events/s they ran about 140 young and 1 full collection a second; with the in-flight messages, queued rows and rule
# windows alive, the collector took 11 % of the node's CPU (10 s of 90, measured with `gc.callbacks`), and each full
# pass paused the event loop for about 100 ms. With these: 6 young collections a second, a full one only every
# few minutes, 3 % of the CPU, and p50 latency at 9,000 events/s down from 136 ms to 8-17 ms (docs/benchmarks.md).
# Nearly everything the node frees is freed by reference counting; the collector only finds cycles, and a cycle
# left for longer costs memory, not correctness.
THRESHOLDS = (10_000, 50, 100)


def settle_heap() -> None:
    """Set the collector's thresholds, and take what is alive now (modules, rules, caches, the device index) out of
    its full passes.

    Those objects live as long as the process; left in the oldest generation, every full collection walked them all
    and paused the event loop for 100-470 ms under load (measured with `gc.callbacks`), the p99 of every alert
    behind it. `gc.freeze()` after a collection keeps only live objects out; they are still freed by reference
    counting when released. Called after start-up and after large device imports.
    """
    gc.set_threshold(*THRESHOLDS)
    gc.collect()
    gc.freeze()
