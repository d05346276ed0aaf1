"""Rule-condition cost: µs per event of `Engine.process` over bench/rules_50.yaml, before/after the CEL fast path.

"before" is the engine as of commit 4a7bda2 (every condition through the CEL library, no memo), loaded from git;
"after" is the working tree (fastcel closures, per-event memo). Smoke events shaped like the Node-RED peer's
load.py stream (alarm flag, temp on 60 % of events), plus a share of door / parking / crowd events.

    python bench/conditions.py [--events 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from safecity.sensing.model import Tags
from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning import engine as after
from safecity.warning.rules import load_pack

HERE = Path(__file__).resolve().parent
BEFORE_COMMIT = "4a7bda2"


def engine_before() -> ModuleType:
    """The engine module as of BEFORE_COMMIT, imported from a temporary file."""
    src = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:src/safecity/warning/engine.py"],
        cwd=HERE.parent, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "engine_before.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("engine_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["engine_before"] = module
    spec.loader.exec_module(module)
    return module


def events(mod: ModuleType, n: int, seed: int = 7) -> list[Any]:
    """A reproducible event mix: 80 % smoke (peer-shaped), the rest door / parking / crowd."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        b = f"b{rng.randrange(500)}"
        tags = Tags(town="t1", community=f"c{rng.randrange(20)}", building=b, device_kind="smoke")
        r = rng.random()
        if r < 0.8:
            data: dict[str, Any] = {"alarm": rng.random() < 0.02}
            if rng.random() < 0.6:
                data["temp"] = rng.uniform(15.0, 45.0)
            ev = mod.EventView(f"e{i}", "smoke", 1e9 + i * 1e-3, f"d{rng.randrange(5000)}", tags, data=data)
        elif r < 0.9:
            state = rng.choice(["open", "closed"])
            ev = mod.EventView(f"e{i}", "door", 1e9 + i * 1e-3, f"d{i % 999}", tags, state=state, data={})
        elif r < 0.95:
            ev = mod.EventView(f"e{i}", "parking", 1e9 + i * 1e-3, f"p{i % 99}", tags, state="occupied", data={})
        else:
            ev = mod.EventView(f"e{i}", "crowd", 1e9 + i * 1e-3, f"c{i % 9}", tags, value=rng.uniform(0, 500), data={})
        out.append(ev)
    return out


def measure(mod: ModuleType, n: int, repeat: int) -> tuple[float, int, int]:
    """Best µs per event over `repeat` runs, with firings and condition errors of the last run."""
    pack = load_pack(HERE / "rules_50.yaml", pseudonymize=Pseudonymizer(b"bench-conditions-pseudonym-key!!"))
    best = float("inf")
    fired = errors = 0
    for _ in range(repeat):
        engine = mod.Engine(pack)
        evs = events(mod, n)
        t0 = time.perf_counter()
        fired = sum(len(engine.process(ev)) for ev in evs)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
        errors = engine.stats.condition_errors
    return best, fired, errors


def main() -> None:
    """Print µs per event before and after."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for name, mod in (("before", engine_before()), ("after", after)):
        us, fired, errors = measure(mod, args.events, args.repeat)
        print(f"{name:7} {us:8.1f} us/event  firings={fired} condition_errors={errors}")


if __name__ == "__main__":
    main()
