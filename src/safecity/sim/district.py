"""A deterministic synthetic district modelled on Jiading: towns, communities, buildings, police stations, devices.

Everything here is made up from a seed ("合成数据 / synthetic"): the polygons are a jittered tiling of a box around
Jiading's real location (about lon 121.25, lat 31.37), so the demo needs no outside data. Every place, station and
device carries `synthetic: true`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import numpy as np
import shapely

from safecity.geo.places import Place, PlaceTree, TagIndex
from safecity.sensing.model import DeviceKind, DeviceStatus

__all__ = [
    "SYNTHETIC_LABEL",
    "Station",
    "SyntheticDistrict",
    "build_district",
    "device_topic",
]

SYNTHETIC_LABEL: Final = "合成数据 / synthetic"
DISTRICT_ID: Final = "jd"
# Centre and size (degrees) of the synthetic district: roughly Jiading's real place and extent (~23 km x 22 km).
CENTER: Final = (121.25, 31.37)
SPAN: Final = (0.24, 0.20)
_M_PER_DEG_LAT: Final = 111_320.0

# Historical place names of the Jiading area, used as fictional town names (the geometry is not theirs).
_TOWNS: Final[list[tuple[str, str]]] = [
    ("练川", "Lianchuan"),
    ("疁城", "Liucheng"),
    ("槎溪", "Chaxi"),
    ("望仙", "Wangxian"),
    ("娄塘", "Loutang"),
    ("黄渡", "Huangdu"),
    ("方泰", "Fangtai"),
    ("封浜", "Fengbang"),
    ("戬浜", "Jianbang"),
    ("朱桥", "Zhuqiao"),
    ("唐行", "Tanghang"),
    ("曹王", "Caowang"),
]
_STEMS: Final[list[tuple[str, str]]] = [
    ("清河", "Qinghe"),
    ("丰庄", "Fengzhuang"),
    ("春晖", "Chunhui"),
    ("银杏", "Yinxing"),
    ("桃园", "Taoyuan"),
    ("金鹤", "Jinhe"),
    ("白银", "Baiyin"),
    ("新城", "Xincheng"),
    ("梅园", "Meiyuan"),
    ("枫林", "Fenglin"),
    ("嘉宝", "Jiabao"),
    ("塔城", "Tacheng"),
    ("汇龙", "Huilong"),
    ("秋霞", "Qiuxia"),
    ("紫藤", "Ziteng"),
    ("丽景", "Lijing"),
    ("阳光", "Yangguang"),
    ("绿洲", "Lvzhou"),
    ("翔华", "Xianghua"),
    ("云翔", "Yunxiang"),
    ("星华", "Xinghua"),
    ("景苑", "Jingyuan"),
    ("和平", "Heping"),
    ("南苑", "Nanyuan"),
    ("北水湾", "Beishuiwan"),
]

# Share of each kind in the fleet, and which kinds sit inside a building (the rest stand outdoors in the community).
_KIND_SHARE: Final[dict[DeviceKind, float]] = {
    DeviceKind.SMOKE: 0.34,
    DeviceKind.DOOR: 0.20,
    DeviceKind.PARKING: 0.14,
    DeviceKind.VIDEO: 0.12,
    DeviceKind.GENERIC: 0.10,
    DeviceKind.CROWD: 0.05,
    DeviceKind.CHECKPOINT: 0.05,
}
_INDOOR: Final = {DeviceKind.SMOKE, DeviceKind.DOOR}
_HALF_INDOOR: Final = {DeviceKind.VIDEO, DeviceKind.GENERIC}
_KIND_ZH: Final[dict[DeviceKind, str]] = {
    DeviceKind.SMOKE: "烟感探测器",
    DeviceKind.DOOR: "门磁",
    DeviceKind.PARKING: "地磁车位检测器",
    DeviceKind.CHECKPOINT: "治安卡口",
    DeviceKind.VIDEO: "视频监控",
    DeviceKind.CROWD: "人群密度监测",
    DeviceKind.GENERIC: "物联感知终端",
}
# Expected heartbeat interval per kind (seconds): battery sensors report rarely, powered ones often.
_HEARTBEAT_S: Final[dict[DeviceKind, float]] = {
    DeviceKind.SMOKE: 3600.0,
    DeviceKind.DOOR: 600.0,
    DeviceKind.PARKING: 1800.0,
    DeviceKind.CHECKPOINT: 60.0,
    DeviceKind.VIDEO: 60.0,
    DeviceKind.CROWD: 60.0,
    DeviceKind.GENERIC: 300.0,
}
_GENERIC_SENSORS: Final = ("manhole_cover", "water_level", "hydrant_pressure", "gas")


class Station(msgspec.Struct, frozen=True, kw_only=True):
    """A police station of the synthetic district (a dispatch origin)."""

    id: str
    name: str
    town: str
    lon: float
    lat: float


@dataclass(slots=True)
class SyntheticDistrict:
    """The output of `build_district`: places, police stations and the device registry."""

    seed: int
    places: PlaceTree
    stations: list[Station]
    devices: list[dict[str, Any]]
    _index: TagIndex | None = field(default=None, repr=False, compare=False)

    def tag_index(self) -> TagIndex:
        """Return a TagIndex over the places (built on first use, then kept)."""
        if self._index is None:
            self._index = TagIndex(self.places)
        return self._index

    def to_geojson(self, *, stations: bool = True, devices: bool = False) -> dict[str, Any]:
        """Return places (and optionally stations and devices as Points) as one FeatureCollection for the map.

        Every feature has a `layer` property ("place", "station", "device"); read places back with
        `PlaceTree.from_geojson(self.places.to_geojson())`.
        """
        out = self.places.to_geojson()
        for feat in out["features"]:
            feat["properties"]["layer"] = "place"
        if stations:
            out["features"].extend(
                {
                    "type": "Feature",
                    "id": s.id,
                    "properties": {"layer": "station", "id": s.id, "name": s.name, "town": s.town, "synthetic": True},
                    "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
                }
                for s in self.stations
            )
        if devices:
            keep = ("id", "kind", "name", "town", "community", "building", "owner", "status")
            out["features"].extend(
                {
                    "type": "Feature",
                    "id": d["id"],
                    "properties": {"layer": "device", **{k: d[k] for k in keep}, "synthetic": True},
                    "geometry": {"type": "Point", "coordinates": [d["lon"], d["lat"]]},
                }
                for d in self.devices
            )
        return out


def device_topic(device: Mapping[str, Any]) -> str:
    """Return the MQTT topic a device publishes on: `safecity/<community>/<kind>/<device>`."""
    return f"safecity/{device['community']}/{device['kind']}/{device['id']}"


Box = tuple[float, float, float, float]


def _split(rng: np.random.Generator, lo: float, hi: float, parts: int) -> list[float]:
    """Return parts+1 jittered cut points from lo to hi (ends exact, inner cuts moved by up to 1/4 of a part)."""
    step = (hi - lo) / parts
    cuts = [lo + step * i + float(rng.uniform(-0.25, 0.25)) * step for i in range(parts + 1)]
    cuts[0], cuts[-1] = lo, hi
    return cuts


def _tile(rng: np.random.Generator, box: Box, n: int) -> list[Box]:
    """Split a box into exactly n boxes: rows of jittered columns, the last row holding the remainder."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    x0, y0, x1, y1 = box
    # Rows run from north to south so numbering reads like a map.
    ycuts = _split(rng, y0, y1, rows)[::-1]
    out: list[Box] = []
    for r in range(rows):
        in_row = cols if r < rows - 1 else n - cols * (rows - 1)
        xcuts = _split(rng, x0, x1, in_row)
        out.extend((xcuts[c], ycuts[r + 1], xcuts[c + 1], ycuts[r]) for c in range(in_row))
    return out


def _shares(total: int, weights: Sequence[float]) -> list[int]:
    """Split total into integer parts proportional to weights (largest remainders get the leftovers)."""
    raw = [total * w / sum(weights) for w in weights]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _inner_point(rng: np.random.Generator, box: Box, margin: float) -> tuple[float, float]:
    """Return a random point of a box, keeping `margin` (a fraction of each side) away from its edges."""
    x0, y0, x1, y1 = box
    fx, fy = rng.uniform(margin, 1.0 - margin, size=2)
    return (x0 + (x1 - x0) * float(fx), y0 + (y1 - y0) * float(fy))


def _street_point(rng: np.random.Generator, box: Box) -> tuple[float, float]:
    """Return a random point on the community's inner streets: the lines between its 3x3 building slots."""
    x0, y0, x1, y1 = box
    along = float(rng.uniform(0.05, 0.95))
    line = (1 + int(rng.integers(0, 2))) / 3.0
    if rng.integers(0, 2):
        return (x0 + (x1 - x0) * line, y0 + (y1 - y0) * along)
    return (x0 + (x1 - x0) * along, y0 + (y1 - y0) * line)


def _buildings(rng: np.random.Generator, box: Box, count: int) -> list[Box]:
    """Return `count` small squares (in metres) in distinct cells of a 3x3 grid over the community box.

    Each square keeps at least 1/8 of a slot clear of the slot's edges, so the lines between slots are streets.
    """
    x0, y0, x1, y1 = box
    sw, sh = (x1 - x0) / 3.0, (y1 - y0) / 3.0
    cos_lat = math.cos(math.radians((y0 + y1) / 2.0))
    sw_m, sh_m = sw * _M_PER_DEG_LAT * cos_lat, sh * _M_PER_DEG_LAT
    slots = sorted(int(s) for s in rng.choice(9, size=count, replace=False))
    out: list[Box] = []
    for slot in slots:
        col, row = slot % 3, slot // 3
        half_m = 0.25 * min(sw_m, sh_m) * float(rng.uniform(0.6, 1.0))
        hx, hy = half_m / (_M_PER_DEG_LAT * cos_lat), half_m / _M_PER_DEG_LAT
        jx, jy = rng.uniform(-0.5, 0.5, size=2)
        cx = x0 + sw * (col + 0.5) + float(jx) * (0.5 * sw - hx)
        cy = y1 - sh * (row + 0.5) + float(jy) * (0.5 * sh - hy)
        out.append((cx - hx, cy - hy, cx + hx, cy + hy))
    return out


def build_district(
    seed: int = 7, towns: int = 12, communities: int = 300, devices: int = 5000, stations: int = 18
) -> SyntheticDistrict:
    """Build the synthetic district; the same arguments always give the same district."""
    if towns < 1 or communities < towns or devices < 0 or stations < 0:
        raise ValueError("need towns >= 1, communities >= towns, devices >= 0 and stations >= 0")
    rng = np.random.default_rng(seed)
    tag = {"synthetic": True}
    cx, cy = CENTER
    district_box: Box = (cx - SPAN[0] / 2, cy - SPAN[1] / 2, cx + SPAN[0] / 2, cy + SPAN[1] / 2)
    places: list[Place] = [
        Place(
            id=DISTRICT_ID,
            level="district",
            name="嘉定区（合成数据）",
            name_en="Jiading (synthetic)",
            geometry=shapely.box(*district_box),
            attributes={**tag, "label": SYNTHETIC_LABEL},
        )
    ]
    town_boxes = _tile(rng, district_box, towns)
    per_town = _shares(communities, [1.0] * towns)
    town_rows: list[tuple[str, str, Box]] = []
    # (community id, name, town id, town name, box, building ids and boxes)
    comm_rows: list[tuple[str, str, str, str, Box, list[tuple[str, str, Box]]]] = []
    for t, tbox in enumerate(town_boxes):
        short_zh, short_en = _TOWNS[t % len(_TOWNS)]
        if t >= len(_TOWNS):
            short_zh, short_en = f"{short_zh}{t // len(_TOWNS) + 1}", f"{short_en} {t // len(_TOWNS) + 1}"
        town_id = f"{DISTRICT_ID}-t{t + 1:02d}"
        town_name = f"{short_zh}镇"
        places.append(
            Place(
                id=town_id,
                level="town",
                name=town_name,
                name_en=f"{short_en} Town",
                parent_id=DISTRICT_ID,
                geometry=shapely.box(*tbox),
                attributes={**tag, "short_name": short_zh},
            )
        )
        town_rows.append((town_id, town_name, tbox))
        for c, cbox in enumerate(_tile(rng, tbox, per_town[t])):
            stem_zh, stem_en = _STEMS[c % len(_STEMS)]
            if c >= len(_STEMS):
                stem_zh, stem_en = f"{stem_zh}{c // len(_STEMS) + 1}", f"{stem_en} {c // len(_STEMS) + 1}"
            comm_id = f"{town_id}-c{c + 1:03d}"
            comm_name = f"{short_zh}{stem_zh}社区"
            households = int(rng.integers(800, 4000))
            places.append(
                Place(
                    id=comm_id,
                    level="community",
                    name=comm_name,
                    name_en=f"{short_en} {stem_en} Community",
                    parent_id=town_id,
                    geometry=shapely.box(*cbox),
                    attributes={**tag, "households": households},
                )
            )
            blds: list[tuple[str, str, Box]] = []
            for b, bbox in enumerate(_buildings(rng, cbox, int(rng.integers(3, 9)))):
                bld_id = f"{comm_id}-b{b + 1}"
                bld_name = f"{b + 1}号楼"
                places.append(
                    Place(
                        id=bld_id,
                        level="building",
                        name=bld_name,
                        name_en=f"Building {b + 1}",
                        parent_id=comm_id,
                        geometry=shapely.box(*bbox),
                        attributes={**tag, "floors": int(rng.integers(3, 33))},
                    )
                )
                blds.append((bld_id, bld_name, bbox))
            comm_rows.append((comm_id, comm_name, town_id, town_name, cbox, blds))
    tree = PlaceTree(
        places, meta={"name": "嘉定区（合成数据）", "synthetic": True, "label": SYNTHETIC_LABEL, "seed": seed}
    )
    police = _stations(rng, town_rows, per_town, stations)
    fleet = _devices(rng, comm_rows, town_rows, devices)
    return SyntheticDistrict(seed=seed, places=tree, stations=police, devices=fleet)


_ORDINALS: Final = "一二三四五六七八九十"


def _stations(
    rng: np.random.Generator, town_rows: list[tuple[str, str, Box]], per_town: list[int], total: int
) -> list[Station]:
    """Return `total` stations: an even share per town, the remainder to the towns with most communities."""
    counts = [total // len(town_rows)] * len(town_rows)
    for t in sorted(range(len(town_rows)), key=lambda t: (-per_town[t], t))[: total % len(town_rows)]:
        counts[t] += 1
    out: list[Station] = []
    for (town_id, town_name, tbox), count in zip(town_rows, counts, strict=True):
        short = town_name.removesuffix("镇")
        for k in range(count):
            ordinal = _ORDINALS[k] if k < len(_ORDINALS) else str(k + 1)
            name = f"{short}派出所" if k == 0 else f"{short}第{ordinal}派出所"
            lon, lat = _inner_point(rng, tbox, 0.25)
            out.append(Station(id=f"ps-{len(out) + 1:02d}", name=name, town=town_id, lon=lon, lat=lat))
    return out


def _devices(
    rng: np.random.Generator,
    comm_rows: list[tuple[str, str, str, str, Box, list[tuple[str, str, Box]]]],
    town_rows: list[tuple[str, str, Box]],
    total: int,
) -> list[dict[str, Any]]:
    """Return the device registry rows (the `devices` table's columns, without timestamps)."""
    kinds = list(_KIND_SHARE)
    counts = _shares(total, [_KIND_SHARE[k] for k in kinds])
    if total >= len(kinds):
        # Every kind appears at least once, taken from the largest share.
        for i, n in enumerate(counts):
            if n == 0:
                counts[i] += 1
                counts[counts.index(max(counts))] -= 1
    sequence = [k for k, n in zip(kinds, counts, strict=True) for _ in range(n)]
    shuffled = [sequence[i] for i in rng.permutation(len(sequence))]
    all_buildings = [(ci, b) for ci, row in enumerate(comm_rows) for b in range(len(row[5]))]
    station_of_town = {town_id: f"{name.removesuffix('镇')}派出所" for town_id, name, _ in town_rows}
    numbers: dict[tuple[str, str], int] = {}
    out: list[dict[str, Any]] = []
    for kind in shuffled:
        indoor = kind in _INDOOR or (kind in _HALF_INDOOR and bool(rng.integers(0, 2)))
        building: tuple[str, str, Box] | None
        if indoor:
            ci, bi = all_buildings[int(rng.integers(0, len(all_buildings)))]
            comm_id, comm_name, town_id, town_name, cbox, blds = comm_rows[ci]
            building = blds[bi]
            lon, lat = _inner_point(rng, building[2], 0.1)
        else:
            comm_id, comm_name, town_id, town_name, cbox, blds = comm_rows[int(rng.integers(0, len(comm_rows)))]
            building = None
            lon, lat = _street_point(rng, cbox)
        n = numbers.get((comm_id, kind), 0) + 1
        numbers[(comm_id, kind)] = n
        where = comm_name + (building[1] if building else "")
        out.append(
            {
                "id": f"{comm_id}-{kind.value}-{n:03d}",
                "kind": kind.value,
                "name": f"{where}{_KIND_ZH[kind]}{n:02d}",
                "town": town_id,
                "community": comm_id,
                "building": building[0] if building else None,
                "lon": round(lon, 7),
                "lat": round(lat, 7),
                "owner": _owner(kind, comm_name, town_name, station_of_town[town_id]),
                "status": DeviceStatus.ACTIVE.value,
                "offline_after_s": _HEARTBEAT_S[kind],
                "attributes": {"synthetic": True, **_attributes(rng, kind, n)},
            }
        )
    return out


def _owner(kind: DeviceKind, community: str, town: str, station: str) -> str:
    """Return who runs a device of this kind."""
    if kind in (DeviceKind.SMOKE, DeviceKind.DOOR):
        return f"{community}物业服务中心"
    if kind == DeviceKind.GENERIC:
        return f"{community}居委会"
    if kind in (DeviceKind.PARKING, DeviceKind.CROWD):
        return f"{town}城市运行管理中心"
    return station


def _attributes(rng: np.random.Generator, kind: DeviceKind, n: int) -> dict[str, Any]:
    """Return kind-specific device attributes."""
    if kind in (DeviceKind.SMOKE, DeviceKind.DOOR):
        return {"floor": int(rng.integers(1, 19))}
    if kind == DeviceKind.PARKING:
        return {"bay": f"P-{n:03d}"}
    if kind == DeviceKind.CHECKPOINT:
        return {"direction": str(rng.choice(["N", "S", "E", "W"])), "lanes": int(rng.integers(1, 5))}
    if kind == DeviceKind.VIDEO:
        return {"fov_deg": int(rng.choice([60, 90, 120, 360]))}
    if kind == DeviceKind.CROWD:
        return {"capacity": int(rng.integers(200, 3000))}
    return {"sensor": str(rng.choice(_GENERIC_SENSORS))}
