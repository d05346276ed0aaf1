"""Customizable contraction hierarchies (RoutingKit, BSD-2, via `routingkit-cch`) for fast exact queries.

CCH fits live road conditions: the node order is computed once (and stored in the graph artifact), the hierarchy is
built from topology only, and new edge weights are applied by a partial re-customization in well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import routingkit_cch as rk
import structlog

from safecity.geo.road.conditions import INF_MS
from safecity.geo.road.graph import RoadGraph

log = structlog.get_logger(__name__)

Seeds = Sequence[tuple[int, int]]  # (node, initial ms)


def compute_order(graph: RoadGraph) -> npt.NDArray[np.int64]:
    """A nested-dissection node order (inertial separators on coordinates); seconds on 100k nodes, so it is saved."""
    order = rk.compute_order_inertial(
        graph.n_nodes, graph.tail.tolist(), graph.head.tolist(), graph.lat.tolist(), graph.lon.tolist()
    )
    return np.asarray(order, dtype=np.int64)


def graph_order(graph: RoadGraph) -> npt.NDArray[np.int64]:
    """The graph's stored CCH order, computing (and caching on the graph) one if absent."""
    order = graph.__dict__.get("_cch_order")
    if order is None:
        order = compute_order(graph)
        graph.__dict__["_cch_order"] = order
    return order


class CchEngine:
    """A customized CCH over a graph with reusable query objects; weights are integer milliseconds."""

    def __init__(self, graph: RoadGraph, weights_ms: npt.NDArray[np.int64]) -> None:
        self.graph = graph
        order = graph_order(graph)
        self.cch = rk.CCH(order.tolist(), graph.tail.tolist(), graph.head.tolist(), False)
        self.metric = rk.CCHMetric(self.cch, weights_ms.tolist())
        self._updater: Any = None
        self._query: Any = None
        self._many_to_one: Any = None
        self._many_to_one_key: tuple[int, ...] = ()

    def _drop_queries(self) -> None:
        # RoutingKit forbids changing a metric while queries borrow it.
        self._query = None
        self._many_to_one = None
        self._many_to_one_key = ()

    def update(self, edge_ids: npt.NDArray[np.int64], weights_ms: npt.NDArray[np.int64]) -> None:
        """Apply new weights to some edges (partial re-customization)."""
        if len(edge_ids) == 0:
            return
        self._drop_queries()
        if self._updater is None:
            self._updater = rk.CCHMetricPartialUpdater(self.cch)
        self._updater.apply(self.metric, {int(e): int(w) for e, w in zip(edge_ids, weights_ms, strict=True)})

    def reset(self, weights_ms: npt.NDArray[np.int64]) -> None:
        """Re-customize all weights."""
        self._drop_queries()
        self.metric.reset(weights_ms.tolist())

    def route(self, sources: Seeds, targets: Seeds) -> tuple[int | None, list[int]]:
        """Shortest distance (ms) and node path from seeded sources to seeded targets."""
        if not sources or not targets:
            return None, []
        if self._query is None:
            self._query = rk.CCHQuery(self.metric)
        res = self._query.run_multi(list(sources), list(targets))
        dist, path = res.distance, list(res.node_path) if res.distance is not None else []
        del res  # the binding requires the result gone before the next run
        if dist is not None and dist >= INF_MS:
            return None, []
        return dist, path

    def distance(self, source: int, target: int) -> int | None:
        """Node-to-node distance in ms, or None."""
        if self._query is None:
            self._query = rk.CCHQuery(self.metric)
        res = self._query.run(int(source), int(target))
        dist = res.distance
        del res
        return None if dist is None or dist >= INF_MS else int(dist)

    def many_to_one(self, pinned: list[int], targets: Seeds) -> npt.NDArray[np.float64]:
        """Distances (ms, inf if unreachable) from every pinned source node to the seeded target: one reverse search."""
        if not pinned or not targets:
            return np.full(len(pinned), np.inf)
        key = tuple(pinned)
        if self._many_to_one is None:
            self._many_to_one = rk.CCHManyToOne(self.metric, list(pinned))
            self._many_to_one_key = key
        elif key != self._many_to_one_key:
            self._many_to_one.repin_sources(list(pinned))  # reuses the query's buffers
            self._many_to_one_key = key
        raw = self._many_to_one.distances_to_multi(list(targets))
        return _to_array(raw)

    def one_to_many(self, sources: Seeds, otm: Any) -> npt.NDArray[np.float64]:
        """Distances from seeded sources to every pinned target of `otm`."""
        if not sources:
            return np.full(otm.target_count, np.inf)
        return _to_array(otm.distances_from_multi(list(sources)))

    def pin_targets(self, targets: list[int]) -> Any:
        """A one-to-many query object with pinned target nodes."""
        return rk.CCHOneToMany(self.metric, targets)

    def matrix_nodes(self, origins: Sequence[int], targets: Sequence[int]) -> npt.NDArray[np.float64]:
        """Node-to-node travel-time matrix in seconds (inf where unreachable)."""
        otm = rk.CCHOneToMany(self.metric, [int(t) for t in targets])
        out = np.empty((len(origins), len(targets)), dtype=np.float64)
        for i, o in enumerate(origins):
            out[i] = _to_array(otm.distances_from(int(o)))
        del otm
        return out / 1000.0


def _to_array(raw: list[int | None]) -> npt.NDArray[np.float64]:
    arr = np.array(raw, dtype=np.float64)  # None (unreachable) becomes nan
    arr[np.isnan(arr) | (arr >= INF_MS)] = np.inf
    return arr
