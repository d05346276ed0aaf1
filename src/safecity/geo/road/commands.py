"""CLI commands of the road network (typer): import-osm, build-synthetic, bake-tiles, route.

The lead mounts them in cli.py, e.g. `app.command("import-osm")(import_osm_command)` or `app.add_typer(road_app)`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from safecity.geo.road.ch import graph_order
from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.osm_import import DEFAULT_SPEEDS_KMH, SpeedProfile, import_osm
from safecity.kernel.errors import SafeCityError

road_app = typer.Typer(help="Road network: import OSM, synthetic networks, tiles, routes.", no_args_is_help=True)
console = Console(stderr=True)

DEFAULT_GRAPH = Path("var/road/graph.npz")
DEFAULT_TILES = Path("var/road/tiles.mbtiles")


def _fail(err: SafeCityError) -> typer.Exit:
    console.print(f"[red]error[/red] {err.code}: {err}")
    return typer.Exit(code=2)


def _parse_speeds(values: list[str] | None) -> SpeedProfile:
    speeds = dict(DEFAULT_SPEEDS_KMH)
    for item in values or []:
        name, _, kmh = item.partition("=")
        try:
            speeds[name.strip()] = float(kmh)
        except ValueError as err:
            raise typer.BadParameter(f"expected CLASS=KMH, got {item!r}") from err
    return SpeedProfile(speeds=speeds)


def _point(text: str) -> tuple[float, float]:
    try:
        lon, lat = (float(v) for v in text.split(","))
    except ValueError as err:
        raise typer.BadParameter(f"expected LON,LAT, got {text!r}") from err
    return lon, lat


def _load_graph(source: Path) -> RoadGraph:
    if source.suffix == ".npz":
        return RoadGraph.load(source)
    return import_osm(source, progress=True)


def _save(graph: RoadGraph, out: Path, with_order: bool) -> None:
    started = time.perf_counter()
    order = graph_order(graph) if with_order else None
    graph.save(out, order=order)
    console.print(
        f"[green]saved[/green] {out}: {graph.n_nodes:,} nodes, {graph.n_edges:,} edges"
        f" ({time.perf_counter() - started:.1f} s incl. CCH order)"
    )


@road_app.command("import-osm")
def import_osm_command(
    file: Annotated[Path, typer.Argument(help="OSM extract: .osm, .osm.bz2 or .osm.pbf")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Graph artifact to write (.npz)")] = DEFAULT_GRAPH,
    geojson: Annotated[Path | None, typer.Option(help="Also write the edges as GeoJSON here")] = None,
    speed: Annotated[list[str] | None, typer.Option(help="Default speed per class, e.g. residential=25")] = None,
    no_order: Annotated[bool, typer.Option("--no-order", help="Skip the CCH node order")] = False,
) -> None:
    """Import drivable roads from an OSM file into a road-graph artifact."""
    try:
        graph = import_osm(file, _parse_speeds(speed), progress=True)
    except SafeCityError as err:
        raise _fail(err) from err
    _save(graph, out, not no_order)
    turns = graph.meta.get("turn_restrictions") or {}
    if turns.get("relations"):
        skipped = ", ".join(f"{why} {n}" for why, n in turns["skipped"].items()) or "none"
        console.print(
            f"turn restrictions: {turns['used']:,} of {turns['relations']:,} relations used"
            f" ({turns['bans']:,} banned turns); skipped: {skipped}"
        )
        for bad in turns.get("errors", [])[:5]:
            console.print(f"[yellow]skipped[/yellow] {bad['code']}: relation {bad['relation']}: {bad['reason']}")
    if geojson is not None:
        graph.write_geojson(geojson)
        console.print(f"[green]wrote[/green] {geojson}")


@road_app.command("build-synthetic")
def build_synthetic_command(
    nodes: Annotated[int, typer.Option(help="About this many nodes (10k to 1M)")] = 10_000,
    seed: Annotated[int, typer.Option(help="Generator seed")] = 7,
    out: Annotated[Path, typer.Option("--out", "-o", help="Graph artifact to write (.npz)")] = DEFAULT_GRAPH,
    no_order: Annotated[bool, typer.Option("--no-order", help="Skip the CCH node order")] = False,
) -> None:
    """Generate a deterministic hierarchical synthetic road network."""
    from safecity.geo.road.synthetic import synthetic_network

    try:
        graph = synthetic_network(nodes, seed=seed)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    _save(graph, out, not no_order)


@road_app.command("bake-tiles")
def bake_tiles_command(
    source: Annotated[Path, typer.Argument(help="Graph artifact (.npz) or OSM file")] = DEFAULT_GRAPH,
    out: Annotated[Path, typer.Option("--out", "-o", help="MBTiles file to write")] = DEFAULT_TILES,
    min_zoom: Annotated[int, typer.Option(help="Lowest zoom")] = 10,
    max_zoom: Annotated[int, typer.Option(help="Highest zoom")] = 15,
) -> None:
    """Bake vector tiles (MVT) of the roads into one MBTiles file."""
    from safecity.geo.road.tiles import bake_mbtiles

    try:
        graph = _load_graph(source)
    except SafeCityError as err:
        raise _fail(err) from err
    count = bake_mbtiles(graph, out, min_zoom, max_zoom)
    console.print(f"[green]baked[/green] {count:,} tiles into {out}")


@road_app.command("route")
def route_command(
    origin: Annotated[str, typer.Argument(help="LON,LAT")],
    target: Annotated[str, typer.Argument(help="LON,LAT")],
    graph: Annotated[Path, typer.Option(help="Graph artifact (.npz)")] = DEFAULT_GRAPH,
) -> None:
    """Print the fastest route between two points as GeoJSON."""
    from safecity.geo.road.network import RoadNetwork

    try:
        net = RoadNetwork.load(graph)
        route = net.travel_time(_point(origin), _point(target))
    except SafeCityError as err:
        raise _fail(err) from err
    typer.echo(json.dumps(route.geojson(), ensure_ascii=False))


__all__ = [
    "bake_tiles_command",
    "build_synthetic_command",
    "import_osm_command",
    "road_app",
    "route_command",
]
