"""Rule-condition cost: µs per event of `Engine.process` over bench/rules_50.yaml, CEL fast path against CEL library.

"fast" is the engine as it runs (fastcel closures for the common CEL subset, guards that skip rules, per-event memo);
"cel" is the same engine with every condition through the CEL library (`Engine(fast_cel=False)`: no closures, no
guards; the memo stays). Both run in one process on the same events, so their ratio holds across machines; their
firings must be equal (the run says so). Smoke events shaped like the Node-RED peer's load.py stream (alarm flag, temp
on 60 % of events), plus a share of door / parking / crowd events.

    python bench/conditions.py [--path fast|cel|both] [--quick] [--events 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from pathlib import Path
from typing import Any

from safecity.sensing.model import Tags
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning.engine import Engine, EventView
from safecity.warning.rules import load_pack

HERE = Path(__file__).resolve().parent


def events(n: int, seed: int = 7) -> list[EventView]:
    """A reproducible event mix: 80 % smoke (peer-shaped), the rest door / parking / crowd."""
    rng = random.Random(seed)
    out: list[EventView] = []
    for i in range(n):
        b = f"b{rng.randrange(500)}"
        tags = Tags(town="t1", community=f"c{rng.randrange(20)}", building=b, device_kind="smoke")
        r = rng.random()
        if r < 0.8:
            data: dict[str, Any] = {"alarm": rng.random() < 0.02}
            if rng.random() < 0.6:
                data["temp"] = rng.uniform(15.0, 45.0)
            ev = EventView(f"e{i}", "smoke", 1e9 + i * 1e-3, f"d{rng.randrange(5000)}", tags, data=data)
        elif r < 0.9:
            state = rng.choice(["open", "closed"])
            ev = EventView(f"e{i}", "door", 1e9 + i * 1e-3, f"d{i % 999}", tags, state=state, data={})
        elif r < 0.95:
            ev = EventView(f"e{i}", "parking", 1e9 + i * 1e-3, f"p{i % 99}", tags, state="occupied", data={})
        else:
            ev = EventView(f"e{i}", "crowd", 1e9 + i * 1e-3, f"c{i % 9}", tags, value=rng.uniform(0, 500), data={})
        out.append(ev)
    return out


def measure(fast: bool, n: int, repeat: int) -> tuple[float, list[tuple[str, str]], int]:
    """Best µs per event over `repeat` runs, with the firings (rule, alert) and condition errors of the last run."""
    pack = load_pack(HERE / "rules_50.yaml", pseudonymize=Pseudonymizer(b"bench-conditions-pseudonym-key!!"))
    best = float("inf")
    fired: list[tuple[str, str]] = []
    errors = 0
    evs = events(n)
    for _ in range(repeat):
        ids = (f"A{i}" for i in itertools.count())
        engine = Engine(pack, fast_cel=fast, new_id=ids.__next__)
        for ev in evs:  # a fresh view each run: the memo and the CEL dict live on the event
            ev._cel = ev._memo = None
        t0 = time.perf_counter()
        out = [f for ev in evs for f in engine.process(ev)]
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
        fired = [(f.rule.id, f.alert_id) for f in out]
        errors = engine.stats.condition_errors
    return best, fired, errors


def main() -> None:
    """Print µs per event of each path (and their ratio, and whether they fired the same, with both)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", choices=["fast", "cel", "both"], default="both", help="which CEL path to measure")
    ap.add_argument("--quick", action="store_true", help="5,000 events, best of 3 (a few seconds)")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, repeat = (5_000, 3) if args.quick else (args.events, args.repeat)
    paths = ["fast", "cel"] if args.path == "both" else [args.path]
    results = {}
    for name in paths:
        us, fired, errors = results[name] = measure(name == "fast", n, repeat)
        print(f"{name:5} {us:8.1f} us/event  firings={len(fired)} condition_errors={errors}", end="")
        print(f"  ({n} events, best of {repeat})")
    if len(results) == 2:
        (fast_us, fast_fired, fast_err), (cel_us, cel_fired, cel_err) = results["fast"], results["cel"]
        same = fast_fired == cel_fired and fast_err == cel_err
        print(f"cel/fast {cel_us / fast_us:5.1f}x  same firings and errors: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
