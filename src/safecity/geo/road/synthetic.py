"""A deterministic hierarchical road-network generator (10k to 1M nodes) for the demo district and benchmarks.

Shape: a grid of arterial roads (secondary, every fourth one primary, every eighth a trunk) encloses superblocks of
local streets. Local streets reach the arterials only at a few gates per block side, some local streets are one-way
and a few are missing, as in a real district. The same seed and size always give the same graph.
"""

from __future__ import annotations

import math

import numpy as np

from safecity.geo.road.graph import HIGHWAY_CODE, RoadGraph
from safecity.geo.road.osm_import import DEFAULT_SPEEDS_KMH
from safecity.kernel import clock

DEFAULT_CENTER = (121.2655, 31.3752)  # (lon, lat): Jiading, Shanghai
BLOCK = 10  # one arterial line every BLOCK grid steps


def synthetic_network(
    n_nodes: int = 10_000,
    *,
    seed: int = 7,
    center: tuple[float, float] = DEFAULT_CENTER,
    spacing_m: float = 120.0,
    oneway_share: float = 0.12,
    missing_share: float = 0.06,
    gates_per_side: int = 2,
) -> RoadGraph:
    """Generate a road network of about `n_nodes` nodes (largest strongly connected component)."""
    if not 100 <= n_nodes <= 5_000_000:
        raise ValueError("n_nodes must be between 100 and 5,000,000")
    rng = np.random.default_rng(seed)
    side = math.ceil(math.sqrt(n_nodes))
    rows, cols = np.divmod(np.arange(side * side, dtype=np.int64), side)
    arterial_row = rows % BLOCK == 0
    arterial_col = cols % BLOCK == 0

    # Coordinates: metres from the south-west corner, local nodes jittered so streets are not ruler-straight.
    x = cols * spacing_m
    y = rows * spacing_m
    local = ~(arterial_row | arterial_col)
    jitter = rng.uniform(-0.15, 0.15, size=(2, side * side)) * spacing_m
    x = x + np.where(local, jitter[0], 0.0)
    y = y + np.where(local, jitter[1], 0.0)
    lon0, lat0 = center
    half = (side - 1) * spacing_m / 2
    lat = lat0 + (y - half) / 110_574.0
    lon = lon0 + (x - half) / (111_320.0 * math.cos(math.radians(lat0)))

    idx = np.arange(side * side, dtype=np.int64).reshape(side, side)
    # Horizontal edges (r, c)-(r, c+1) and vertical edges (r, c)-(r+1, c).
    h_a, h_b = idx[:, :-1].ravel(), idx[:, 1:].ravel()
    v_a, v_b = idx[:-1, :].ravel(), idx[1:, :].ravel()
    a = np.concatenate([h_a, v_a])
    b = np.concatenate([h_b, v_b])
    horizontal = np.concatenate([np.ones(len(h_a), bool), np.zeros(len(v_a), bool)])

    # An edge lies on an arterial when both ends sit on the same arterial line.
    on_row = arterial_row[a] & arterial_row[b]
    on_col = arterial_col[a] & arterial_col[b]
    arterial = (horizontal & on_row) | (~horizontal & on_col)
    touches = (arterial_row[a] | arterial_col[a] | arterial_row[b] | arterial_col[b]) & ~arterial

    # Gates: a local street meets an arterial only at `gates_per_side` positions per block side.
    lane = np.where(horizontal, rows[a] % BLOCK, cols[a] % BLOCK)  # position along the block side
    block_r, block_c = rows[a] // BLOCK, cols[a] // BLOCK
    side_key = (block_r * 7919 + block_c * 104_729 + horizontal.astype(np.int64) * 31 + (rows[b] - rows[a]) * 3) % (
        BLOCK - 1
    )
    gate = np.zeros(len(a), bool)
    for g in range(gates_per_side):
        gate |= lane == 1 + (side_key + g * (BLOCK // 2)) % (BLOCK - 1)
    keep = arterial | (touches & gate) | (~touches & ~arterial & (rng.random(len(a)) >= missing_share))
    a, b, horizontal, arterial = a[keep], b[keep], horizontal[keep], arterial[keep]

    # Arterial class by line index: every 8th a trunk, every 4th a primary, else secondary.
    line = np.where(horizontal, rows[a] // BLOCK, cols[a] // BLOCK)
    cls = np.full(len(a), HIGHWAY_CODE["residential"], dtype=np.int8)
    cls[arterial] = HIGHWAY_CODE["secondary"]
    cls[arterial & (line % 4 == 0)] = HIGHWAY_CODE["primary"]
    cls[arterial & (line % 8 == 0)] = HIGHWAY_CODE["trunk"]
    speed_by_code = np.array([DEFAULT_SPEEDS_KMH.get(name, 30.0) for name in HIGHWAY_CODE], dtype=np.float64)
    speed = speed_by_code[cls]

    # Directions: arterials two-way; a share of local streets one-way, in a random direction.
    oneway = ~arterial & (rng.random(len(a)) < oneway_share)
    flip = rng.random(len(a)) < 0.5
    fwd = ~oneway | ~flip
    bwd = ~oneway | flip
    tail = np.concatenate([a[fwd], b[bwd]])
    head = np.concatenate([b[fwd], a[bwd]])
    speeds = np.concatenate([speed[fwd], speed[bwd]])
    classes = np.concatenate([cls[fwd], cls[bwd]])
    meta = {
        "source": f"synthetic-{n_nodes}-seed{seed}",
        "kind": "synthetic",
        "seed": seed,
        "requested_nodes": n_nodes,
        "center": list(center),
        "created_at": clock.now().isoformat(),
    }
    return RoadGraph.from_edges(
        lon=lon,
        lat=lat,
        node_ref=np.arange(side * side, dtype=np.int64),
        tail=tail,
        head=head,
        speed_kmh=speeds,
        highway=classes,
        meta=meta,
    )
