"""Small road networks for the road tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.synthetic import synthetic_network

# A tiny OSM file: a two-way street A-B-C, a one-way D->E joined at C, a footway and a private road.
TINY_OSM = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6">
  <node id="1" lat="31.2300" lon="121.4700"/>
  <node id="2" lat="31.2300" lon="121.4750"/>
  <node id="3" lat="31.2300" lon="121.4800"/>
  <node id="4" lat="31.2350" lon="121.4800"/>
  <node id="5" lat="31.2350" lon="121.4750"/>
  <node id="6" lat="31.2400" lon="121.4900"/>
  <node id="7" lat="31.2410" lon="121.4900"/>
  <way id="10"><nd ref="1"/><nd ref="2"/><nd ref="3"/><tag k="highway" v="primary"/><tag k="maxspeed" v="40"/>
    <tag k="name" v="中山东一路"/><tag k="name:en" v="East Zhongshan No.1 Road"/></way>
  <way id="11"><nd ref="3"/><nd ref="4"/><nd ref="5"/><nd ref="2"/><tag k="highway" v="residential"/>
    <tag k="oneway" v="yes"/></way>
  <way id="12"><nd ref="6"/><nd ref="7"/><tag k="highway" v="footway"/></way>
  <way id="13"><nd ref="5"/><nd ref="6"/><tag k="highway" v="service"/><tag k="access" v="private"/></way>
</osm>
"""


@pytest.fixture
def tiny_osm(tmp_path: Path) -> Path:
    """The tiny OSM file on disk."""
    path = tmp_path / "tiny.osm"
    path.write_text(TINY_OSM)
    return path


@pytest.fixture(scope="session")
def small_graph() -> RoadGraph:
    """A 2,500-node synthetic network."""
    return synthetic_network(2_500, seed=3)


@pytest.fixture(scope="session")
def small_net(small_graph: RoadGraph) -> RoadNetwork:
    """A RoadNetwork over the small synthetic graph (shared: tests must undo conditions they set)."""
    return RoadNetwork(small_graph)


@pytest.fixture(scope="session")
def shanghai_graph(shared_data: Path) -> RoadGraph:
    """The real central-Shanghai network."""
    from safecity.geo.road.osm_import import import_osm

    return import_osm(shared_data / "osm_shanghai" / "shanghai_center.osm")
