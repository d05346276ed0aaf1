"""`safecity replay FILE.csv`: import real calls for service as closed incidents and report their stage KPIs, and
optionally serve the same call stream on our own district (`--simulate`) and report ours beside the real ones.

cli.py mounts the command; this module does the work and prints with rich (progress on stderr, tables on stdout).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from safecity.dispatch.kpi import Summary, stage_kpis
from safecity.dispatch.replay import ReplayFile, read_calls
from safecity.dispatch.simulation import SimulatedReplay, simulate
from safecity.kernel.dispatch_settings import INTERVALS
from safecity.kernel.settings import Settings


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay did and found."""

    file: ReplayFile
    imported: int
    real: dict[str, Summary]
    simulated: SimulatedReplay | None

    def figures(self) -> dict[str, Any]:
        """The run as plain numbers (the last line of `--json`)."""

        def plain(kpis: dict[str, Summary]) -> dict[str, dict[str, float]]:
            return {
                n: {"count": s.count, "median_s": round(s.median_s, 1), "p90_s": round(s.p90_s, 1)}
                for n, s in kpis.items()
            }

        out: dict[str, Any] = {
            "rows": self.file.rows,
            "calls": len(self.file.calls),
            "bad_rows": len(self.file.bad_rows),
            "imported": self.imported,
            "real": plain(self.real),
        }
        if self.simulated is not None:
            out["simulated"] = plain(self.simulated.simulated)
            out["simulated_units"] = self.simulated.units
            out["simulated_waited"] = self.simulated.waited
        return out


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def kpi_table(real: dict[str, Summary], simulated: dict[str, Summary] | None) -> Table:
    """Stage KPIs (count, median, p90 in minutes), the simulated run beside the real one when there is one."""
    table = Table(title="Stage KPIs / 各环节用时 (minutes)")
    table.add_column("interval")
    for side in ("real", "simulated") if simulated is not None else ("real",):
        for column in ("count", "median", "p90"):
            table.add_column(f"{side} {column}", justify="right")
    for name in INTERVALS:
        cells: list[str] = []
        for kpis in (real, simulated) if simulated is not None else (real,):
            s = kpis.get(name)
            cells += [str(s.count), f"{s.median_s / 60:.1f}", f"{s.p90_s / 60:.1f}"] if s else ["0", "-", "-"]
        if any(c not in ("0", "-") for c in cells):
            table.add_row(name, *cells)
    return table


def run_replay(
    settings: Settings,
    file: Path,
    *,
    zone: str,
    store: bool,
    simulated: bool,
    units: int,
    seed: int,
    console: Console,
) -> ReplayOutcome:
    """Read FILE, import it (when `store`), simulate it (when `simulated`), and print what was found."""
    with file.open(newline="", encoding="utf-8-sig") as f:
        replay = read_calls(f, zone=zone)
    for bad in replay.bad_rows[:20]:
        console.print(f"[yellow]line {bad.line}[/yellow]: {bad.reason}", soft_wrap=True)
    if len(replay.bad_rows) > 20:
        console.print(f"[yellow]... and {len(replay.bad_rows) - 20} more bad rows[/yellow]")
    console.print(f"read {replay.rows} rows: {len(replay.calls)} calls, {len(replay.bad_rows)} bad rows")
    imported = asyncio.run(_store(settings, replay, console)) if store else 0
    real = stage_kpis(("all", c.times) for c in replay.calls).get("all", {})
    outcome_sim = None
    if simulated:
        outcome_sim = _simulate(
            settings, replay, units or len({u for c in replay.calls for u in c.units[:1]}), seed, console
        )
    return ReplayOutcome(replay, imported, real, outcome_sim)


async def _store(settings: Settings, replay: ReplayFile, console: Console) -> int:
    from safecity.dispatch.service import DispatchService
    from safecity.kernel.bus import MemoryBus
    from safecity.sensing.pseudonym import Pseudonymizer
    from safecity.store.engine import create_engine

    engine = create_engine(settings.database.url, null_pool=True)
    bus = MemoryBus()
    try:
        service = DispatchService(
            engine,
            bus,
            settings.dispatch,
            pseudonymize=Pseudonymizer.of(settings),
            link_key=settings.security.pseudonym_key.get_secret_value().encode(),
        )
        with _progress(console) as progress:
            task = progress.add_task("importing calls", total=len(replay.calls))
            return await service.import_calls(replay.calls, progress=lambda n: progress.advance(task, n))
    finally:
        await engine.dispose()


def _simulate(settings: Settings, replay: ReplayFile, units: int, seed: int, console: Console) -> SimulatedReplay:
    from safecity.geo.road.network import RoadNetwork
    from safecity.geo.road.synthetic import synthetic_network

    roads = settings.roads
    with console.status("loading the road network"):
        if roads.graph is not None:
            net = RoadNetwork.load(roads.graph, max_snap_m=roads.max_snap_m)
        else:
            graph = synthetic_network(
                roads.synthetic_nodes, center=roads.synthetic_center, spacing_m=roads.synthetic_spacing_m
            )
            net = RoadNetwork(graph, max_snap_m=roads.max_snap_m)
        net.warm_up()
    with _progress(console) as progress:
        task = progress.add_task(f"serving calls with {units} simulated units", total=len(replay.calls))
        return simulate(replay.calls, net, units=units, seed=seed, progress=lambda n: progress.advance(task, n))


def print_outcome(outcome: ReplayOutcome, out: Console, *, as_json: bool) -> None:
    """The KPI table (and, with `as_json`, the figures as one JSON line last)."""
    out.print(kpi_table(outcome.real, outcome.simulated.simulated if outcome.simulated else None))
    if outcome.simulated is not None:
        out.print(
            f"simulated: {outcome.simulated.calls} calls served by {outcome.simulated.units} units on our network; "
            f"{outcome.simulated.waited} waited for a free unit"
        )
    if as_json:
        out.print(json.dumps(outcome.figures(), ensure_ascii=False), soft_wrap=True, markup=False, highlight=False)
