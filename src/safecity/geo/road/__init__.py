"""Road network: OSM import, CSR graph, snapping, exact travel-time queries (CCH + Dijkstra), conditions, tiles."""

from safecity.geo.road.errors import GraphArtifactError, NoDrivableRoads, OsmFileError, SnapTooFar, Unreachable
from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.network import RoadNetwork, Route, UnitEta
from safecity.geo.road.osm_import import SpeedProfile, import_osm
from safecity.geo.road.synthetic import synthetic_network

__all__ = [
    "GraphArtifactError",
    "NoDrivableRoads",
    "OsmFileError",
    "RoadGraph",
    "RoadNetwork",
    "Route",
    "SnapTooFar",
    "SpeedProfile",
    "UnitEta",
    "Unreachable",
    "import_osm",
    "synthetic_network",
]
