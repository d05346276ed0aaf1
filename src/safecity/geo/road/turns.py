"""Turn restrictions as an edge-based search: node splitting around restricted via nodes only.

A via node v with a banned turn is split into one copy per edge arriving at v; an edge leaving v starts from every
copy whose arrival edge may turn onto it. The search then knows the edge it came by wherever that matters, and the
rest of the graph (every node without a ban) stays node-based, as small and as fast as before. Shortest paths in the
expanded graph are exactly the turn-restricted shortest paths of the road graph (U-turns at a node stay allowed
unless banned, as in pgRouting's `pgr_trsp`).

With no bans the expansion is the identity and every mapping below is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from safecity.geo.road.conditions import INF_MS
from safecity.geo.road.graph import RoadGraph

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Seeds = list[tuple[int, int]]  # (node, initial ms)


@dataclass
class TurnGraph:
    """The expanded graph (`graph`) and its mappings back to the road graph (`base`)."""

    base: RoadGraph
    graph: RoadGraph
    edge_orig: I64  # expanded edge -> base edge
    node_orig: I64  # expanded node -> base node (the first n are the base nodes themselves)
    x_head: I64  # base edge -> the expanded node it arrives at (a copy when its head is split)
    x_edges_ptr: I64  # base edge e -> expanded edges x_edges[x_edges_ptr[e]:x_edges_ptr[e+1]]
    x_edges: I64
    in_edges: dict[int, list[int]]  # split base node -> its arrival edges (in copy order)
    banned: frozenset[tuple[int, int]]

    @property
    def restricted(self) -> bool:
        """Whether any turn is banned (otherwise the expanded graph is the road graph)."""
        return bool(self.banned)

    @property
    def split_nodes(self) -> int:
        """How many base nodes were split."""
        return len(self.in_edges)

    # --- seeds -------------------------------------------------------------------------------------------------

    def leaving(self, node: int, weights_ms: I64) -> Seeds:
        """Seeds to start at base node `node` with no arrival edge: every out-edge is open."""
        if node not in self.in_edges:
            return [(node, 0)]
        b = self.base
        out = []
        for f in range(int(b.indptr[node]), int(b.indptr[node + 1])):
            w = int(weights_ms[f])
            if w < INF_MS:
                out.append((int(self.x_head[f]), w))
        return out

    def arriving(self, node: int) -> list[int]:
        """Expanded nodes that stand for arriving at base node `node` by any edge."""
        edges = self.in_edges.get(node)
        if edges is None:
            return [node]
        return [int(self.x_head[e]) for e in edges]

    def before(self, edge: int) -> list[int]:
        """Expanded nodes from which base edge `edge` may be taken (the turn onto it is not banned)."""
        tail = int(self.base.tail[edge])
        edges = self.in_edges.get(tail)
        if edges is None:
            return [tail]
        return [int(self.x_head[e]) for e in edges if (e, edge) not in self.banned]

    def origin_seeds(self, edge: int, twin: int, fraction: float, weights_ms: I64) -> Seeds:
        """Seeds for a point on `edge` at `fraction`: drive on to its head, or back over the twin (as Snap does)."""
        seeds: Seeds = []
        w = int(weights_ms[edge])
        if w < INF_MS:
            seeds.append((int(self.x_head[edge]), round((1.0 - fraction) * w)))
        if twin >= 0:
            wt = int(weights_ms[twin])
            if wt < INF_MS:
                seeds.append((int(self.x_head[twin]), round(fraction * wt)))
        if fraction == 0.0 and twin < 0:
            # Standing on the tail node of a one-way edge: every out-edge of that node is open.
            seeds += self.leaving(int(self.base.tail[edge]), weights_ms)
        return seeds

    def target_seeds(self, edge: int, twin: int, fraction: float, weights_ms: I64) -> Seeds:
        """Seeds to arrive at a point on `edge`: take the edge (or its twin) from where the turn onto it is allowed."""
        seeds: Seeds = []
        w = int(weights_ms[edge])
        if w < INF_MS:
            ms = round(fraction * w)
            seeds += [(x, ms) for x in self.before(edge)]
        if twin >= 0:
            wt = int(weights_ms[twin])
            if wt < INF_MS:
                ms = round((1.0 - fraction) * wt)
                seeds += [(x, ms) for x in self.before(twin)]
        if fraction == 1.0 and twin < 0:
            # Standing on the head node of a one-way edge: arriving there by any edge will do.
            seeds += [(x, 0) for x in self.arriving(int(self.base.head[edge]))]
        return seeds

    # --- results back to the road graph ------------------------------------------------------------------------

    def expand_weights(self, weights_ms: I64) -> I64:
        """Per-edge weights of the expanded graph from the road graph's."""
        return weights_ms if not self.restricted else weights_ms[self.edge_orig]

    def expand_edges(self, edge_ids: I64) -> I64:
        """The expanded edges standing for some base edges (for condition updates)."""
        if not self.restricted:
            return edge_ids
        parts = [self.x_edges[self.x_edges_ptr[e] : self.x_edges_ptr[e + 1]] for e in edge_ids]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def arrival_seconds(self, dist_x: F64) -> F64:
        """Seconds to each base node (arriving by any edge) from seconds to each expanded node: min over copies."""
        n = self.base.n_nodes
        if not self.restricted:
            return dist_x
        out = np.array(dist_x[:n], dtype=np.float64)
        np.minimum.at(out, self.node_orig[n:], dist_x[n:])
        return out

    def departure_seconds(self, dist_x: F64, weights_ms: I64) -> F64:
        """Seconds from each base node (leaving by any edge) to a target, from a reverse search's expanded seconds."""
        n = self.base.n_nodes
        if not self.restricted:
            return dist_x
        out = np.array(dist_x[:n], dtype=np.float64)
        for v in self.in_edges:
            best = np.inf
            for node, ms in self.leaving(v, weights_ms):
                best = min(best, ms / 1000.0 + float(dist_x[node]))
            out[v] = best
        return out

    def cch_order(self, base_order: I64) -> I64:
        """The base CCH order with each node's copies right after it: a good order for the expansion, no recompute."""
        if not self.restricted:
            return base_order
        n = self.base.n_nodes
        rank = np.empty(n, dtype=np.int64)
        rank[np.asarray(base_order, dtype=np.int64)] = np.arange(n)
        return np.lexsort((np.arange(len(self.node_orig)), rank[self.node_orig])).astype(np.int64)

    def base_path(self, nodes: list[int]) -> list[int]:
        """An expanded node path as road-graph nodes."""
        if not self.restricted:
            return nodes
        return [int(self.node_orig[x]) for x in nodes]


def build_turn_graph(base: RoadGraph) -> TurnGraph:
    """Split every via node of a banned turn into one copy per arrival edge and rebuild its out-edges per copy."""
    n, m = base.n_nodes, base.n_edges
    bans = np.asarray(base.turn_bans, dtype=np.int64).reshape(-1, 2)
    identity = np.arange(m, dtype=np.int64)
    if len(bans) == 0:
        return TurnGraph(
            base=base,
            graph=base,
            edge_orig=identity,
            node_orig=np.arange(n, dtype=np.int64),
            x_head=base.head.astype(np.int64),
            x_edges_ptr=np.arange(m + 1, dtype=np.int64),
            x_edges=identity,
            in_edges={},
            banned=frozenset(),
        )
    head = base.head.astype(np.int64)
    tail = base.tail.astype(np.int64)
    split = np.zeros(n, dtype=bool)
    split[head[bans[:, 0]]] = True
    banned = frozenset((int(a), int(b)) for a, b in bans)
    # One copy per arrival edge of a split node: the first keeps the node's id, the others get new ids from n up.
    arrivals = np.nonzero(split[head])[0]
    arrivals = arrivals[np.argsort(head[arrivals], kind="stable")]
    x_head = head.copy()
    in_edges: dict[int, list[int]] = {}
    extra_orig: list[int] = []
    for e in arrivals.tolist():
        v = int(head[e])
        group = in_edges.setdefault(v, [])
        if group:
            x_head[e] = n + len(extra_orig)
            extra_orig.append(v)
        group.append(e)
    node_orig = np.concatenate([np.arange(n, dtype=np.int64), np.asarray(extra_orig, dtype=np.int64)])
    # Expanded edges: unsplit tails keep their edge once; a split tail gets one edge per allowed (arrival, edge) turn.
    plain = np.nonzero(~split[tail])[0]
    xt: list[npt.NDArray[np.int64]] = [tail[plain]]
    xh: list[npt.NDArray[np.int64]] = [x_head[plain]]
    xo: list[npt.NDArray[np.int64]] = [plain]
    st, sh, so = [], [], []
    for v, arriving in in_edges.items():
        for f in range(int(base.indptr[v]), int(base.indptr[v + 1])):
            for e in arriving:
                if (e, f) not in banned:
                    st.append(int(x_head[e]))
                    sh.append(int(x_head[f]))
                    so.append(f)
    xt.append(np.asarray(st, dtype=np.int64))
    xh.append(np.asarray(sh, dtype=np.int64))
    xo.append(np.asarray(so, dtype=np.int64))
    t_all, h_all, o_all = np.concatenate(xt), np.concatenate(xh), np.concatenate(xo)
    order = np.lexsort((h_all, t_all))
    t_all, h_all, o_all = t_all[order], h_all[order], o_all[order]
    nx = len(node_orig)
    indptr = np.zeros(nx + 1, dtype=np.int64)
    np.cumsum(np.bincount(t_all, minlength=nx), out=indptr[1:])
    graph = RoadGraph(
        lon=base.lon[node_orig],
        lat=base.lat[node_orig],
        node_ref=base.node_ref[node_orig],
        indptr=indptr,
        head=h_all.astype(np.int32),
        length_m=base.length_m[o_all],
        speed_kmh=base.speed_kmh[o_all],
        highway=base.highway[o_all],
        way_ref=base.way_ref[o_all],
        meta=base.meta,
    )
    by_orig = np.argsort(o_all, kind="stable")
    ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(o_all, minlength=m), out=ptr[1:])
    return TurnGraph(
        base=base,
        graph=graph,
        edge_orig=o_all,
        node_orig=node_orig,
        x_head=x_head,
        x_edges_ptr=ptr,
        x_edges=by_orig.astype(np.int64),
        in_edges=in_edges,
        banned=banned,
    )


def turn_graph(base: RoadGraph) -> TurnGraph:
    """The graph's expansion, built once and cached on the graph (set_turn_bans drops it)."""
    cached = base.__dict__.get("_turns")
    if cached is None:
        cached = build_turn_graph(base)
        base.__dict__["_turns"] = cached
    return cached
