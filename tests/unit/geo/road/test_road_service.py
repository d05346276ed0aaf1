"""RoadService: loads from settings, answers like RoadNetwork, serializes calls, caches tiles, caps matrices."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.service import MatrixTooLarge, RoadService, RoadsNotLoaded, TilesNotLoaded
from safecity.geo.road.synthetic import synthetic_network
from safecity.kernel.settings import RoadSettings

SETTINGS = RoadSettings(synthetic=True, synthetic_nodes=2_500, synthetic_center=(121.25, 31.37))


@pytest.fixture(scope="module")
def direct() -> RoadNetwork:
    """The same network the service builds from SETTINGS, for direct comparison."""
    return RoadNetwork(
        synthetic_network(2_500, center=SETTINGS.synthetic_center, spacing_m=SETTINGS.synthetic_spacing_m)
    )


@pytest.fixture
async def make_service() -> AsyncIterator[Callable[[RoadSettings], RoadService]]:
    """Services closed after the test (their networks are dropped on their own worker thread)."""
    made: list[RoadService] = []

    def make(settings: RoadSettings) -> RoadService:
        made.append(RoadService(settings))
        return made[-1]

    yield make
    for service in made:
        await service.close()


def _points(net: RoadNetwork, n: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    nodes = rng.choice(net.graph.n_nodes, n, replace=False)
    return [(float(net.graph.lon[i]) + 1e-5, float(net.graph.lat[i]) + 1e-5) for i in nodes]


async def test_not_configured_answers_not_loaded(make_service) -> None:
    service = make_service(RoadSettings())
    await service.start()
    assert not service.configured and not service.loaded
    with pytest.raises(RoadsNotLoaded) as err:
        await service.travel_time((121.2, 31.3), (121.3, 31.4))
    assert err.value.code == "road.not_loaded" and err.value.status == 503
    assert "import-osm" in err.value.render("en")
    with pytest.raises(TilesNotLoaded):
        await service.tile(10, 0, 0)
    assert (await service.info())["loaded"] is False


async def test_synthetic_answers_equal_the_network(make_service, direct: RoadNetwork) -> None:
    service = make_service(SETTINGS)
    await service.start()
    assert service.loaded and service.network.graph.n_nodes == direct.graph.n_nodes
    pts = _points(direct, 12, seed=1)
    route = await service.travel_time(pts[0], pts[1])
    assert route.seconds == pytest.approx(direct.travel_time(pts[0], pts[1]).seconds)
    units = {f"u{i}": p for i, p in enumerate(pts[2:10])}
    got = await service.nearest_units(pts[10], units, 3)
    want = direct.nearest_units(pts[10], units, 3)
    assert [(e.unit_id, round(e.seconds, 6)) for e in got] == [(e.unit_id, round(e.seconds, 6)) for e in want]
    np.testing.assert_allclose(await service.matrix(pts[:4], pts[4:9]), direct.matrix(pts[:4], pts[4:9]))
    isos = await service.isochrones(pts[11], [3, 6])
    assert [len(i.node_ids) for i in isos] == [len(i.node_ids) for i in direct.isochrones(pts[11], [3, 6])]
    cov = await service.coverage(units)
    assert cov.counts() == direct.coverage(units).counts()
    info = await service.info()
    assert info["loaded"] is True and info["nodes"] == direct.graph.n_nodes and info["tiles"] is False


async def test_concurrent_calls_are_serialized_and_correct(make_service, direct: RoadNetwork) -> None:
    service = make_service(SETTINGS)
    await service.start()
    pts = _points(direct, 40, seed=2)
    pairs = list(zip(pts[::2], pts[1::2], strict=True))
    got = await asyncio.gather(*(service.travel_time(a, b, with_path=False) for a, b in pairs))
    want = [direct.travel_time(a, b, with_path=False).seconds for a, b in pairs]
    assert [r.seconds for r in got] == pytest.approx(want)


async def test_conditions_round_trip(make_service, direct: RoadNetwork) -> None:
    service = make_service(SETTINGS)
    await service.start()
    edges = await service.road_edges(0)
    closed = await service.close_edges(edges)
    assert closed.closed_edges == len(edges) and closed.version == 1
    slowed = await service.set_speed_factor([5], 0.5)
    assert slowed.slowed_edges == 1
    cleared = await service.clear_conditions()
    assert (cleared.closed_edges, cleared.slowed_edges) == (0, 0) and cleared.version == 3


async def test_matrix_cap(make_service) -> None:
    service = make_service(RoadSettings(synthetic=True, synthetic_nodes=400, max_matrix_cells=10))
    await service.start()
    p = (121.25, 31.37)
    with pytest.raises(MatrixTooLarge) as err:
        await service.matrix([p] * 4, [p] * 3)
    assert err.value.code == "road.matrix_too_large"


async def test_tiles_are_baked_once_and_served(make_service, tmp_path: Path) -> None:
    service = make_service(RoadSettings(synthetic=True, synthetic_nodes=400))
    await service.start()
    path = tmp_path / "roads.mbtiles"
    assert await service.ensure_tiles(path, min_zoom=12, max_zoom=13) is True
    assert await service.ensure_tiles(path, min_zoom=12, max_zoom=13) is False  # cached: same graph, same zooms
    assert await service.ensure_tiles(path, min_zoom=12, max_zoom=14) is True  # another key: baked again
    meta = await service.tile_metadata()
    assert meta["minzoom"] == "12" and meta["maxzoom"] == "14"
    from safecity.geo.road.tiles import tile_range

    x0, y0, _, _ = tile_range(service.network.graph.bbox(), 14)
    data = await service.tile(14, x0, y0)
    assert data is not None and len(gzip.decompress(data)) > 0
    assert await service.tile(14, 0, 0) is None
    await service.close()
