"""The kernel's predictive mean through the grid index (:func:`indexed_predictive_mean`): the
shared-tile loop for dense batches and the sparse product for the rest, each with the ring
bound on the weight it leaves out (see :mod:`npvae_tf.model.grid_index`)."""

from __future__ import annotations

import math
from npvae_tf.core.backend import tf
from npvae_tf.model.grid_index import SHARE_FROM, SHARED_TILE, GridIndex
from npvae_tf.model.kernel import squared_distances

def _tile_ids(x_query, index: GridIndex, tile: int):
    """Per query: a tile id, and the tile's first cell row and column (``[N]`` int64 each).

    Coordinates are clipped (in float) so far queries cannot overflow: a clipped tile lies
    beyond the grid by more than the ring, so it visits nothing (exact fall-back)."""
    n_trows, n_tcols = -(-index.n_rows // tile), -(-index.n_cols // tile)
    margin = len(index.wide_ring_widths) // tile + max(index.wide_ring_widths) // tile + 2
    q64 = tf.cast(x_query, tf.float64)
    size = index.cell * tile
    tcol = tf.cast(tf.clip_by_value(tf.floor((q64[:, 0] - index.origin[0]) / size),
                                    -margin, n_tcols + margin), tf.int64)
    trow = tf.cast(tf.clip_by_value(tf.floor((q64[:, 1] - index.origin[1]) / size),
                                    -margin, n_trows + margin), tf.int64)
    ids = (trow + margin) * (n_tcols + 2 * margin + 1) + tcol + margin
    return ids, trow * tile, tcol * tile


def indexed_predictive_mean(kernel, x_query, x_sorted, z_sorted, index: GridIndex,
                            cell_start=None, lengthscale=None, tile=None, chunk_size=None):
    """``z~`` ``[N, Z]`` over a reference set sorted by :class:`GridIndex` cell.

    Plain TensorFlow ops (no XLA). ``x_sorted``, ``z_sorted``: the reference set in
    ``index.order`` (rows past the index's size are padding, never visited by the grid,
    weight 0 in the exact fall-back). ``cell_start``: ``index.cell_start`` as a tensor (the
    SavedModel's variable; default: a constant). ``lengthscale``: the index's by default.

    Queries are grouped by tile. For a tile of several cells, one loop step per occupied
    tile gathers the reference points of the tile's visited cells (contiguous row ranges
    in the sorted order) and computes the tile's queries as a dense softmax and one matmul,
    so nearby queries share the gathered ``E[z]`` rows. For tile 1 each query visits only
    its own cells, all queries at once as a sparse product (:func:`_sparse_pass`).
    ``tile=None`` picks per batch: ``SHARED_TILE`` when the queries are dense enough to
    share (at least ``SHARE_FROM`` per occupied tile on average), else 1. Queries whose
    bound (see :class:`GridIndex`) does not reach the tolerance visit the whole far radius
    (the wide pass); those it still does not clear (far from every point) are computed with
    ``kernel``'s exact chunked sum over every point.
    """
    x_query = tf.convert_to_tensor(x_query, tf.float32)
    if cell_start is None:
        cell_start = index.cell_start
    cell_start = tf.convert_to_tensor(cell_start, tf.int64)
    lengthscale = index.lengthscale if lengthscale is None else lengthscale
    x_sorted = tf.convert_to_tensor(x_sorted, tf.float32)
    z_sorted = tf.convert_to_tensor(z_sorted, tf.float32)
    # An empty batch never reaches the passes (a CSR product of no rows divides by zero).
    return tf.cond(tf.shape(x_query)[0] > 0,
                   lambda: _indexed(kernel, x_query, x_sorted, z_sorted, index, cell_start,
                                    lengthscale, tile, chunk_size),
                   lambda: tf.zeros([0, tf.shape(z_sorted)[1]], tf.float32))


def _indexed(kernel, x_query, x_sorted, z_sorted, index, cell_start, lengthscale, tile,
             chunk_size):
    """:func:`indexed_predictive_mean` for a batch of at least one query."""
    if tile is not None:
        z, ok = _grid_pass(x_query, x_sorted, z_sorted, cell_start, index, lengthscale, tile)
    else:
        shared = _tile_ids(x_query, index, SHARED_TILE)[0]
        occupied = tf.size(tf.unique(shared)[0])
        z, ok = tf.cond(
            tf.size(shared) >= SHARE_FROM * occupied,
            lambda: _grid_pass(x_query, x_sorted, z_sorted, cell_start, index, lengthscale,
                               SHARED_TILE),
            lambda: _grid_pass(x_query, x_sorted, z_sorted, cell_start, index, lengthscale, 1))
    bad = tf.where(~ok)[:, 0]

    def wider():
        # A query the ring bound does not clear (a sparse spot beside a dense one, or a
        # lone one) visits the whole far radius, each query its own cells: ~1.8x the points, far
        # cheaper than the exact sum over every point (seconds per query at M = 1,000,000).
        z_bad, ok_bad = _grid_pass(tf.gather(x_query, bad), x_sorted, z_sorted, cell_start,
                                   index, lengthscale, 1, wide=True)
        return tf.tensor_scatter_nd_update(z, bad[:, None], z_bad), tf.tensor_scatter_nd_update(
            ok, bad[:, None], ok_bad)

    z, ok = tf.cond(tf.size(bad) > 0, wider, lambda: (z, ok))
    bad = tf.where(~ok)[:, 0]

    def exact():
        z_bad = kernel.predictive_mean(tf.gather(x_query, bad), x_sorted, z_sorted,
                                       chunk_size, lengthscale=lengthscale)
        return tf.tensor_scatter_nd_update(z, bad[:, None], z_bad)

    return tf.cond(tf.size(bad) > 0, exact, lambda: z)



def _grid_pass(x_query, x_sorted, z_sorted, cell_start, index: GridIndex, lengthscale,
               tile: int, wide: bool = False):
    """``(z~ [N, Z], ok [N])`` by tiles of ``tile x tile`` cells; ``ok``: the bound holds.
    ``wide``: visit the whole ``far_radius``, the ring beyond it to ``wide_far_radius``.
    Tile 1 (nothing shared) is one sparse product (:func:`_sparse_pass`); larger tiles
    loop over the occupied tiles, one dense product each."""
    if tile == 1:
        return _sparse_pass(x_query, x_sorted, z_sorted, cell_start, index, lengthscale, wide)
    rows, widths, ring_rows, ring_cols, ring_mask = index.tile_tables(tile, wide)
    inv_two_l2, inv64, log_far = _bound_terms(index, lengthscale, wide)
    log_tol = math.log(index.tolerance)

    ids, first_row, first_col = _tile_ids(x_query, index, tile)
    order = tf.argsort(ids, stable=True)
    unique_ids, group = tf.unique(tf.gather(ids, order))
    n_groups = tf.shape(unique_ids)[0]
    bounds = tf.concat([[0], tf.cumsum(tf.math.bincount(group, minlength=n_groups,
                                                        dtype=tf.int32))], 0)

    def step(g):
        members = order[bounds[g]:bounds[g + 1]]
        q = tf.gather(x_query, members)
        row0, col0 = tf.gather(first_row, members[0]), tf.gather(first_col, members[0])
        # Visited: one contiguous range of the sorted reference set per cell row.
        _, first, last = _row_ranges(cell_start, index, row0 + rows, tf.maximum(col0 - widths, 0),
                                     tf.minimum(col0 + tile - 1 + widths, index.n_cols - 1))
        idx = tf.ragged.range(first, last).flat_values
        logits = -squared_distances(q, tf.gather(x_sorted, idx)) * inv_two_l2  # [q, T]
        has = tf.size(idx) > 0
        peak = tf.where(has, tf.reduce_max(logits, axis=1), -math.inf)
        p = tf.exp(logits - tf.where(has, peak, 0.0)[:, None])
        mass = tf.reduce_sum(p, axis=1)
        z = tf.math.divide_no_nan(tf.matmul(p, tf.gather(z_sorted, idx)), mass[:, None])
        log_visited = tf.cast(peak, tf.float64) + tf.math.log(tf.cast(mass, tf.float64))
        # The ring: counts of the cells within far_radius not visited, each at its
        # distance from the query (in float64: a bound, not an estimate).
        rr, cc = row0 + ring_rows, col0 + ring_cols
        counts = _cell_counts(cell_start, index, rr[:, None], cc[None], ring_mask)
        where = tf.where(counts > 0)
        log_ring = _log_ring_bound(q, tf.gather(rr, where[:, 0])[None],
                                   tf.gather(cc, where[:, 1])[None],
                                   tf.gather_nd(counts, where)[None], index, inv64, log_far)
        return z, (mass > 0) & (log_ring - log_visited <= log_tol)

    return _per_group(n_groups, step, order, tf.shape(z_sorted)[1], parallel_iterations=1)


# Queries per sparse product: bounds its memory whatever the batch (pairs ~ 2,000-4,000
# per query at the serving lengthscales measured, ~80 bytes each in flight), and small
# chunks measured faster than large ones (128: ~25% less time than 2,048 at M = 1,000,000).
SPARSE_QUERIES = 128


def _sparse_pass(x_query, x_sorted, z_sorted, cell_start, index: GridIndex, lengthscale,
                 wide: bool = False):
    """``(z~ [N, Z], ok [N])``, each query over its own visited cells (tile 1), as one sparse
    matrix product per chunk of ``SPARSE_QUERIES`` queries.

    The pairs (query i, reference point j in a visited cell) are listed at once: a query's
    visited cells are one contiguous range of the sorted reference set per cell row, so
    they are ``tf.ragged.range`` of ``[N, rows]`` bounds. With ``p_ij = exp(logit_ij -
    max_j logit_ij)`` the numerator ``P @ E[z]`` is a CSR matrix times the sorted ``[M, Z]``
    reference means (``SparseMatrixMatMul``), reading only the rows that carry weight; the
    queries are taken in Z-order of cells, so neighbouring queries' rows are still in cache. The
    loop of :func:`_grid_pass` instead costs a few milliseconds of op dispatch per step,
    which dominates when queries do not share tiles (a sparse batch, or a large M).
    ``ok`` is the bound of :class:`GridIndex` for a tile of one cell.
    """
    import numpy as np

    n_cols, cell = index.n_cols, index.cell
    rows, widths, ring_rows, ring_cols, ring_mask = index.tile_tables(1, wide)
    # Every cell within far_radius of the query's cell (visited or not, in this tile's
    # tables), and where its row is in the table of visited rows (len(rows): none).
    row_of = ring_rows - rows[0]
    row_of = np.where((row_of >= 0) & (row_of < len(rows)), row_of, len(rows))
    statically = np.abs(ring_cols)[None] <= np.append(widths, -1)[row_of][:, None]
    far_mask = ring_mask | statically
    far_r, far_c, far_row = (np.broadcast_to(a, far_mask.shape)[far_mask] for a in
                             (ring_rows[:, None], ring_cols[None], row_of[:, None]))
    radius = index.far_radius if wide else index.radius
    inv_two_l2, inv64, log_far = _bound_terms(index, lengthscale, wide)
    log_tol = math.log(index.tolerance)
    n_ref = tf.cast(tf.shape(z_sorted)[0], tf.int64)
    # Points as one float64 each: a gather of scalars measured ~10% faster than of [2] rows.
    x_packed = tf.bitcast(x_sorted, tf.float64)

    def chunk(q, row0, col0):
        n = tf.shape(q)[0]
        q64 = tf.cast(q, tf.float64)
        # Per cell row, the columns whose cells come within the radius of this query: the
        # tables hold those of any query in its cell; trimmed, 11-12% fewer pairs. (Cells
        # left out are at >= radius, and the ring below counts every cell not visited.)
        r = row0[:, None] + rows[None]
        row_y = index.origin[1] + tf.cast(r, tf.float64) * cell
        gap_y = tf.maximum(tf.maximum(row_y - q64[:, 1:], q64[:, 1:] - row_y - cell), 0.0)
        half = tf.sqrt(tf.maximum(radius * radius - gap_y * gap_y, 0.0))
        def column(x):  # the cell column of x, clipped (far or NaN queries visit nothing)
            c = tf.clip_by_value(tf.floor((x - index.origin[0]) / cell), -1.0, n_cols)
            return tf.cast(c, tf.int64)
        lo = tf.maximum(tf.maximum(col0[:, None] - widths[None], 0), column(q64[:, :1] - half))
        hi = tf.minimum(tf.minimum(col0[:, None] + widths[None], n_cols - 1),
                        column(q64[:, :1] + half))
        valid, first, last = _row_ranges(cell_start, index, r, lo,
                                         tf.where(gap_y < radius, hi, lo - 1))
        counts = tf.reduce_sum(last - first, axis=1)
        ref = tf.ragged.range(tf.reshape(first, [-1]), tf.reshape(last, [-1])).flat_values
        # The query of each pair (one op; tf.repeat takes four, ~1.4x the time).
        query = tf.searchsorted(tf.cumsum(counts), tf.range(tf.reduce_sum(counts)),
                                side="right", out_type=tf.int64)  # int64: CSR indices
        diff = (tf.bitcast(tf.gather(x_packed, ref), tf.float32)
                - tf.bitcast(tf.gather(tf.bitcast(q, tf.float64), query), tf.float32))
        logits = -tf.reduce_sum(tf.square(diff), axis=1) * inv_two_l2
        has = counts > 0
        # Sorted segment ops (query ids ascend) are ~5x faster than unsorted ones; they
        # stop at the last query with a pair, so pad to n.
        short = [[0, tf.cast(n, tf.int64) - 1 - tf.concat([[-1], query[-1:]], 0)[-1]]]
        peak = tf.where(has, tf.pad(tf.math.segment_max(logits, query), short), -math.inf)
        p = tf.exp(logits - tf.gather(peak, query))
        mass = tf.pad(tf.math.segment_sum(p, query), short)
        weights = tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=tf.stack([query, ref], axis=1), values=p,
            dense_shape=tf.stack([tf.cast(n, tf.int64), n_ref]))
        numerator = tf.raw_ops.SparseMatrixMatMul(a=weights, b=z_sorted)
        z = tf.math.divide_no_nan(numerator, mass[:, None])
        log_visited = tf.cast(peak, tf.float64) + tf.math.log(tf.cast(mass, tf.float64))
        # The ring: each cell within far_radius this query did not visit, its count at its
        # distance from the query (float64: a bound, not an estimate).
        rr, cc = row0[:, None] + far_r[None], col0[:, None] + far_c[None]
        never = tf.fill([n, 1], tf.constant(1, tf.int64))  # an empty range: lo 1 > hi 0
        lo_far = tf.gather(tf.concat([tf.where(valid, lo, 1), never], 1), far_row, axis=1)
        hi_far = tf.gather(tf.concat([tf.where(valid, hi, 0), never - 1], 1), far_row, axis=1)
        ring_counts = _cell_counts(cell_start, index, rr, cc, ~((lo_far <= cc) & (cc <= hi_far)))
        log_ring = _log_ring_bound(q, rr, cc, ring_counts, index, inv64, log_far)
        ok = (mass > 0) & (log_ring - log_visited <= log_tol)
        return z, ok

    # Z-order of cells: queries close in X are close in the batch, in both directions, so
    # consecutive queries share most of their reference rows (~20% faster at M = 1,000,000
    # than row-major order, measured).
    _, row0, col0 = _tile_ids(x_query, index, 1)
    order = tf.argsort(_z_order(row0 - tf.reduce_min(row0), col0 - tf.reduce_min(col0)),
                       stable=True)
    ordered = [tf.gather(t, order) for t in (x_query, row0, col0)]
    n_chunks = (tf.shape(x_query)[0] + SPARSE_QUERIES - 1) // SPARSE_QUERIES
    return _per_group(n_chunks, lambda c: chunk(
        *(t[c * SPARSE_QUERIES:(c + 1) * SPARSE_QUERIES] for t in ordered)), order,
        tf.shape(z_sorted)[1])


def _z_order(row, col):
    """Morton code of non-negative cell coordinates below 2^16 (``[N]`` int64): the bits
    of ``row`` and ``col`` interleaved, so that sorting by it walks the grid in Z-order."""
    def spread(v):
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            v = tf.bitwise.bitwise_and(tf.bitwise.bitwise_or(v, tf.bitwise.left_shift(
                v, tf.constant(shift, tf.int64))), tf.constant(mask, tf.int64))
        return v
    return tf.bitwise.bitwise_or(spread(row), tf.bitwise.left_shift(spread(col),
                                                                    tf.constant(1, tf.int64)))


def _log_ring_bound(q, rows, cols, counts, index: GridIndex, inv_two_l2, log_far):
    """``log(sum_c n_c exp(-d(q, c)^2 / (2 l^2)) + exp(log_far))`` per query, ``[N]``: the
    bound of :class:`GridIndex` on the weight a query leaves out.

    ``rows``, ``cols``, ``counts``: cells and their counts, ``[N, C]`` or ``[1, C]`` (shared
    by all queries); ``d(q, c)`` is the distance from the query to the cell's rectangle. In
    float64: a bound, not an estimate. Empty cells (count 0) add nothing.
    """
    q64 = tf.cast(q, tf.float64)
    x0 = index.origin[0] + tf.cast(cols, tf.float64) * index.cell
    y0 = index.origin[1] + tf.cast(rows, tf.float64) * index.cell
    dx = tf.maximum(tf.maximum(x0 - q64[:, :1], q64[:, :1] - x0 - index.cell), 0.0)
    dy = tf.maximum(tf.maximum(y0 - q64[:, 1:], q64[:, 1:] - y0 - index.cell), 0.0)
    log_counts = tf.math.log(tf.cast(counts, tf.float64))  # -inf for an empty cell
    log_far = tf.fill([tf.shape(q)[0], 1], tf.cast(log_far, tf.float64))
    return tf.reduce_logsumexp(
        tf.concat([log_counts - (dx * dx + dy * dy) * inv_two_l2,
                   log_far], axis=1), axis=1)


def _bound_terms(index: GridIndex, lengthscale, wide: bool):
    """``(1 / 2l^2, the same in float64, log M - R^2 / 2l^2)``: the logit scale and the log of
    the bound's far term, ``R`` the far radius of the pass (``wide``: the wide pass's)."""
    inv_two_l2 = 0.5 / tf.square(tf.cast(lengthscale, tf.float32))
    inv64 = tf.cast(inv_two_l2, tf.float64)
    far = index.wide_far_radius if wide else index.far_radius
    return inv_two_l2, inv64, index.log_size - far ** 2 * inv64


def _row_ranges(cell_start, index: GridIndex, row, lo, hi):
    """``(valid, first, last)``, same shape as ``row``: cells ``lo..hi`` (columns of the grid)
    of cell row ``row`` as one range ``first:last`` of the sorted reference set (row-major
    cells); empty (``first == last``, ``valid`` False) off the grid or when ``lo > hi``."""
    valid = (row >= 0) & (row < index.n_rows) & (lo <= hi)
    base = tf.clip_by_value(row, 0, index.n_rows - 1) * index.n_cols
    first = tf.gather(cell_start, tf.where(valid, base + lo, 0))
    last = tf.where(valid, tf.gather(cell_start, tf.where(valid, base + hi + 1, 0)), first)
    return valid, first, last


def _cell_counts(cell_start, index: GridIndex, rows, cols, keep):
    """Points in cell ``(rows, cols)`` (broadcast together), 0 off the grid or where not
    ``keep``."""
    inside = (rows >= 0) & (rows < index.n_rows) & (cols >= 0) & (cols < index.n_cols) & keep
    cid = (tf.clip_by_value(rows, 0, index.n_rows - 1) * index.n_cols
           + tf.clip_by_value(cols, 0, index.n_cols - 1))
    return tf.where(inside, tf.gather(cell_start, cid + 1) - tf.gather(cell_start, cid), 0)


def _per_group(n_groups, body, order, z_dim, parallel_iterations=10):
    """``body(g) -> (z~ [n_g, Z], ok [n_g])`` for ``g < n_groups`` in a ``tf.while_loop``,
    concatenated and put back from ``order`` (the batch sorted by group) to the batch's."""
    def step(g, z_out, ok_out):
        z, ok = body(g)
        return g + 1, z_out.write(g, z), ok_out.write(g, ok)

    _, z_parts, ok_parts = tf.while_loop(
        lambda g, *_: g < n_groups, step,
        (tf.constant(0), tf.TensorArray(tf.float32, size=n_groups, infer_shape=False,
                                        element_shape=tf.TensorShape([None, None])),
         tf.TensorArray(tf.bool, size=n_groups, infer_shape=False,
                        element_shape=tf.TensorShape([None]))),
        parallel_iterations=parallel_iterations)
    inverse = tf.math.invert_permutation(order)
    z = tf.gather(tf.reshape(z_parts.concat(), [-1, z_dim]), inverse)
    ok = tf.gather(tf.reshape(ok_parts.concat(), [-1]), inverse)
    return z, ok
