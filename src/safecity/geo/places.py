"""The place hierarchy (district -> town -> community -> building) and the index that tags points with it.

Pure: imports only the kernel, shapely and numpy. Coordinates are WGS84 (lon, lat). A point outside every polygon of
a level is tagged None at that level; it is never dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import msgspec
import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.strtree import STRtree

from safecity.kernel.errors import InvalidInput, NotFound

__all__ = [
    "EMPTY_TAGS",
    "LEVELS",
    "InvalidPlace",
    "Level",
    "Place",
    "PlaceNotFound",
    "PlaceTags",
    "PlaceTree",
    "Predicate",
    "TagIndex",
    "boundary_places",
    "load_places",
]

Level = Literal["district", "town", "community", "building"]
LEVELS: Final[tuple[Level, ...]] = get_args(Level)
_RANK: Final[dict[str, int]] = {lvl: i for i, lvl in enumerate(LEVELS)}
Predicate = Literal["intersects", "within"]

# English names of Shanghai's districts by adcode, so the real boundary files load with `name_en` filled in.
SHANGHAI_DISTRICTS_EN: Final[dict[str, str]] = {
    "310101": "Huangpu",
    "310104": "Xuhui",
    "310105": "Changning",
    "310106": "Jing'an",
    "310107": "Putuo",
    "310109": "Hongkou",
    "310110": "Yangpu",
    "310112": "Minhang",
    "310113": "Baoshan",
    "310114": "Jiading",
    "310115": "Pudong",
    "310116": "Jinshan",
    "310117": "Songjiang",
    "310118": "Qingpu",
    "310120": "Fengxian",
    "310151": "Chongming",
}


class InvalidPlace(InvalidInput):
    """A place or a place file is malformed (bad level, geometry, id or parent)."""

    code = "geo.place_invalid"
    title_en = "Invalid place"
    title_zh = "区域数据无效"
    message_en = "The place data is not valid."
    message_zh = "区域数据无效。"


class PlaceNotFound(NotFound):
    """No place has the requested id."""

    code = "geo.place_not_found"
    message_en = "Place {id} was not found."
    message_zh = "未找到区域 {id}。"

    def __init__(self, place_id: str) -> None:
        super().__init__(what="place", id=place_id)


@dataclass(frozen=True, slots=True, eq=False)
class Place:
    """One polygon of the hierarchy; `parent_id` names a place of a higher level (or None for a root)."""

    id: str
    level: Level
    name: str
    geometry: Any  # shapely Polygon | MultiPolygon (shapely ships no type hints)
    parent_id: str | None = None
    name_en: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidPlace("a place needs a non-empty id")
        if self.level not in _RANK:
            raise InvalidPlace(f"place {self.id}: level {self.level!r} is not one of {LEVELS}")
        if not isinstance(self.geometry, Polygon | MultiPolygon) or self.geometry.is_empty:
            raise InvalidPlace(f"place {self.id}: geometry must be a non-empty Polygon or MultiPolygon")


class PlaceTags(msgspec.Struct, frozen=True, kw_only=True):
    """The ids a point falls in at each level; None where it is outside every polygon of that level."""

    district: str | None = None
    town: str | None = None
    community: str | None = None
    building: str | None = None

    def as_tuple(self) -> tuple[str | None, str | None, str | None]:
        """Return (town, community, building)."""
        return (self.town, self.community, self.building)


EMPTY_TAGS: Final = PlaceTags()


def _polygonal(geom: Any, where: str) -> Any:
    """Return a valid Polygon/MultiPolygon for `geom`, repairing invalid rings (real boundary files have some)."""
    if geom.is_valid:
        return geom
    fixed = shapely.make_valid(geom)
    parts = [p for p in shapely.get_parts(fixed) if isinstance(p, Polygon) and not p.is_empty]
    if not parts:
        raise InvalidPlace(f"{where}: geometry has no polygonal part after repair")
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _load_json(source: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidPlace(f"cannot read GeoJSON {path}: {err}") from err
    if not isinstance(data, dict):
        raise InvalidPlace(f"{path}: not a GeoJSON object")
    return data


def _features(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
        raise InvalidPlace("expected a GeoJSON FeatureCollection")
    return cast(list[Mapping[str, Any]], data["features"])


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def boundary_places(
    source: Mapping[str, Any] | str | Path,
    *,
    level: Level = "district",
    parent_id: str | None = None,
    id_prefix: str = "",
    names_en: Mapping[str, str] | None = None,
) -> list[Place]:
    """Read a "flat" boundary file (one feature per area, e.g. the DataV Shanghai files) as places of one level.

    The id is `id_prefix` + the feature's `adcode` (else `id`, else the feature id, else its position); `name` comes
    from the properties; the other properties are kept as attributes. `names_en` maps raw ids to English names
    (Shanghai's districts by default).
    """
    data = _load_json(source)
    en = SHANGHAI_DISTRICTS_EN if names_en is None else names_en
    places: list[Place] = []
    for i, feat in enumerate(_features(data)):
        props = dict(feat.get("properties") or {})
        raw = props.get("adcode", props.get("id", feat.get("id", i)))
        raw_id = str(raw)
        where = f"feature {i} ({raw_id})"
        try:
            geom = shape(feat["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InvalidPlace(f"{where}: bad geometry: {err}") from err
        props.pop("level", None)
        props.pop("parent", None)
        places.append(
            Place(
                id=id_prefix + raw_id,
                level=level,
                name=str(props.pop("name", raw_id)),
                geometry=_polygonal(geom, where),
                parent_id=parent_id,
                name_en=en.get(raw_id),
                attributes=props,
            )
        )
    return places


def load_places(source: Mapping[str, Any] | str | Path, *, flat_level: Level = "district") -> PlaceTree:
    """Load a boundaries file: a hierarchy (every feature has `id` and `level` properties) or a flat file.

    A flat file (DataV's Shanghai districts: `adcode`, `name`) becomes places of `flat_level`.
    """
    data = _load_json(source)
    features = _features(data)
    hierarchical = bool(features) and all(
        isinstance(f.get("properties"), Mapping)
        and f["properties"].get("level") in _RANK
        and (f["properties"].get("id") is not None or f.get("id") is not None)
        and "adcode" not in f["properties"]
        for f in features
    )
    if hierarchical:
        return PlaceTree.from_geojson(data)
    return PlaceTree.from_boundary_file(data, level=flat_level)


class PlaceTree:
    """An immutable set of places with parent links, indexed by id and by level."""

    def __init__(self, places: Iterable[Place], *, meta: Mapping[str, Any] | None = None) -> None:
        self._places: dict[str, Place] = {}
        for place in places:
            if place.id in self._places:
                raise InvalidPlace(f"duplicate place id {place.id}")
            self._places[place.id] = place
        self._children: dict[str, list[str]] = {pid: [] for pid in self._places}
        self._by_level: dict[str, list[Place]] = {lvl: [] for lvl in LEVELS}
        for place in self._places.values():
            self._by_level[place.level].append(place)
            if place.parent_id is None:
                continue
            parent = self._places.get(place.parent_id)
            if parent is None:
                raise InvalidPlace(f"place {place.id}: parent {place.parent_id} is not in the tree")
            if _RANK[parent.level] >= _RANK[place.level]:
                raise InvalidPlace(f"place {place.id} ({place.level}) cannot sit under {parent.id} ({parent.level})")
            self._children[parent.id].append(place.id)
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def from_geojson(cls, source: Mapping[str, Any] | str | Path) -> PlaceTree:
        """Load a FeatureCollection whose properties give `id`, `level`, `name`, `name_en`, `parent` per feature.

        Other properties become attributes; top-level members other than `type` and `features` become `meta`.
        """
        data = _load_json(source)
        places: list[Place] = []
        for i, feat in enumerate(_features(data)):
            props = dict(feat.get("properties") or {})
            pid = props.pop("id", feat.get("id"))
            where = f"feature {i} ({pid})"
            if pid is None:
                raise InvalidPlace(f"{where}: no id")
            try:
                geom = shape(feat["geometry"])
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise InvalidPlace(f"{where}: bad geometry: {err}") from err
            level = props.pop("level", None)
            if level not in _RANK:
                raise InvalidPlace(f"{where}: level {level!r} is not one of {LEVELS}")
            parent = props.pop("parent", props.pop("parent_id", None))
            places.append(
                Place(
                    id=str(pid),
                    level=cast(Level, level),
                    name=str(props.pop("name", pid)),
                    geometry=_polygonal(geom, where),
                    parent_id=_opt_str(parent),
                    name_en=_opt_str(props.pop("name_en", None)),
                    attributes=props,
                )
            )
        meta = {k: v for k, v in data.items() if k not in ("type", "features")}
        return cls(places, meta=meta)

    @classmethod
    def from_boundary_file(
        cls,
        source: Mapping[str, Any] | str | Path,
        *,
        level: Level = "district",
        parent_id: str | None = None,
        id_prefix: str = "",
    ) -> PlaceTree:
        """Load a flat boundary file (see `boundary_places`) as a tree of one level."""
        data = _load_json(source)
        meta = {k: v for k, v in data.items() if k not in ("type", "features")}
        return cls(boundary_places(data, level=level, parent_id=parent_id, id_prefix=id_prefix), meta=meta)

    def __len__(self) -> int:
        return len(self._places)

    def __iter__(self) -> Iterator[Place]:
        return iter(self._places.values())

    def __contains__(self, place_id: object) -> bool:
        return place_id in self._places

    def __getitem__(self, place_id: str) -> Place:
        try:
            return self._places[place_id]
        except KeyError as err:
            raise PlaceNotFound(place_id) from err

    def get(self, place_id: str) -> Place | None:
        """Return the place with this id, or None."""
        return self._places.get(place_id)

    def level(self, level: Level) -> list[Place]:
        """Return the places of one level, in load order."""
        return list(self._by_level[level])

    def children(self, place_id: str) -> list[Place]:
        """Return the direct children of a place."""
        return [self._places[c] for c in self._children[self[place_id].id]]

    def parent(self, place_id: str) -> Place | None:
        """Return the parent of a place, or None for a root."""
        pid = self[place_id].parent_id
        return None if pid is None else self._places[pid]

    def ancestors(self, place_id: str) -> list[Place]:
        """Return the parent, grandparent, ... of a place (nearest first)."""
        out: list[Place] = []
        current = self.parent(place_id)
        while current is not None:
            out.append(current)
            current = self.parent(current.id)
        return out

    def names(self, place_id: str) -> tuple[str, str] | None:
        """A place's full name in (zh, en), e.g. ("黄浦区外滩街道", "Waitan, Huangpu"); None for an unknown id.

        zh runs from the largest level down with no separator, as Chinese addresses do; en runs from the place up,
        comma-separated, and falls back to the Chinese name for a level with no `name_en`.
        """
        place = self._places.get(place_id)
        if place is None:
            return None
        chain = [place, *self.ancestors(place_id)]
        zh = "".join(p.name for p in reversed(chain))
        en = ", ".join(p.name_en or p.name for p in chain)
        return zh, en

    def tags_of(self, place_id: str) -> PlaceTags:
        """Return the tags a place and its ancestors give (e.g. a building's town, community and itself)."""
        place = self[place_id]
        levels: dict[str, str] = {p.level: p.id for p in [place, *self.ancestors(place_id)]}
        return PlaceTags(**levels)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Return (min_lon, min_lat, max_lon, max_lat) over every place; NaNs when the tree is empty."""
        if not self._places:
            return (math.nan, math.nan, math.nan, math.nan)
        b = shapely.bounds(np.array([p.geometry for p in self._places.values()], dtype=object))
        return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))

    def to_geojson(self, levels: Sequence[Level] | None = None) -> dict[str, Any]:
        """Return a GeoJSON FeatureCollection (meta as foreign members); `from_geojson` reads it back unchanged."""
        wanted = set(LEVELS if levels is None else levels)
        features = [
            {
                "type": "Feature",
                "id": p.id,
                "properties": {
                    **p.attributes,
                    "id": p.id,
                    "level": p.level,
                    "name": p.name,
                    "name_en": p.name_en,
                    "parent": p.parent_id,
                },
                "geometry": mapping(p.geometry),
            }
            for p in self._places.values()
            if p.level in wanted
        ]
        return {"type": "FeatureCollection", **self.meta, "features": features}


# One level's entry in a grid cell: an index into that level's places (-1: none) when the whole cell agrees, or the
# ascending indices of the candidate places that must be tested point by point.
_CellLevel = int | npt.NDArray[np.intp]


class TagIndex:
    """Tags points with the place ids they fall in, per level, using shapely STRtrees and a coarse grid cache.

    `predicate="intersects"` counts a point on a boundary as inside; `"within"` needs it strictly inside. When
    polygons of one level overlap, the place loaded first wins (the same answer a linear scan gives).
    """

    def __init__(self, tree: PlaceTree, *, predicate: Predicate = "intersects", grid: int = 256) -> None:
        if predicate not in ("intersects", "within"):
            raise InvalidPlace(f"predicate must be 'intersects' or 'within', not {predicate!r}")
        self.tree = tree
        self.predicate: Predicate = predicate
        self._xy_test = shapely.intersects_xy if predicate == "intersects" else shapely.contains_xy
        self._levels: list[Level] = [lvl for lvl in LEVELS if tree.level(lvl)]
        self._ids: dict[str, list[str]] = {}
        self._geoms: dict[str, npt.NDArray[np.object_]] = {}
        self._trees: dict[str, STRtree] = {}
        for lvl in self._levels:
            places = tree.level(lvl)
            geoms = np.array([p.geometry for p in places], dtype=object)
            shapely.prepare(geoms)
            self._ids[lvl] = [p.id for p in places]
            self._geoms[lvl] = geoms
            self._trees[lvl] = STRtree(geoms)
        # Tags are interned: one shared object per combination; "nowhere" is always EMPTY_TAGS.
        self._interned: dict[tuple[int, ...], PlaceTags] = {(-1,) * len(self._levels): EMPTY_TAGS}
        self._grid_n = 0
        self._cell_tags: list[PlaceTags | None] = []
        self._cell_slow: dict[int, tuple[_CellLevel, ...]] = {}
        if grid > 0 and self._levels:
            self._build_grid(grid)

    @property
    def levels(self) -> list[Level]:
        """Return the levels that have at least one place."""
        return list(self._levels)

    def _make_tags(self, codes: tuple[int, ...]) -> PlaceTags:
        """Return the (shared) PlaceTags for one place index per indexed level (-1: none)."""
        found = self._interned.get(codes)
        if found is None:
            kwargs = {lvl: self._ids[lvl][c] for lvl, c in zip(self._levels, codes, strict=True) if c >= 0}
            found = PlaceTags(**kwargs)
            self._interned[codes] = found
        return found

    def _build_grid(self, grid: int) -> None:
        """Precompute, per grid cell, the answer when a cell lies wholly inside one place (or none) at every level."""
        x0, y0, x1, y1 = self.tree.bounds
        size = max(x1 - x0, y1 - y0) / grid
        if not size > 0:
            return
        nx = max(1, math.ceil((x1 - x0) / size))
        ny = max(1, math.ceil((y1 - y0) / size))
        grid_i, grid_j = np.meshgrid(np.arange(nx), np.arange(ny))
        ii, jj = grid_i.ravel(), grid_j.ravel()  # cell = j * nx + i
        # Grow each cell a little so rounding in the lookup never puts a point just outside the cell it was tested as.
        eps = size * 1e-6
        boxes = shapely.box(
            x0 + ii * size - eps, y0 + jj * size - eps, x0 + (ii + 1) * size + eps, y0 + (jj + 1) * size + eps
        )
        n_cells = nx * ny
        first_by_level: list[npt.NDArray[np.intp]] = []
        resolved_by_level: list[npt.NDArray[np.bool_]] = []
        candidates: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
        for lvl in self._levels:
            cells, polys = self._trees[lvl].query(boxes, predicate="intersects")
            order = np.lexsort((polys, cells))
            cells, polys = cells[order], polys[order]
            counts = np.bincount(cells, minlength=n_cells)
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            has = counts > 0
            first = np.full(n_cells, -1, dtype=np.intp)
            first[has] = polys[starts[has]]
            # Resolved: no candidate, or the first (winning) candidate holds the whole cell in its interior.
            resolved = ~has
            idx = np.flatnonzero(has)
            resolved[idx] = shapely.contains_properly(self._geoms[lvl][first[idx]], boxes[idx])
            first_by_level.append(first)
            resolved_by_level.append(resolved)
            candidates.append((polys, starts, counts))
        all_resolved = np.logical_and.reduce(resolved_by_level)
        cell_tags: list[PlaceTags | None] = [None] * n_cells
        for cell in np.flatnonzero(all_resolved).tolist():
            cell_tags[cell] = self._make_tags(tuple(int(first[cell]) for first in first_by_level))
        for cell in np.flatnonzero(~all_resolved).tolist():
            entry: list[_CellLevel] = []
            for first, resolved, (polys, starts, counts) in zip(
                first_by_level, resolved_by_level, candidates, strict=True
            ):
                if resolved[cell]:
                    entry.append(int(first[cell]))
                else:
                    entry.append(polys[starts[cell] : starts[cell] + counts[cell]])
            self._cell_slow[cell] = tuple(entry)
        self._grid_n = n_cells
        self._grid = (x0, y0, x1, y1, 1.0 / size, nx, ny)
        self._cell_tags = cell_tags

    def tag(self, lon: float, lat: float) -> PlaceTags:
        """Return the tags of one point (EMPTY_TAGS when it is outside every place, or not a finite number)."""
        if not self._grid_n:
            return self._tag_tree(lon, lat)
        x0, y0, x1, y1, inv, nx, ny = self._grid
        # Written so that NaN fails the test and lands outside.
        if not (x0 <= lon <= x1 and y0 <= lat <= y1):
            return EMPTY_TAGS
        i = min(int((lon - x0) * inv), nx - 1)
        j = min(int((lat - y0) * inv), ny - 1)
        cell = j * nx + i
        found = self._cell_tags[cell]
        if found is not None:
            return found
        codes: list[int] = []
        for lvl, entry in zip(self._levels, self._cell_slow[cell], strict=True):
            if isinstance(entry, int):
                codes.append(entry)
                continue
            hits = np.flatnonzero(self._xy_test(self._geoms[lvl][entry], lon, lat))
            codes.append(int(entry[hits[0]]) if hits.size else -1)
        return self._make_tags(tuple(codes))

    def _tag_tree(self, lon: float, lat: float) -> PlaceTags:
        """Tag one point with a direct STRtree query per level (the path when the grid is off)."""
        if not (math.isfinite(lon) and math.isfinite(lat)):
            return EMPTY_TAGS
        point = shapely.Point(lon, lat)
        codes: list[int] = []
        for lvl in self._levels:
            hits = self._trees[lvl].query(point, predicate=self.predicate)
            codes.append(int(hits.min()) if hits.size else -1)
        return self._make_tags(tuple(codes))

    def tag_codes(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> dict[Level, npt.NDArray[np.intp]]:
        """Return, per indexed level, the index of each point's place in `tree.level(level)` (-1: none)."""
        x = np.asarray(lons, dtype=np.float64).ravel()
        y = np.asarray(lats, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise InvalidInput(f"lons and lats differ in length: {x.size} != {y.size}")
        n = x.size
        finite = np.isfinite(x) & np.isfinite(y)
        rows = np.flatnonzero(finite)
        points = shapely.points(x[rows], y[rows])
        out: dict[Level, npt.NDArray[np.intp]] = {}
        for lvl in self._levels:
            inp, hit = self._trees[lvl].query(points, predicate=self.predicate)
            best = np.full(rows.size, np.iinfo(np.intp).max, dtype=np.intp)
            # The lowest place index wins where polygons of one level overlap.
            np.minimum.at(best, inp, hit)
            codes = np.full(n, -1, dtype=np.intp)
            found = best != np.iinfo(np.intp).max
            codes[rows[found]] = best[found]
            out[lvl] = codes
        return out

    def tag_many(self, lons: npt.ArrayLike, lats: npt.ArrayLike) -> list[PlaceTags]:
        """Return the tags of many points (one vectorized STRtree query per level), in input order."""
        codes = self.tag_codes(lons, lats)
        if not self._levels:
            return [EMPTY_TAGS] * int(np.asarray(lons).size)
        columns = [codes[lvl].tolist() for lvl in self._levels]
        return [self._make_tags(row) for row in zip(*columns, strict=True)]
