"""Places routes: list the place hierarchy, read one place, and resolve a point to the places it falls in."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from shapely.geometry import mapping

from safecity.api.auth import require
from safecity.api.deps import PlacesDep
from safecity.api.ports import Places
from safecity.api.problems import PROBLEM_RESPONSES
from safecity.geo.places import LEVELS, Level, Place, PlaceNotFound, PlaceTree, TagIndex
from safecity.sharing.principal import Role

READ = require(Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER, Role.READER)

router = APIRouter(prefix="/api/v1/places", tags=["places"], responses=PROBLEM_RESPONSES)


class PlaceOut(BaseModel):
    """One place of the hierarchy, with its names."""

    id: str
    level: Level
    name: str = Field(description="Its own name (zh), e.g. 黄浦区.")
    name_en: str | None = Field(None, description="Its own English name, where known.")
    parent_id: str | None = None
    full_name: dict[str, str] = Field(description="Name with its ancestors: {zh, en}, e.g. 上海市黄浦区.")
    bbox: tuple[float, float, float, float] = Field(description="[min_lon, min_lat, max_lon, max_lat] (WGS84).")


class PlaceDetail(PlaceOut):
    """One place with its boundary."""

    children: list[str] = Field(description="Ids of the places directly under it.")
    geometry: dict[str, Any] = Field(description="GeoJSON (Multi)Polygon, WGS84.")


class PlacePage(BaseModel):
    """One page of places."""

    items: list[PlaceOut]
    total: int
    limit: int
    offset: int


class Resolved(BaseModel):
    """The places a point falls in, per level (null: outside every place of that level)."""

    lon: float
    lat: float
    district: PlaceOut | None = None
    town: PlaceOut | None = None
    community: PlaceOut | None = None
    building: PlaceOut | None = None


_NO_PLACES = TagIndex(PlaceTree([]))


def _index(places: Places | None) -> Places:
    """The node's place index; an empty one when it runs without boundaries (no places, nothing resolves)."""
    return places if places is not None else _NO_PLACES


def _out(tree: PlaceTree, place: Place) -> PlaceOut:
    zh, en = tree.names(place.id) or (place.name, place.name_en or place.name)
    minx, miny, maxx, maxy = (round(float(v), 7) for v in place.geometry.bounds)
    return PlaceOut(
        id=place.id,
        level=place.level,
        name=place.name,
        name_en=place.name_en,
        parent_id=place.parent_id,
        full_name={"zh": zh, "en": en},
        bbox=(minx, miny, maxx, maxy),
    )


_ID = r"^[^\x00-\x1f\x7f]{1,128}$"


@router.get("", response_model=PlacePage, dependencies=[READ], summary="List places")
async def list_places(
    places: PlacesDep,
    level: Level | None = None,
    parent: str | None = Query(None, max_length=128, pattern=_ID, description="Only the places under this one."),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=100_000_000),
) -> PlacePage:
    """Return one page of places (in hierarchy order: districts, towns, communities, buildings)."""
    tree = _index(places).tree
    if parent is not None:
        if parent not in tree:
            raise PlaceNotFound(parent)
        chosen = tree.children(parent)
    else:
        chosen = [p for lvl in LEVELS for p in tree.level(lvl)]
    if level is not None:
        chosen = [p for p in chosen if p.level == level]
    page = chosen[offset : offset + limit]
    return PlacePage(items=[_out(tree, p) for p in page], total=len(chosen), limit=limit, offset=offset)


@router.get(
    "/map.geojson",
    dependencies=[READ],
    summary="Place boundaries as GeoJSON (the base map)",
    response_class=Response,
    responses={200: {"content": {"application/geo+json": {}}}},
)
async def places_geojson(
    places: PlacesDep,
    level: Annotated[list[Level] | None, Query(description="Levels to include (repeat); default: every level.")] = None,
) -> Response:
    """Every place of the given levels (town and community boundaries, buildings) as one FeatureCollection, with
    names in both languages; the command centre draws its base map from it."""
    tree = _index(places).tree
    return Response(orjson.dumps(tree.to_geojson(level)), media_type="application/geo+json")


@router.get("/resolve", response_model=Resolved, dependencies=[READ], summary="Places at a point")
async def resolve(
    places: PlacesDep,
    lon: Annotated[float, Query(ge=-180, le=180, description="WGS84 longitude.")],
    lat: Annotated[float, Query(ge=-90, le=90, description="WGS84 latitude.")],
) -> Resolved:
    """Return the place a point falls in at every level (the same tags an event at that point gets)."""
    index = _index(places)
    tags = index.tag(lon, lat)
    found = {lvl: getattr(tags, lvl) for lvl in LEVELS}
    return Resolved(
        lon=lon, lat=lat, **{lvl: _out(index.tree, index.tree[pid]) for lvl, pid in found.items() if pid is not None}
    )


@router.get("/{place_id}", response_model=PlaceDetail, dependencies=[READ], summary="Get a place")
async def get_place(places: PlacesDep, place_id: Annotated[str, Path(pattern=_ID)]) -> PlaceDetail:
    """Return one place with its names, children and boundary."""
    tree = _index(places).tree
    place = tree.get(place_id)
    if place is None:
        raise PlaceNotFound(place_id)
    return PlaceDetail(
        **_out(tree, place).model_dump(),
        children=[c.id for c in tree.children(place_id)],
        geometry=mapping(place.geometry),
    )
