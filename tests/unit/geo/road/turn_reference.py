"""An independent edge-based Dijkstra with banned turns: the reference the turn tests check against."""

from __future__ import annotations

import heapq
import math

import numpy as np
import numpy.typing as npt

from safecity.geo.road.graph import RoadGraph
from safecity.geo.road.snap import Snap


def edge_search(
    graph: RoadGraph, starts: list[tuple[int, float]], banned: set[tuple[int, int]]
) -> npt.NDArray[np.float64]:
    """Milliseconds to the head of every edge, from (edge, ms at its head) start states; banned turns never taken."""
    ms = graph.time_ms
    head, indptr = graph.head, graph.indptr
    best = np.full(graph.n_edges, np.inf)
    heap: list[tuple[float, int]] = []
    for e, d in starts:
        if d < best[e]:
            best[e] = d
            heapq.heappush(heap, (d, e))
    while heap:
        d, e = heapq.heappop(heap)
        if d > best[e]:
            continue
        v = int(head[e])
        for f in range(int(indptr[v]), int(indptr[v + 1])):
            nd = d + float(ms[f])
            if (e, f) not in banned and nd < best[f]:
                best[f] = nd
                heapq.heappush(heap, (nd, f))
    return best


def from_node(graph: RoadGraph, source: int, banned: set[tuple[int, int]]) -> npt.NDArray[np.float64]:
    """Seconds from node `source` (leaving by any edge) to every node (arriving by any edge)."""
    ms = graph.time_ms
    lo, hi = int(graph.indptr[source]), int(graph.indptr[source + 1])
    best = edge_search(graph, [(f, float(ms[f])) for f in range(lo, hi)], banned)
    out = np.full(graph.n_nodes, np.inf)
    np.minimum.at(out, graph.head.astype(np.int64), best)
    out[source] = 0.0
    return out / 1000.0


def point_to_point(graph: RoadGraph, a: Snap, b: Snap, banned: set[tuple[int, int]]) -> float:
    """Seconds from snapped point a to snapped point b (inf if unreachable), edge-based from first principles."""
    ms = graph.time_ms.astype(np.float64)
    starts = [(a.edge, (1.0 - a.fraction) * ms[a.edge])]
    if a.twin >= 0:
        starts.append((a.twin, a.fraction * ms[a.twin]))
    # The tests' points are never exactly on a node, so the one-way node special cases do not arise.
    assert 0.0 < a.fraction < 1.0 and 0.0 < b.fraction < 1.0
    best = edge_search(graph, [(e, float(round(d))) for e, d in starts], banned)
    answer = math.inf
    for e, frac in [(b.edge, b.fraction)] + ([(b.twin, 1.0 - b.fraction)] if b.twin >= 0 else []):
        u = int(graph.tail[e])
        for g in np.nonzero(graph.head == u)[0].tolist():
            if (g, e) not in banned:
                answer = min(answer, best[g] + round(frac * ms[e]))
    return min(answer, a.same_road_ms(b, graph.time_ms)) / 1000.0
