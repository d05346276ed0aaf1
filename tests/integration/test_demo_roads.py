"""`run_demo --osm` on the real central-Shanghai extract: routing answers over real HTTP equal the direct engine."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from safecity.geo.road import RoadNetwork, import_osm
from safecity.sim.demo import demo_tiles_path, run_demo


async def _key_from(out: io.StringIO, task: asyncio.Task[object]) -> str:
    for _ in range(1200):
        found = re.search(r"sc_demo_[A-Za-z0-9_\-]+", out.getvalue())
        if found:
            return found.group(0)
        if task.done():
            task.result()
            raise AssertionError("the demo ended before printing its key:\n" + out.getvalue())
        await asyncio.sleep(0.05)
    raise AssertionError("no key printed:\n" + out.getvalue())


async def test_demo_with_osm_routes_on_real_roads(shared_data: Path, tmp_path: Path, free_tcp_port: int) -> None:
    osm = shared_data / "osm_shanghai" / "shanghai_center.osm"
    places = shared_data / "shanghai_boundaries" / "shanghai_districts_310000_wgs84.json"
    out = io.StringIO()
    console = Console(file=out, width=300, force_terminal=False)
    demo = asyncio.create_task(
        run_demo(
            rate=50,
            port=free_tcp_port,
            duration=0,  # until cancelled below: a fixed run ended before a slow machine got here
            devices=100,
            mqtt=None,
            data_dir=tmp_path,
            console=console,
            osm=osm,
            places=places,
        )
    )
    key = await _key_from(out, demo)
    net = RoadNetwork(await asyncio.to_thread(import_osm, osm))  # off the loop the demo runs on
    a = (float(net.graph.lon[10]), float(net.graph.lat[10]))
    b = (float(net.graph.lon[9000]), float(net.graph.lat[9000]))
    want = net.travel_time(a, b)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_tcp_port}", headers={"X-API-Key": key}) as client:
        info = (await client.get("/api/v1/routing/info")).json()
        assert info["source"] == "shanghai_center.osm" and info["nodes"] == net.graph.n_nodes
        r = await client.post("/api/v1/routing/route", json={"from": list(a), "to": list(b)})
        assert r.status_code == 200, r.text
        assert r.json()["seconds"] == pytest.approx(want.seconds, abs=1e-3)
        iso = await client.get("/api/v1/routing/isochrone", params={"lon": a[0], "lat": a[1], "minutes": [3]})
        assert iso.json()["features"][0]["properties"]["nodes"] == len(net.isochrone(a, 3).node_ids)
        # Tiles are baked in the background into the data dir, then served.
        tiles = demo_tiles_path(tmp_path, osm)
        for _ in range(600):
            if (await client.get("/api/v1/routing/info")).json()["tiles"]:
                break
            await asyncio.sleep(0.1)
        assert tiles.is_file()
        # The real district file names places: the Bund (a node of 中山东一路) is in 黄浦区.
        bund = (await client.get("/api/v1/places/resolve", params={"lon": 121.4856, "lat": 31.2438})).json()
        assert (bund["district"]["name"], bund["district"]["name_en"]) == ("黄浦区", "Huangpu")
        tj = await client.get("/tiles/roads.json")
        assert tj.status_code == 200 and tj.json()["attribution"].startswith("©")
    demo.cancel()
    result = await asyncio.gather(demo, return_exceptions=True)
    assert not isinstance(result[0], Exception) or isinstance(result[0], asyncio.CancelledError)
    assert "Places: 16 district boundaries" in out.getvalue()
    assert "Road network:" in out.getvalue()
