"""Road network: OSM import, CSR graph, snapping, exact travel-time queries (CCH + Dijkstra), conditions, tiles."""

from safecity.geo.road.errors import (
    BadTurnRestriction,
    GraphArtifactError,
    NoDrivableRoads,
    OsmFileError,
    SnapTooFar,
    Unreachable,
)
from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.network import Ranking, RoadNetwork, Route, UnitEta, Unroutable
from safecity.geo.road.osm_import import SpeedProfile, import_osm
from safecity.geo.road.synthetic import synthetic_network

__all__ = [
    "BadTurnRestriction",
    "GraphArtifactError",
    "NoDrivableRoads",
    "OsmFileError",
    "Ranking",
    "RoadGraph",
    "RoadNetwork",
    "Route",
    "SnapTooFar",
    "SpeedProfile",
    "UnitEta",
    "Unreachable",
    "Unroutable",
    "import_osm",
    "synthetic_network",
]
