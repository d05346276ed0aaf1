"""Keeping long-lived objects out of the cyclic garbage collector's full passes."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Take what is alive now (modules, rules, caches, the device index) out of the cyclic collector's full passes.

    Those objects live as long as the process; left in the oldest generation, every full collection walked them all
    and paused the event loop for 100-470 ms under load (measured with `gc.callbacks`), the p99 of every alert
    behind it. `gc.freeze()` after a collection keeps only live objects out; they are still freed by reference
    counting when released. Called after start-up and after large device imports.
    """
    gc.collect()
    gc.freeze()
