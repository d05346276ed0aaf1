"""Road conditions: per-edge speed factors (congestion) and closures, applied without rebuilding the graph."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from safecity.kernel.errors import InvalidInput

# RoutingKit's infinity: an arc with this weight is never used. Closures map to it.
INF_MS = 2_147_483_647


class RoadConditions:
    """Speed factors and closures per edge; `weights_ms` gives the effective travel times."""

    def __init__(self, base_ms: npt.NDArray[np.int64]) -> None:
        self.base_ms = base_ms
        self.factor = np.ones(len(base_ms), dtype=np.float64)
        self.closed = np.zeros(len(base_ms), dtype=bool)
        self.version = 0

    def _ids(self, edge_ids: Iterable[int]) -> npt.NDArray[np.int64]:
        ids = np.fromiter((int(e) for e in edge_ids), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.base_ms)):
            raise InvalidInput("edge id out of range")
        return ids

    def set_speed_factor(self, edge_ids: Iterable[int], factor: float) -> npt.NDArray[np.int64]:
        """Scale the speed of edges (0.5 = half speed); returns the edge ids changed."""
        if not 0.01 <= factor <= 10.0:
            raise InvalidInput("speed factor must be between 0.01 and 10")
        ids = self._ids(edge_ids)
        self.factor[ids] = factor
        self.version += 1
        return ids

    def close(self, edge_ids: Iterable[int]) -> npt.NDArray[np.int64]:
        """Close edges to traffic; returns the edge ids changed."""
        ids = self._ids(edge_ids)
        self.closed[ids] = True
        self.version += 1
        return ids

    def reopen(self, edge_ids: Iterable[int]) -> npt.NDArray[np.int64]:
        """Reopen closed edges; returns the edge ids changed."""
        ids = self._ids(edge_ids)
        self.closed[ids] = False
        self.version += 1
        return ids

    def clear(self) -> npt.NDArray[np.int64]:
        """Back to free flow everywhere; returns the edge ids that had a condition."""
        ids = np.nonzero(self.closed | (self.factor != 1.0))[0].astype(np.int64)
        self.factor[:] = 1.0
        self.closed[:] = False
        self.version += 1
        return ids

    def weights_ms(self, ids: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.int64]:
        """Effective travel times (ms) of all edges, or of `ids`; closed edges weigh INF_MS."""
        base = self.base_ms if ids is None else self.base_ms[ids]
        factor = self.factor if ids is None else self.factor[ids]
        closed = self.closed if ids is None else self.closed[ids]
        ms = np.maximum(np.rint(base / factor), 1).astype(np.int64)
        return np.where(closed, INF_MS, np.minimum(ms, INF_MS - 1))

    @property
    def active(self) -> bool:
        """Whether any edge has a condition."""
        return bool(self.closed.any() or (self.factor != 1.0).any())
