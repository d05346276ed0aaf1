"""Routing over HTTP: routes, nearest units, matrices, isochrones, coverage, road conditions, and road vector tiles.

Every query runs on the runtime's `RoadService` (in a worker thread, one at a time). Points are `[lon, lat]` in
WGS84, or GCJ-02 when the request says `crs: "gcj02"`; answers then come back in GCJ-02 too.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
import shapely
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from safecity.api.auth import ANY_ROLE, require
from safecity.api.deps import RoadsDep
from safecity.api.ports import Roads
from safecity.api.problems import PROBLEM_RESPONSES, Problem
from safecity.geo.gcj02 import gcj02_to_wgs84, wgs84_to_gcj02_many
from safecity.geo.road.network import Route
from safecity.geo.road.service import ConditionsSummary, tilejson
from safecity.geo.road.snap import Point
from safecity.kernel.errors import InvalidInput
from safecity.sharing.principal import Role

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
MAX_UNITS = 10_000
MAX_MATRIX_SIDE = 500
MAX_BANDS = 6
MAX_MINUTES = 120.0
MAX_EDGES_GEOJSON = 20_000

Lon = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
Lat = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
LonLat = Annotated[tuple[Lon, Lat], Field(description="A point as [lon, lat].", examples=[[121.25, 31.37]])]
Crs = Literal["wgs84", "gcj02"]
Minutes = Annotated[float, Field(gt=0.0, le=MAX_MINUTES, allow_inf_nan=False)]
UnitId = Annotated[str, Field(min_length=1, max_length=200)]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    503: {"model": Problem, "content": {"application/problem+json": {}}, "description": "No road network loaded."},
}
QUERY_ROLES = (Role.DISPATCHER, Role.OPERATOR)

router = APIRouter(prefix="/api/v1/routing", tags=["routing"], responses=_RESPONSES)
tiles_router = APIRouter(prefix="/tiles", tags=["tiles"], responses=_RESPONSES)


# --- coordinates at the edge ---------------------------------------------------------------------------------------


def to_wgs(point: tuple[float, float], crs: Crs) -> Point:
    """A request point in WGS84."""
    return gcj02_to_wgs84(point[0], point[1]) if crs == "gcj02" else (float(point[0]), float(point[1]))


def coords_out(coords: list[tuple[float, float]] | list[list[float]], crs: Crs) -> list[list[float]]:
    """Answer coordinates in the request's CRS."""
    if crs != "gcj02" or not coords:
        return [[float(c[0]), float(c[1])] for c in coords]
    arr = np.asarray(coords, dtype=np.float64)
    x, y = wgs84_to_gcj02_many(arr[:, 0], arr[:, 1])
    return [[float(a), float(b)] for a, b in zip(x, y, strict=True)]


def geometry_out(geom: shapely.Geometry, crs: Crs) -> dict[str, Any]:
    """A shapely geometry as GeoJSON in the request's CRS."""
    if crs == "gcj02":

        def shift(xy: np.ndarray) -> np.ndarray:
            x, y = wgs84_to_gcj02_many(xy[:, 0], xy[:, 1])
            return np.stack([x, y], axis=1)

        geom = shapely.transform(geom, shift)
    mapped: dict[str, Any] = shapely.geometry.mapping(geom)
    return mapped


def _finite(seconds: float) -> float | None:
    return round(float(seconds), 3) if math.isfinite(seconds) else None


# --- models --------------------------------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    crs: Crs = Field("wgs84", description="CRS of the points in the request and the answer: wgs84 or gcj02.")


class RouteRequest(_In):
    """Two points to route between."""

    from_: LonLat = Field(alias="from")
    to: LonLat
    geometry: bool = Field(True, description="Include the route line.")


class LineString(BaseModel):
    """A GeoJSON LineString."""

    type: Literal["LineString"] = "LineString"
    coordinates: list[list[float]]


class RouteAnswer(BaseModel):
    """The fastest route."""

    seconds: float = Field(description="Travel time in seconds (free flow with live conditions).")
    meters: float = Field(description="Length of the route in metres (with or without the line).")
    geometry: LineString | None = None


class UnitIn(BaseModel):
    """A unit and where it is."""

    model_config = ConfigDict(extra="forbid")

    id: UnitId
    lon: Lon
    lat: Lat


def _unique_units(units: list[UnitIn]) -> list[UnitIn]:
    ids = [u.id for u in units]
    if len(set(ids)) != len(ids):
        raise ValueError("unit ids must be unique")
    return units


class NearestRequest(_In):
    """An incident point and the units to rank by road time to it."""

    point: LonLat
    units: list[UnitIn] = Field(min_length=1, max_length=MAX_UNITS)
    k: int = Field(3, ge=1, le=100, description="How many units to return.")
    paths: bool = Field(False, description="Include each unit's route.")

    @model_validator(mode="after")
    def _check(self) -> NearestRequest:
        _unique_units(self.units)
        return self


class RankedUnit(BaseModel):
    """One unit's road time to the incident."""

    rank: int
    unit_id: str
    seconds: float
    meters: float | None = None
    geometry: LineString | None = None


class NearestAnswer(BaseModel):
    """Units ranked by road time (units that cannot reach the incident are left out)."""

    units: list[RankedUnit]


class MatrixRequest(_In):
    """Origins and targets."""

    origins: list[LonLat] = Field(min_length=1, max_length=MAX_MATRIX_SIDE)
    targets: list[LonLat] = Field(min_length=1, max_length=MAX_MATRIX_SIDE)


class MatrixAnswer(BaseModel):
    """Travel seconds, one row per origin; null where a target is unreachable."""

    seconds: list[list[float | None]]


class IsochroneRequest(_In):
    """A point and time budgets."""

    point: LonLat
    minutes: list[Minutes] = Field([5.0, 10.0, 15.0], min_length=1, max_length=MAX_BANDS)


class CoverageRequest(_In):
    """Units whose first-arrival areas to compute."""

    units: list[UnitIn] = Field(min_length=1, max_length=MAX_UNITS)
    geojson: bool = Field(False, description="Include a FeatureCollection: per unit, a MultiPoint of its nodes.")

    @model_validator(mode="after")
    def _check(self) -> CoverageRequest:
        _unique_units(self.units)
        return self


class CoverageAnswer(BaseModel):
    """How many road nodes each unit reaches first."""

    nodes: int
    uncovered: int
    counts: dict[str, int]
    geojson: dict[str, Any] | None = None


class EdgeSelector(BaseModel):
    """Roads to change: edge ids, or the road a point snaps to (both directions)."""

    model_config = ConfigDict(extra="forbid")

    edges: list[Annotated[int, Field(ge=0, lt=2**31)]] | None = Field(None, max_length=100_000)
    point: LonLat | None = None
    both_directions: bool = Field(True, description="For edge ids: also the opposite direction of two-way roads.")

    @model_validator(mode="after")
    def _one(self) -> EdgeSelector:
        if (self.edges is None) == (self.point is None):
            raise ValueError("give either edges or point")
        return self


class SpeedChange(EdgeSelector):
    """A speed factor for some roads (0.5 = half speed)."""

    factor: float = Field(ge=0.01, le=10.0, allow_inf_nan=False)


class ConditionsUpdate(_In):
    """Changes to apply at once: speed factors, closures, reopenings."""

    speed: list[SpeedChange] = Field([], max_length=1000)
    close: list[EdgeSelector] = Field([], max_length=1000)
    reopen: list[EdgeSelector] = Field([], max_length=1000)


class ConditionsAnswer(BaseModel):
    """Live conditions after the change."""

    version: int
    closed_edges: int
    slowed_edges: int
    changed: dict[str, list[int]] = Field(default_factory=dict, description="Edge ids changed, per kind.")


# --- routes --------------------------------------------------------------------------------------------------------


def _line(route: Route, crs: Crs) -> LineString:
    return LineString(coordinates=coords_out(route.coordinates, crs))


@router.get("/info", summary="What road network is loaded", dependencies=[require(*QUERY_ROLES)])
async def info(service: RoadsDep) -> dict[str, Any]:
    """Source, size and bounding box of the loaded network, live-condition counts, whether tiles are there."""
    return await service.info()


@router.post("/route", response_model=RouteAnswer, summary="Fastest route", dependencies=[require(*QUERY_ROLES)])
async def route(body: RouteRequest, service: RoadsDep) -> RouteAnswer:
    """Travel time, length and line of the fastest route between two points."""
    a, b = to_wgs(body.from_, body.crs), to_wgs(body.to, body.crs)
    found = await service.travel_time(a, b, with_path=body.geometry)
    return RouteAnswer(
        seconds=round(found.seconds, 3),
        meters=round(found.meters, 1),
        geometry=_line(found, body.crs) if body.geometry else None,
    )


@router.post(
    "/nearest", response_model=NearestAnswer, summary="Nearest units by road", dependencies=[require(*QUERY_ROLES)]
)
async def nearest(body: NearestRequest, service: RoadsDep) -> NearestAnswer:
    """The k units with the shortest road time to the point (exact)."""
    units = {u.id: to_wgs((u.lon, u.lat), body.crs) for u in body.units}
    etas = await service.nearest_units(to_wgs(body.point, body.crs), units, body.k, with_path=body.paths)
    return NearestAnswer(
        units=[
            RankedUnit(
                rank=i + 1,
                unit_id=e.unit_id,
                seconds=round(e.seconds, 3),
                meters=round(e.route.meters, 1) if e.route is not None else None,
                geometry=_line(e.route, body.crs) if e.route is not None else None,
            )
            for i, e in enumerate(etas)
        ]
    )


@router.post("/matrix", response_model=MatrixAnswer, summary="Travel-time matrix", dependencies=[require(*QUERY_ROLES)])
async def matrix(body: MatrixRequest, service: RoadsDep) -> MatrixAnswer:
    """Seconds from every origin to every target (null: unreachable); the cell count is capped."""
    origins = [to_wgs(p, body.crs) for p in body.origins]
    targets = [to_wgs(p, body.crs) for p in body.targets]
    m = await service.matrix(origins, targets)
    return MatrixAnswer(seconds=[[_finite(v) for v in row] for row in m.tolist()])


async def _isochrones(service: Roads, point: tuple[float, float], minutes: list[float], crs: Crs) -> dict[str, Any]:
    isos = await service.isochrones(to_wgs(point, crs), minutes)
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": geometry_out(iso.polygon, crs),
                "properties": {"minutes": iso.minutes, "nodes": len(iso.node_ids)},
            }
            for iso in isos
        ],
    }


@router.post("/isochrone", summary="Isochrones (POST)", dependencies=[require(*QUERY_ROLES)])
async def isochrone_post(body: IsochroneRequest, service: RoadsDep) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of the areas reachable within each budget (default 5, 10, 15 minutes)."""
    return await _isochrones(service, body.point, body.minutes, body.crs)


@router.get("/isochrone", summary="Isochrones", dependencies=[require(*QUERY_ROLES)])
async def isochrone_get(
    service: RoadsDep,
    lon: Annotated[float, Query(ge=-180.0, le=180.0, allow_inf_nan=False)],
    lat: Annotated[float, Query(ge=-90.0, le=90.0, allow_inf_nan=False)],
    minutes: Annotated[
        list[Minutes] | None, Query(max_length=MAX_BANDS, description="Repeat: minutes=5&minutes=10")
    ] = None,
    crs: Crs = "wgs84",
) -> dict[str, Any]:
    """The same as POST, with the point and budgets in the query string."""
    return await _isochrones(service, (lon, lat), minutes or [5.0, 10.0, 15.0], crs)


@router.post(
    "/coverage", response_model=CoverageAnswer, summary="Coverage by unit", dependencies=[require(*QUERY_ROLES)]
)
async def coverage(body: CoverageRequest, service: RoadsDep) -> CoverageAnswer:
    """Which unit reaches each road node first: counts per unit, and optionally the nodes as GeoJSON."""
    units = {u.id: to_wgs((u.lon, u.lat), body.crs) for u in body.units}
    cov = await service.coverage(units)
    counts = cov.counts()
    geojson = None
    if body.geojson:
        graph = service.network.graph  # node coordinates never change after load
        features = []
        for i, unit_id in enumerate(cov.unit_ids):
            nodes = np.nonzero(cov.owner == i)[0]
            pts = coords_out(np.stack([graph.lon[nodes], graph.lat[nodes]], axis=1).tolist(), body.crs)
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "MultiPoint", "coordinates": pts},
                    "properties": {"unit_id": unit_id, "nodes": len(nodes)},
                }
            )
        geojson = {"type": "FeatureCollection", "features": features}
    return CoverageAnswer(nodes=len(cov.owner), uncovered=int((cov.owner < 0).sum()), counts=counts, geojson=geojson)


async def _resolve(service: Roads, sel: EdgeSelector, crs: Crs) -> list[int]:
    if sel.point is not None:
        snap = await service.snap(to_wgs(sel.point, crs))
        return await service.road_edges(snap.edge)
    ids: list[int] = []
    for e in sel.edges or []:
        ids.extend(await service.road_edges(e) if sel.both_directions else [e])
    n = service.network.graph.n_edges
    bad = [e for e in ids if e >= n]
    if bad:
        raise InvalidInput(f"edge id {bad[0]} is out of range (0..{n - 1})")
    return sorted(set(ids))


def _answer(summary: ConditionsSummary, changed: dict[str, list[int]]) -> ConditionsAnswer:
    return ConditionsAnswer(
        version=summary.version,
        closed_edges=summary.closed_edges,
        slowed_edges=summary.slowed_edges,
        changed=changed,
    )


@router.put(
    "/conditions",
    response_model=ConditionsAnswer,
    summary="Set road conditions",
    dependencies=[require(Role.OPERATOR, Role.DISPATCHER)],
)
async def set_conditions(body: ConditionsUpdate, service: RoadsDep) -> ConditionsAnswer:
    """Apply speed factors, closures and reopenings (by edge id or by a point snapped to its road)."""
    # Resolve every selector first, so a bad one changes nothing.
    speed = [(await _resolve(service, s, body.crs), s.factor) for s in body.speed]
    close = [e for s in body.close for e in await _resolve(service, s, body.crs)]
    reopen = [e for s in body.reopen for e in await _resolve(service, s, body.crs)]
    summary = await service.conditions()
    for ids, factor in speed:
        summary = await service.set_speed_factor(ids, factor)
    if close:
        summary = await service.close_edges(close)
    if reopen:
        summary = await service.reopen_edges(reopen)
    changed = {
        "speed": sorted({e for ids, _ in speed for e in ids}),
        "close": sorted(set(close)),
        "reopen": sorted(set(reopen)),
    }
    return _answer(summary, changed)


@router.get(
    "/conditions",
    response_model=ConditionsAnswer,
    summary="Current road conditions",
    dependencies=[require(*QUERY_ROLES)],
)
async def get_conditions(service: RoadsDep) -> ConditionsAnswer:
    """Version and counts of the live conditions."""
    return _answer(await service.conditions(), {})


@router.delete(
    "/conditions",
    response_model=ConditionsAnswer,
    summary="Clear road conditions",
    dependencies=[require(Role.OPERATOR, Role.DISPATCHER)],
)
async def clear_conditions(service: RoadsDep) -> ConditionsAnswer:
    """Back to free flow everywhere."""
    return _answer(await service.clear_conditions(), {})


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise InvalidInput("bbox must be minlon,minlat,maxlon,maxlat") from err
    if len(parts) != 4 or not all(math.isfinite(v) for v in parts):
        raise InvalidInput("bbox must be minlon,minlat,maxlon,maxlat")
    x0, y0, x1, y1 = parts
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise InvalidInput("bbox must be minlon,minlat,maxlon,maxlat within [-180, 180] x [-90, 90]")
    return x0, y0, x1, y1


@router.get("/edges.geojson", summary="Road edges in a bounding box", dependencies=[require(*QUERY_ROLES)])
async def edges_geojson(
    service: RoadsDep,
    bbox: Annotated[str, Query(max_length=200, description="minlon,minlat,maxlon,maxlat (WGS84)")],
    limit: Annotated[int, Query(ge=1, le=MAX_EDGES_GEOJSON)] = 5000,
) -> dict[str, Any]:
    """Directed road edges with an end in the box, with their live travel time and conditions (edge ids)."""
    return await service.edges_geojson(_bbox(bbox), limit)


# --- tiles ---------------------------------------------------------------------------------------------------------


@tiles_router.get(
    "/roads/{z}/{x}/{y}.mvt",
    summary="Road vector tile",
    response_class=Response,
    responses={200: {"content": {MVT_MEDIA_TYPE: {}}}, 204: {"description": "No roads in this tile."}},
    dependencies=[require(*ANY_ROLE)],
)
async def road_tile(
    service: RoadsDep,
    z: Annotated[int, Path(ge=0, le=24)],
    x: Annotated[int, Path(ge=0)],
    y: Annotated[int, Path(ge=0)],
) -> Response:
    """One Mapbox Vector Tile (layer `roads`: highway, oneway), gzip-encoded; 204 when the tile is empty."""
    if x >= 1 << z or y >= 1 << z:
        raise InvalidInput(f"tile {z}/{x}/{y} does not exist (x and y must be below {1 << z})")
    data = await service.tile(z, x, y)
    if data is None:
        return Response(status_code=204)
    return Response(
        data,
        media_type=MVT_MEDIA_TYPE,
        headers={"Content-Encoding": "gzip", "Cache-Control": "private, max-age=300"},
    )


@tiles_router.get("/roads.json", summary="TileJSON of the road tiles", dependencies=[require(*ANY_ROLE)])
async def road_tilejson(request: Request, service: RoadsDep) -> dict[str, Any]:
    """A TileJSON 3.0.0 document pointing at /tiles/roads/{z}/{x}/{y}.mvt."""
    metadata = await service.tile_metadata()
    base = str(request.base_url).rstrip("/")
    return tilejson(metadata, base + "/tiles/roads/{z}/{x}/{y}.mvt")
