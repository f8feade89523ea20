"""The grid index: the serving kernel's sum over only the reference points that carry weight.

``z~(x*) = sum_j W(x*, x_j) E[z_j]`` over M reference points costs ``O(N M Z)``; a point
farther than a few lengthscales from ``x*`` has a weight below float32's resolution. The
reference set is sorted into square cells; each query visits the cells within
:data:`VISIT_LENGTHSCALES` lengthscales and bounds the weight it leaves out (the *ring
bound*), falling back to a wider pass (and then the exact sum) where the bound exceeds
:data:`INDEX_TOLERANCE`. Design and measurements: ``docs/grid-index.md``.
"""

from __future__ import annotations

import math

import numpy as np

# Relative weight a query may leave out: sum of omitted weights / total weight.
INDEX_TOLERANCE = 1e-7
# Visited radius in lengthscales: with the per-query bound below, > 99.9% of queries near
# the data pass at 6 l (measured on clustered sets and a trained run), against 7.1 l for the
# cruder bound M exp(-r^2 / 2l^2) at M = 55,000.
VISIT_LENGTHSCALES = 6.0
# Queries per occupied tile of SHARED_TILE x SHARED_TILE cells from which a batch is served
# tile by tile (nearby queries share one gather and one matmul); below it, query by query.
SHARED_TILE, SHARE_FROM = 8, 4
# The wide pass's ring, beyond the far radius, in lengthscales (its far term is then
# M exp(-(R + 3 l)^2 / 2l^2), < 1e-7 exp(-25): only a query with no point within ~10 l fails).
WIDE_RING = 3.0


def _widths(radius: float, cell: float) -> list:
    """``w[g]`` for row gap ``g = 0, 1, ...`` (0: a row of the tile itself): the cells of
    that row within column gap ``w[g]`` of the tile may hold a point within ``radius`` of a
    point of the tile. Cells ``g`` rows and ``h`` columns away are at least
    ``(g-1)+ cell`` and ``(h-1)+ cell`` away on each axis; a cell is kept unless that bound
    is ``>= radius``."""
    out, gap = [], 0
    while max(gap - 1, 0) * cell < radius:
        v = max(gap - 1, 0) * cell
        out.append(int(math.floor(math.sqrt(radius * radius - v * v) / cell - 1e-12)) + 1)
        gap += 1
    return out


class GridIndex:
    """A uniform 2-D grid over reference locations, for :func:`indexed_predictive_mean`.

    Built once per reference set and lengthscale (NumPy). Reference points are sorted by cell
    (row-major: ``cell = row * n_cols + col``); ``order`` is that permutation and
    ``cell_start[c]:cell_start[c + 1]`` the points of cell ``c`` in sorted order. Cells have
    side ``radius / k``.

    The bound. Queries are served by tile (``t x t`` cells, ``t = 1`` for a lone query).
    A tile visits every point of the cells that can hold a point within ``radius`` (``r``,
    ``VISIT_LENGTHSCALES`` l) of it, a rounded rectangle of cells (a lone query: the cells
    within ``r`` of the query itself, a subset of its cell's). For a query ``q`` the
    omitted weight is then bounded cell by cell over the ring of cells within ``far_radius``
    (``R``) not visited, and by ``M exp(-R^2 / 2l^2)`` beyond:

        omitted(q) <= sum_{ring cells c} n_c exp(-d(q, c)^2 / (2 l^2)) + M exp(-R^2 / (2 l^2))

    with ``d(q, c)`` the distance from ``q`` to the cell's rectangle and ``n_c`` its count
    (both exact, from the grid; no point of the ring is visited). ``R^2 = 2 l^2 (log M - log
    tolerance + far_slack)``. A query passes when ``omitted(q) / S(q) < tolerance``, ``S(q)``
    the weight visited; one that does not (a sparse spot beside a dense one) visits the
    whole far radius, with the same bound over a ring to ``R + WIDE_RING l``, and one that
    still does not (far outside the grid) is computed by the exact full sum. ``usable`` is
    False (use the exact kernel) when the grid would not help: a tile's visited block would cover a large part of the data's bounding box.
    """

    def __init__(self, x, lengthscale: float, tolerance: float = INDEX_TOLERANCE,
                 visit: float = VISIT_LENGTHSCALES, far_slack: float = 3.0, k: int = 4,
                 max_cells: int = 1 << 20):
        x = np.asarray(x, np.float64)
        m = len(x)
        self.size, self.lengthscale, self.tolerance, self.k = m, float(lengthscale), tolerance, k
        self.usable = x.ndim == 2 and x.shape[1] == 2 and m >= 2
        if not self.usable:
            return
        l2 = self.lengthscale ** 2
        self.log_size = math.log(m)
        self.far_radius = math.sqrt(2 * l2 * (self.log_size - math.log(tolerance) + far_slack))
        self.radius = min(visit * self.lengthscale, self.far_radius)
        lo, hi = x.min(axis=0), x.max(axis=0)
        extent = np.maximum(hi - lo, 1e-12)
        # Cap the number of cells: coarser cells cover more than the radius (still exact).
        self.cell = max(self.radius / k, math.sqrt(extent[0] * extent[1] / max_cells),
                        float(extent.max()) / 4096)
        self.origin = lo
        self.n_cols = int(extent[0] // self.cell) + 1
        self.n_rows = int(extent[1] // self.cell) + 1
        self.visit_widths = _widths(self.radius, self.cell)
        self.ring_widths = _widths(self.far_radius, self.cell)
        # The wide pass visits the whole far radius; its own ring reaches WIDE_RING l further.
        self.wide_far_radius = self.far_radius + WIDE_RING * self.lengthscale
        self.wide_ring_widths = _widths(self.wide_far_radius, self.cell)
        _, widths, *_ = self.tile_tables(SHARED_TILE)
        block = float(np.sum(2 * widths + SHARED_TILE)) * self.cell ** 2
        self.usable = block < 0.25 * float(np.prod(extent + self.cell))
        cols = np.minimum(((x[:, 0] - lo[0]) // self.cell).astype(np.int64), self.n_cols - 1)
        rows = np.minimum(((x[:, 1] - lo[1]) // self.cell).astype(np.int64), self.n_rows - 1)
        cells = rows * self.n_cols + cols
        self.order = np.argsort(cells, kind="stable")
        self.cell_start = np.searchsorted(cells[self.order],
                                          np.arange(self.n_rows * self.n_cols + 1)).astype(np.int64)

    def tile_tables(self, tile: int, wide: bool = False):
        """Static tables for tiles of ``tile x tile`` cells (NumPy).

        ``rows``, ``widths``: the visited rows relative to the tile's first row and, for
        each, the columns visited beyond the tile on either side. ``ring_rows``,
        ``ring_cols``, ``ring_mask``: the dense block of cells within ``far_radius`` and
        which of them are in the ring (within it, not visited). ``wide``: the wide pass,
        visiting everything within ``far_radius``, its ring reaching ``wide_far_radius``.
        """

        visit_widths = self.ring_widths if wide else self.visit_widths
        ring_widths = self.wide_ring_widths if wide else self.ring_widths

        def rows_and_gaps(widths):
            g = len(widths) - 1
            rows = np.arange(-g, tile + g)
            return rows, np.maximum(np.maximum(-rows, rows - (tile - 1)), 0)

        rows, gap = rows_and_gaps(visit_widths)
        widths = np.array([visit_widths[g] for g in gap])
        ring_rows, ring_gap = rows_and_gaps(ring_widths)
        w_max = max(ring_widths)
        ring_cols = np.arange(-w_max, tile + w_max)
        col_gap = np.maximum(np.maximum(-ring_cols, ring_cols - (tile - 1)), 0)
        in_far = col_gap[None] <= np.array([ring_widths[g] for g in ring_gap])[:, None]
        visit = np.array([visit_widths[g] if g < len(visit_widths) else -1
                          for g in ring_gap])
        visited = col_gap[None] <= visit[:, None]
        return rows, widths, ring_rows, ring_cols, in_far & ~visited

    def __repr__(self):
        if not self.usable:
            return f"GridIndex(M={self.size}, unusable: exact kernel)"
        return (f"GridIndex(M={self.size}, {self.n_rows}x{self.n_cols} cells of "
                f"{self.cell:.3g}, radius {self.radius:.3g} = "
                f"{self.radius / self.lengthscale:.2f} l, ring to "
                f"{self.far_radius / self.lengthscale:.2f} l)")
