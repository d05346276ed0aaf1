"""Import drivable roads from OSM (.osm, .osm.bz2, .osm.pbf) with pyosmium into a RoadGraph (largest SCC)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import osmium
import structlog
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from safecity.geo.road.errors import BadTurnRestriction, NoDrivableRoads, OsmFileError
from safecity.geo.road.graph import HIGHWAY_CODE, RoadGraph
from safecity.kernel import clock

log = structlog.get_logger(__name__)

# Free-flow speeds (km/h) per highway class when a way has no usable maxspeed. Urban Chinese defaults; a district
# overrides them with `SpeedProfile(speeds={...})`.
DEFAULT_SPEEDS_KMH: dict[str, float] = {
    "motorway": 100.0,
    "trunk": 80.0,
    "primary": 60.0,
    "secondary": 50.0,
    "tertiary": 40.0,
    "unclassified": 30.0,
    "residential": 30.0,
    "living_street": 10.0,
    "service": 15.0,
    "motorway_link": 60.0,
    "trunk_link": 50.0,
    "primary_link": 40.0,
    "secondary_link": 35.0,
    "tertiary_link": 30.0,
    "road": 30.0,
    "pedestrian": 10.0,
}

_NO_ACCESS = {"no", "private"}
# Access keys for a car, most specific first (OSM access hierarchy): the first one a way sets decides.
_CAR_KEYS = ("motorcar", "motor_vehicle", "vehicle", "access")
# Pedestrian streets are closed to cars unless a car key opens them (delivery and residents' streets).
_PEDESTRIAN_OPEN = {"yes", "destination", "permissive", "designated"}
_ONEWAY_YES = {"yes", "true", "1"}
_ONEWAY_REVERSE = {"-1", "reverse"}
_SPEED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(km/h|kmh|kph|mph|knots)?\s*$")


@dataclass(frozen=True)
class SpeedProfile:
    """Per-class default speeds and whether to trust `maxspeed` tags (configurable per district)."""

    speeds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPEEDS_KMH))
    use_maxspeed: bool = True
    maxspeed_factor: float = 1.0  # free-flow speed as a share of the posted limit

    def for_class(self, highway: str) -> float:
        """Default speed of a class (falls back to the built-in table)."""
        return float(self.speeds.get(highway, DEFAULT_SPEEDS_KMH.get(highway, 30.0)))


def parse_maxspeed(value: str | None) -> float | None:
    """Parse an OSM maxspeed value into km/h; None for symbolic or unusable values ("CN:urban", "signals")."""
    if not value:
        return None
    first = value.split(";")[0]
    m = _SPEED_RE.match(first)
    if not m:
        return None
    speed = float(m.group(1))
    unit = m.group(2)
    if unit == "mph":
        speed *= 1.609344
    elif unit == "knots":
        speed *= 1.852
    return speed if 0 < speed <= 200 else None


def car_value(tags: Mapping[str, str], keys: tuple[str, ...], suffix: str = "") -> str | None:
    """The value of the most specific of `keys` (+ suffix) the tags set, lower-cased."""
    for key in keys:
        value = tags.get(key + suffix)
        if value is not None:
            return value.strip().lower()
    return None


def way_direction(tags: Mapping[str, str], highway: str) -> int:
    """1: forward only, -1: backward only, 0: both directions (OSM oneway rules, implied for motorways/roundabouts).

    `oneway:motorcar` / `oneway:motor_vehicle` / `oneway:vehicle` override `oneway` for cars.
    """
    oneway = car_value(tags, ("oneway:motorcar", "oneway:motor_vehicle", "oneway:vehicle", "oneway")) or ""
    if oneway in _ONEWAY_YES:
        return 1
    if oneway in _ONEWAY_REVERSE:
        return -1
    if oneway == "no":
        return 0
    if tags.get("junction") in {"roundabout", "circular"} or highway in {"motorway", "motorway_link"}:
        return 1
    return 0


def directions(tags: Mapping[str, str], highway: str) -> tuple[bool, bool]:
    """(forward open, backward open) for cars: oneway rules, then `motor_vehicle:forward/backward=no` and kin."""
    direction = way_direction(tags, highway)
    forward = direction >= 0 and car_value(tags, _CAR_KEYS, ":forward") not in _NO_ACCESS
    backward = direction <= 0 and car_value(tags, _CAR_KEYS, ":backward") not in _NO_ACCESS
    return forward, backward


def is_drivable(tags: Mapping[str, str]) -> str | None:
    """The highway class if a way is open to cars, else None."""
    highway = tags.get("highway")
    if highway not in HIGHWAY_CODE:
        return None
    if tags.get("area") == "yes":
        return None
    if highway == "pedestrian":
        return highway if car_value(tags, _CAR_KEYS[:3]) in _PEDESTRIAN_OPEN else None
    if car_value(tags, _CAR_KEYS) in _NO_ACCESS:
        return None
    return highway


class _RoadHandler(osmium.SimpleHandler):
    """Collects drivable ways with node locations, streaming."""

    def __init__(self, profile: SpeedProfile, progress: Progress | None, task: Any) -> None:
        super().__init__()
        self.profile = profile
        self.progress = progress
        self.task = task
        self.node_index: dict[int, int] = {}
        self.lon: list[float] = []
        self.lat: list[float] = []
        self.tail: list[int] = []
        self.head: list[int] = []
        self.speed: list[float] = []
        self.highway: list[int] = []
        self.way_ids: list[int] = []
        self.names: dict[str, str] = {}  # way id -> `name` (the local name: Chinese in Shanghai)
        self.names_en: dict[str, str] = {}  # way id -> `name:en`
        self.ways_seen = 0
        self.ways_used = 0
        self.missing_locations = 0
        self.way_nodes: dict[int, list[int]] = {}  # drivable way id -> its OSM node ids (for restrictions)
        self.restrictions: list[tuple[int, dict[str, str], list[tuple[str, int, str]]]] = []

    def relation(self, r: Any) -> None:
        """Keep restriction relations (resolved against the graph once it is built)."""
        tags = {t.k: t.v for t in r.tags}
        if tags.get("type") == "restriction":
            members = [(m.type, int(m.ref), m.role) for m in r.members]
            self.restrictions.append((int(r.id), tags, members))

    def _node(self, ref: int, lon: float, lat: float) -> int:
        idx = self.node_index.get(ref)
        if idx is None:
            idx = len(self.lon)
            self.node_index[ref] = idx
            self.lon.append(lon)
            self.lat.append(lat)
        return idx

    def way(self, w: Any) -> None:
        """Turn one drivable way into directed edges between consecutive nodes."""
        self.ways_seen += 1
        if self.progress is not None and self.ways_seen % 5000 == 0:
            self.progress.update(self.task, completed=self.ways_seen)
        tags = {t.k: t.v for t in w.tags}
        highway = is_drivable(tags)
        if highway is None:
            return
        speed = self._speed(tags, highway, "")
        speed_fwd = self._speed(tags, highway, ":forward") or speed
        speed_bwd = self._speed(tags, highway, ":backward") or speed
        forward, backward = directions(tags, highway)
        refs: list[int] = []
        for n in w.nodes:
            loc = n.location
            if not loc.valid():
                # A way whose nodes are outside the extract: cut it there, keep the rest.
                self.missing_locations += 1
                refs.append(-1)
                continue
            refs.append(self._node(n.ref, loc.lon, loc.lat))
        code = HIGHWAY_CODE[highway]
        used = False
        for a, b in itertools.pairwise(refs):
            if a < 0 or b < 0:
                continue
            used = True
            if forward:
                self._edge(a, b, speed_fwd, code, w.id)
            if backward:
                self._edge(b, a, speed_bwd, code, w.id)
        self.ways_used += int(used)
        if used:
            self.way_nodes[int(w.id)] = [int(n.ref) for n in w.nodes]
            if name := tags.get("name", "").strip():
                self.names[str(w.id)] = name
            if name_en := tags.get("name:en", "").strip():
                self.names_en[str(w.id)] = name_en

    def _speed(self, tags: Mapping[str, str], highway: str, suffix: str) -> float:
        """Posted `maxspeed` (+ ":forward"/":backward") times the profile's factor, else the class default (or 0)."""
        if self.profile.use_maxspeed:
            posted = parse_maxspeed(tags.get("maxspeed" + suffix))
            if posted:
                return posted * self.profile.maxspeed_factor
        return self.profile.for_class(highway) if not suffix else 0.0

    def _edge(self, a: int, b: int, speed: float, code: int, way_id: int) -> None:
        self.tail.append(a)
        self.head.append(b)
        self.speed.append(speed)
        self.highway.append(code)
        self.way_ids.append(way_id)


Relation = tuple[int, dict[str, str], list[tuple[str, int, str]]]  # id, tags, members (type, ref, role)
_CAR_RESTRICTION_KEYS = ("restriction:motorcar", "restriction:motor_vehicle", "restriction:vehicle", "restriction")
_CAR_EXCEPT = {"motorcar", "motor_vehicle", "vehicle"}
MAX_LISTED_ERRORS = 50


@dataclass
class RestrictionReport:
    """What became of the OSM restriction relations: banned turns, and counts of what was skipped and why."""

    relations: int = 0
    used: int = 0
    bans: list[tuple[int, int]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[BadTurnRestriction] = field(default_factory=list)

    def skip(self, why: str) -> None:
        """Count a relation skipped on purpose (not for cars, a via way, roads not in the graph)."""
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def bad(self, relation: int, reason: str) -> None:
        """Count a malformed relation as `road.bad_turn_restriction` and keep the first few."""
        self.skip("bad")
        err = BadTurnRestriction(relation=relation, reason=reason)
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(err)
        log.warning("turn_restriction_skipped", code=err.code, relation=relation, reason=reason)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary for the graph's metadata."""
        return {
            "relations": self.relations,
            "used": self.used,
            "bans": len(self.bans),
            "skipped": dict(sorted(self.skipped.items())),
            "errors": [{"code": e.code, **e.params} for e in self.errors],
        }


def resolve_restrictions(
    graph: RoadGraph, relations: list[Relation], way_nodes: Mapping[int, list[int]]
) -> RestrictionReport:
    """Turn OSM restriction relations (`no_*` / `only_*` with a via node) into banned (from edge, to edge) pairs.

    Via-way restrictions are counted and skipped. Relations for other vehicles, with a car `except`, or on roads the
    graph does not hold are counted and skipped; malformed ones are `road.bad_turn_restriction`, counted and skipped.
    """
    report = RestrictionReport(relations=len(relations))
    node_index = {int(ref): i for i, ref in enumerate(graph.node_ref.tolist())}
    needed = {ref for _, _, members in relations for kind, ref, _ in members if kind == "w"}
    mask = np.isin(graph.way_ref, np.fromiter(needed, dtype=np.int64, count=len(needed)))
    into: dict[tuple[int, int], list[int]] = {}
    out_of: dict[tuple[int, int], list[int]] = {}
    tail, head = graph.tail, graph.head
    for e in np.nonzero(mask)[0].tolist():
        way = int(graph.way_ref[e])
        into.setdefault((way, int(head[e])), []).append(e)
        out_of.setdefault((way, int(tail[e])), []).append(e)
    for rid, tags, members in relations:
        value = next((tags[k] for k in _CAR_RESTRICTION_KEYS if k in tags), None)
        if value is None:
            if any(k.startswith("restriction:") for k in tags):
                report.skip("other_vehicles")
            else:
                report.bad(rid, "no restriction tag")
            continue
        if _CAR_EXCEPT & {v.strip() for v in tags.get("except", "").split(";")}:
            report.skip("except_cars")
            continue
        value = value.strip()
        only = value.startswith("only_")
        if not (only or value.startswith("no_")):
            report.bad(rid, f"unknown restriction {value!r}")
            continue
        froms = [ref for kind, ref, role in members if role == "from"]
        tos = [ref for kind, ref, role in members if role == "to"]
        vias = [(kind, ref) for kind, ref, role in members if role == "via"]
        if (len(vias) == 1 and vias[0][0] == "w") or (len(vias) > 1 and all(k == "w" for k, _ in vias)):
            report.skip("via_way")
            continue
        if len(vias) != 1 or vias[0][0] != "n":
            report.bad(rid, "needs exactly one via node")
            continue
        if not froms or not tos or any(k != "w" for k, _, r in members if r in {"from", "to"}):
            report.bad(rid, "needs a from way and a to way")
            continue
        if only and (len(froms) > 1 or len(tos) > 1):
            report.bad(rid, "an only_* restriction needs exactly one from and one to way")
            continue
        via_ref = vias[0][1]
        if any(w not in way_nodes for w in froms + tos):
            report.skip("not_drivable")
            continue
        if any(via_ref not in way_nodes[w] for w in froms + tos):
            report.bad(rid, f"via node {via_ref} is not on the from and to ways")
            continue
        v = node_index.get(via_ref)
        if v is None:
            report.skip("not_in_graph")
            continue
        from_edges = [e for w in froms for e in into.get((w, v), [])]
        to_edges = [e for w in tos for e in out_of.get((w, v), [])]
        if any(len(into.get((w, v), [])) > 1 for w in froms) or any(len(out_of.get((w, v), [])) > 1 for w in tos):
            # The via node inside a two-way from (or to) way: which side is meant is ambiguous (OSM: the way must
            # start or end at the via node).
            report.bad(rid, f"via node {via_ref} is inside a from or to way, not at its end")
            continue
        if not from_edges or not to_edges:
            report.skip("not_in_graph")  # one-way against the restriction, or cut off the largest component
            continue
        if only:
            keep = set(to_edges)
            outs = range(int(graph.indptr[v]), int(graph.indptr[v + 1]))
            report.bans += [(e, f) for e in from_edges for f in outs if f not in keep]
        else:
            report.bans += [(e, f) for e in from_edges for f in to_edges]
        report.used += 1
    return report


def import_osm(
    path: str | Path,
    profile: SpeedProfile | None = None,
    *,
    progress: bool = False,
    largest_scc: bool = True,
) -> RoadGraph:
    """Read an OSM file (.osm, .osm.bz2, .osm.pbf) and return the drivable road graph (largest SCC)."""
    path = Path(path)
    profile = profile or SpeedProfile()
    if not path.is_file():
        raise OsmFileError(path=str(path), reason="no such file")
    if path.stat().st_size == 0:
        raise OsmFileError(path=str(path), reason="the file is empty")
    bar = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} ways"), TimeElapsedColumn()
    )
    task = bar.add_task(f"importing {path.name}", total=None)
    handler = _RoadHandler(profile, bar if progress else None, task)
    try:
        if progress:
            with bar:
                handler.apply_file(str(path), locations=True)
                bar.update(task, completed=handler.ways_seen)
        else:
            handler.apply_file(str(path), locations=True)
    except RuntimeError as err:
        # libosmium reports truncated/corrupt input and unknown formats as RuntimeError.
        raise OsmFileError(path=str(path), reason=str(err).strip() or "corrupt file") from err
    if not handler.tail:
        raise NoDrivableRoads(path=str(path))
    meta = {
        "source": path.name,
        "kind": "osm",
        "created_at": clock.now().isoformat(),
        "speeds_kmh": dict(profile.speeds),
        "ways_used": handler.ways_used,
        # Road names by OSM way id (edges carry `way_ref`): labels for tiles and routes.
        "way_names": handler.names,
        "way_names_en": handler.names_en,
    }
    graph = RoadGraph.from_edges(
        lon=np.asarray(handler.lon, dtype=np.float64),
        lat=np.asarray(handler.lat, dtype=np.float64),
        node_ref=np.asarray(list(handler.node_index.keys()), dtype=np.int64),
        tail=handler.tail,
        head=handler.head,
        speed_kmh=handler.speed,
        highway=handler.highway,
        way_ref=handler.way_ids,
        meta=meta,
        largest_scc=largest_scc,
    )
    report = resolve_restrictions(graph, handler.restrictions, handler.way_nodes)
    graph.set_turn_bans(report.bans)
    graph.meta["turn_restrictions"] = report.summary()
    log.info(
        "osm_imported",
        source=path.name,
        ways=handler.ways_used,
        nodes=graph.n_nodes,
        edges=graph.n_edges,
        dropped_nodes=len(handler.lon) - graph.n_nodes,
        restrictions=report.used,
        turn_bans=len(report.bans),
        restrictions_skipped=sum(report.skipped.values()),
    )
    return graph
