"""OSM import: restriction relations become banned turns (bad ones coded and skipped), car access tags honoured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.network import RoadNetwork
from safecity.geo.road.osm_import import import_osm

# A crossroads C (100) with four two-way arms W (101), E (102), N (103), S (104), and restriction relations.
CROSS_OSM = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6">
  <node id="100" lat="31.2300" lon="121.4700"/>
  <node id="101" lat="31.2300" lon="121.4650"/>
  <node id="102" lat="31.2300" lon="121.4750"/>
  <node id="103" lat="31.2350" lon="121.4700"/>
  <node id="104" lat="31.2250" lon="121.4700"/>
  <way id="201"><nd ref="101"/><nd ref="100"/><tag k="highway" v="residential"/></way>
  <way id="202"><nd ref="100"/><nd ref="102"/><tag k="highway" v="residential"/></way>
  <way id="203"><nd ref="103"/><nd ref="100"/><tag k="highway" v="residential"/></way>
  <way id="204"><nd ref="100"/><nd ref="104"/><tag k="highway" v="residential"/></way>
  <relation id="301"><member type="way" ref="201" role="from"/><member type="node" ref="100" role="via"/>
    <member type="way" ref="203" role="to"/><tag k="type" v="restriction"/><tag k="restriction" v="no_left_turn"/>
  </relation>
  <relation id="302"><member type="way" ref="204" role="from"/><member type="node" ref="100" role="via"/>
    <member type="way" ref="203" role="to"/><tag k="type" v="restriction"/>
    <tag k="restriction" v="only_straight_on"/></relation>
  <relation id="303"><member type="way" ref="201" role="from"/><member type="way" ref="202" role="via"/>
    <member type="way" ref="204" role="to"/><tag k="type" v="restriction"/><tag k="restriction" v="no_u_turn"/>
  </relation>
  <relation id="304"><member type="way" ref="201" role="from"/><member type="way" ref="202" role="to"/>
    <tag k="type" v="restriction"/><tag k="restriction" v="no_straight_on"/></relation>
  <relation id="305"><member type="way" ref="201" role="from"/><member type="node" ref="103" role="via"/>
    <member type="way" ref="203" role="to"/><tag k="type" v="restriction"/><tag k="restriction" v="no_left_turn"/>
  </relation>
  <relation id="306"><member type="way" ref="201" role="from"/><member type="node" ref="100" role="via"/>
    <member type="way" ref="202" role="to"/><tag k="type" v="restriction"/><tag k="restriction" v="maybe"/>
  </relation>
  <relation id="307"><member type="way" ref="201" role="from"/><member type="node" ref="100" role="via"/>
    <member type="way" ref="202" role="to"/><tag k="type" v="restriction"/><tag k="restriction" v="no_straight_on"/>
    <tag k="except" v="bicycle;motorcar"/></relation>
  <relation id="308"><member type="way" ref="201" role="from"/><member type="node" ref="100" role="via"/>
    <member type="way" ref="202" role="to"/><tag k="type" v="restriction"/>
    <tag k="restriction:hgv" v="no_straight_on"/></relation>
</osm>
"""


def edge(g: RoadGraph, a: int, b: int) -> int:
    """The edge between two OSM nodes."""
    idx = {int(r): i for i, r in enumerate(g.node_ref)}
    return g.edge_id(idx[a], idx[b])


@pytest.fixture
def cross(tmp_path: Path) -> RoadGraph:
    """The crossroads imported."""
    path = tmp_path / "cross.osm"
    path.write_text(CROSS_OSM)
    return import_osm(path)


def test_restrictions_become_banned_turns(cross: RoadGraph) -> None:
    g = cross
    bans = {(int(a), int(b)) for a, b in g.turn_bans}
    assert bans == {
        (edge(g, 101, 100), edge(g, 100, 103)),  # 301 no_left_turn
        # 302 only_straight_on from S: every other way out of C is banned, the U-turn too.
        (edge(g, 104, 100), edge(g, 100, 101)),
        (edge(g, 104, 100), edge(g, 100, 102)),
        (edge(g, 104, 100), edge(g, 100, 104)),
    }
    report = g.meta["turn_restrictions"]
    assert report["relations"] == 8 and report["used"] == 2 and report["bans"] == 4
    assert report["skipped"] == {"bad": 3, "except_cars": 1, "other_vehicles": 1, "via_way": 1}
    errors = {e["relation"]: e for e in report["errors"]}
    assert set(errors) == {304, 305, 306}
    assert all(e["code"] == "road.bad_turn_restriction" for e in errors.values())
    assert "via node" in errors[304]["reason"] and "103" in errors[305]["reason"] and "maybe" in errors[306]["reason"]


def test_route_avoids_the_banned_turn(cross: RoadGraph, tmp_path: Path) -> None:
    net = RoadNetwork(RoadGraph.load(cross.save(tmp_path / "cross.npz")))
    west, north = (121.4660, 31.2300), (121.4700, 31.2340)
    route = net.travel_time(west, north)
    refs = [int(net.graph.node_ref[n]) for n in route.nodes]
    # Left at C is banned: drive on to the end of the east arm, turn round, come back and go straight on north.
    assert refs == [100, 102, 100]  # the path's nodes end where the target's edge starts
    free = RoadNetwork(import_osm_without_relations(tmp_path)).travel_time(west, north)
    assert [int(n) for n in free.nodes] and route.seconds > free.seconds + 50
    assert route.meters == pytest.approx(free.meters + 2 * 475.0, rel=0.02)
    # From the south only straight on is allowed.
    south = (121.4700, 31.2260)
    assert [int(net.graph.node_ref[n]) for n in net.travel_time(south, north).nodes] == [100]
    east = (121.4740, 31.2300)
    to_east = [int(net.graph.node_ref[n]) for n in net.travel_time(south, east).nodes]
    assert to_east == [100, 103, 100]


def import_osm_without_relations(tmp_path: Path) -> RoadGraph:
    """The same crossroads with no relation."""
    path = tmp_path / "plain.osm"
    text = CROSS_OSM
    path.write_text(text[: text.index("  <relation")] + "</osm>\n")
    g = import_osm(path)
    assert g.turn_bans.shape == (0, 2)
    return g


ACCESS_OSM = """<?xml version="1.0" encoding="UTF-8"?>
<osm version="0.6">
  <node id="1" lat="31.2300" lon="121.4700"/><node id="2" lat="31.2300" lon="121.4710"/>
  <node id="3" lat="31.2310" lon="121.4700"/><node id="4" lat="31.2310" lon="121.4710"/>
  <node id="5" lat="31.2320" lon="121.4700"/><node id="6" lat="31.2320" lon="121.4710"/>
  <node id="7" lat="31.2330" lon="121.4700"/><node id="8" lat="31.2330" lon="121.4710"/>
  <node id="9" lat="31.2340" lon="121.4700"/><node id="10" lat="31.2340" lon="121.4710"/>
  <node id="11" lat="31.2350" lon="121.4700"/><node id="12" lat="31.2350" lon="121.4710"/>
  <node id="13" lat="31.2360" lon="121.4700"/><node id="14" lat="31.2360" lon="121.4710"/>
  <way id="1"><nd ref="1"/><nd ref="2"/><tag k="highway" v="residential"/><tag k="oneway" v="yes"/>
    <tag k="oneway:motor_vehicle" v="no"/></way>
  <way id="2"><nd ref="3"/><nd ref="4"/><tag k="highway" v="residential"/>
    <tag k="motor_vehicle:backward" v="no"/></way>
  <way id="3"><nd ref="5"/><nd ref="6"/><tag k="highway" v="pedestrian"/></way>
  <way id="4"><nd ref="7"/><nd ref="8"/><tag k="highway" v="pedestrian"/><tag k="motor_vehicle" v="destination"/></way>
  <way id="5"><nd ref="9"/><nd ref="10"/><tag k="highway" v="secondary"/><tag k="maxspeed:forward" v="60"/>
    <tag k="maxspeed:backward" v="20"/></way>
  <way id="6"><nd ref="11"/><nd ref="12"/><tag k="highway" v="service"/><tag k="access" v="no"/>
    <tag k="motor_vehicle" v="yes"/></way>
  <way id="7"><nd ref="13"/><nd ref="14"/><tag k="highway" v="residential"/><tag k="oneway" v="-1"/>
    <tag k="oneway:motorcar" v="yes"/><tag k="motorcar:forward" v="no"/></way>
</osm>
"""


def test_car_access_tags(tmp_path: Path) -> None:
    path = tmp_path / "access.osm"
    path.write_text(ACCESS_OSM)
    g = import_osm(path, largest_scc=False)
    ref = g.node_ref
    speeds = {(int(ref[t]), int(ref[h])): float(s) for t, h, s in zip(g.tail, g.head, g.speed_kmh, strict=True)}
    assert {(1, 2), (2, 1)} <= set(speeds)  # oneway:motor_vehicle=no beats oneway=yes
    assert (3, 4) in speeds and (4, 3) not in speeds  # motor_vehicle:backward=no
    assert (5, 6) not in speeds and (6, 5) not in speeds  # pedestrian street, closed to cars
    assert (7, 8) in speeds and (8, 7) in speeds  # pedestrian street open to destination traffic
    assert speeds[(9, 10)] == 60.0 and speeds[(10, 9)] == 20.0  # maxspeed:forward / :backward
    assert (11, 12) in speeds  # motor_vehicle=yes beats access=no
    # oneway:motorcar=yes beats oneway=-1, and motorcar:forward=no then closes the only direction.
    assert (13, 14) not in speeds and (14, 13) not in speeds
    assert np.all(g.speed_kmh > 0)


def test_import_command_reports_restrictions(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from safecity.geo.road.commands import road_app

    path = tmp_path / "cross.osm"
    path.write_text(CROSS_OSM)
    res = CliRunner().invoke(road_app, ["import-osm", str(path), "-o", str(tmp_path / "g.npz"), "--no-order"])
    assert res.exit_code == 0, res.output
    assert "2 of 8 relations used (4 banned turns)" in res.output
    assert "road.bad_turn_restriction: relation 306" in res.output
    assert len(RoadGraph.load(tmp_path / "g.npz").turn_bans) == 4
