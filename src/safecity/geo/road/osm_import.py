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

from safecity.geo.road.errors import NoDrivableRoads, OsmFileError
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
}

_NO_ACCESS = {"no", "private"}
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


def way_direction(tags: Mapping[str, str], highway: str) -> int:
    """1: forward only, -1: backward only, 0: both directions (OSM oneway rules, implied for motorways/roundabouts)."""
    oneway = tags.get("oneway", "").strip().lower()
    if oneway in _ONEWAY_YES:
        return 1
    if oneway in _ONEWAY_REVERSE:
        return -1
    if oneway == "no":
        return 0
    if tags.get("junction") in {"roundabout", "circular"} or highway in {"motorway", "motorway_link"}:
        return 1
    return 0


def is_drivable(tags: Mapping[str, str]) -> str | None:
    """The highway class if a way is open to cars, else None."""
    highway = tags.get("highway")
    if highway not in HIGHWAY_CODE:
        return None
    if tags.get("area") == "yes":
        return None
    for key in ("access", "motor_vehicle", "motorcar", "vehicle"):
        if tags.get(key) in _NO_ACCESS:
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
        speed = None
        if self.profile.use_maxspeed:
            posted = parse_maxspeed(tags.get("maxspeed"))
            speed = posted * self.profile.maxspeed_factor if posted else None
        if speed is None:
            speed = self.profile.for_class(highway)
        direction = way_direction(tags, highway)
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
            if direction >= 0:
                self._edge(a, b, speed, code, w.id)
            if direction <= 0:
                self._edge(b, a, speed, code, w.id)
        self.ways_used += int(used)
        if used:
            if name := tags.get("name", "").strip():
                self.names[str(w.id)] = name
            if name_en := tags.get("name:en", "").strip():
                self.names_en[str(w.id)] = name_en

    def _edge(self, a: int, b: int, speed: float, code: int, way_id: int) -> None:
        self.tail.append(a)
        self.head.append(b)
        self.speed.append(speed)
        self.highway.append(code)
        self.way_ids.append(way_id)


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
    log.info(
        "osm_imported",
        source=path.name,
        ways=handler.ways_used,
        nodes=graph.n_nodes,
        edges=graph.n_edges,
        dropped_nodes=len(handler.lon) - graph.n_nodes,
    )
    return graph
