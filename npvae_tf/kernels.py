"""The squared-exponential kernel that predicts each latent mean from its neighbours in X.

For locations ``x_i`` (rows of a ``[N, D]`` tensor) and a reference set ``x_j`` (``[M, D]``)

    W_ij = exp(-||x_i - x_j||^2 / (2 l^2)) / sum_k exp(-||x_i - x_k||^2 / (2 l^2))

i.e. a softmax over j of the logits ``-||x_i - x_j||^2 / (2 l^2)``. The kernel amplitude
cancels in the normalisation, so only the lengthscale ``l`` is a parameter (learned as
``log l``). Inside a mini-batch the diagonal is excluded (``W_ii = 0``): each point is
predicted from the others only. Writing the weights as a masked softmax keeps them finite
when all neighbours are far away (every unnormalised weight underflows to 0) or identical.

A location with no neighbour at all (a batch of one point) or none within floating-point
range (every squared distance overflows, e.g. ``|x| ~ 1e19``) has all-zero weights, so its
prediction is 0, the prior mean, rather than NaN.

The predictive mean ``z~_i = sum_j W_ij E[z_j]`` against a large reference set is computed
in chunks with a running log-sum-exp, so memory is ``O(N * chunk_size)`` rather than
``O(N * M)``.
"""

from __future__ import annotations

import math

from npvae_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow loads: none of its start-up lines (npvae_tf/quiet.py)
import keras
import tensorflow as tf


def squared_distances(x_query: tf.Tensor, x_ref: tf.Tensor) -> tf.Tensor:
    """``||x_query_i - x_ref_j||^2`` for ``[N, D]`` and ``[M, D]`` inputs, shape ``[N, M]``.

    Differences are formed explicitly (not via ``|a|^2 + |b|^2 - 2ab``): X is low-dimensional,
    and the expanded form loses all precision for points far from the origin. For small D
    they are summed one coordinate at a time, which never materialises an ``[N, M, D]``
    tensor (measured 2x faster for D = 2 against a large reference set).
    """
    dims = x_query.shape[-1]
    if dims is None or dims > 8:
        diff = x_query[:, None, :] - x_ref[None, :, :]
        return tf.reduce_sum(tf.square(diff), axis=-1)
    total = tf.square(x_query[:, :1] - tf.transpose(x_ref[:, :1]))
    for d in range(1, dims):
        total += tf.square(x_query[:, d:d + 1] - tf.transpose(x_ref[:, d:d + 1]))
    return total


def masked_softmax(logits: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis; a row whose logits are all -inf gets weights 0, not NaN.

    Such rows (no neighbour, or every distance overflowed) take the softmax of zeros and are
    then zeroed, so neither the values nor the gradients hold NaN; other rows are exactly
    ``tf.nn.softmax``.
    """
    has_neighbour = tf.reduce_any(tf.math.is_finite(logits), axis=-1, keepdims=True)
    safe = tf.where(has_neighbour, logits, tf.zeros_like(logits))
    return tf.where(has_neighbour, tf.nn.softmax(safe, axis=-1), tf.zeros_like(logits))


@keras.saving.register_keras_serializable(package="npvae_tf")
class SquaredExponentialKernel(keras.layers.Layer):
    """Row-normalised squared-exponential kernel weights with a learned lengthscale.

    Args:
      initial_lengthscale: starting value of ``l`` (> 0).
      chunk_size: reference points handled at once by :meth:`predictive_mean`.
    """

    def __init__(self, initial_lengthscale: float = 1.0, chunk_size: int = 8192, **kwargs):
        super().__init__(**kwargs)
        if initial_lengthscale <= 0:
            raise ValueError(f"initial_lengthscale must be > 0, got {initial_lengthscale}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.initial_lengthscale = float(initial_lengthscale)
        self.chunk_size = int(chunk_size)
        self.log_lengthscale = self.add_weight(
            name="log_lengthscale",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_lengthscale)),
            trainable=True,
        )

    @property
    def lengthscale(self) -> tf.Tensor:
        return tf.exp(self.log_lengthscale)

    def logits(self, x_query: tf.Tensor, x_ref: tf.Tensor, lengthscale=None) -> tf.Tensor:
        """Unnormalised log-weights ``-||x_i - x_j||^2 / (2 l^2)``, shape ``[N, M]``.

        ``lengthscale``: use this l instead of the learned one (e.g. a serving lengthscale).
        """
        if lengthscale is None:
            log_l = tf.cast(self.log_lengthscale, x_query.dtype)
        else:
            log_l = tf.math.log(tf.cast(lengthscale, x_query.dtype))
        inv_two_l2 = 0.5 * tf.exp(-2.0 * log_l)
        return -squared_distances(x_query, x_ref) * inv_two_l2

    def kernel_weights(self, x_query, x_ref=None):
        """Row-normalised weights ``W``, shape ``[N, M]``; rows sum to 1.

        With ``x_ref=None`` the reference set is ``x_query`` itself and the diagonal is
        excluded (``W_ii = 0``, needs ``N >= 2``); otherwise no point is excluded.
        """
        if x_ref is None:
            logits = self.logits(x_query, x_query)
            n = tf.shape(x_query)[0]
            # -inf on the diagonal: exp(-inf) = 0 exactly, and softmax subtracts the row
            # maximum, so rows of far-apart points stay finite.
            logits = tf.where(tf.eye(n, dtype=tf.bool), tf.constant(-math.inf, logits.dtype), logits)
        else:
            logits = self.logits(x_query, x_ref)
        return masked_softmax(logits)

    def call(self, x_query, z_ref, x_ref=None):
        """Predictive means ``z~ = W @ z_ref``, shape ``[N, Z]``.

        In-batch (``x_ref=None``): ``z_ref`` are the batch's own latent means ``[N, Z]``.
        Against a reference set, prefer :meth:`predictive_mean`, which is chunked.
        """
        return tf.matmul(self.kernel_weights(x_query, x_ref), z_ref)

    def predictive_mean(self, x_query, x_ref, z_ref, chunk_size=None, lengthscale=None):
        """``z~* = sum_j W(x*, x_j) z_ref_j`` over a reference set, in bounded memory.

        Args:
          x_query: ``[N, D]`` query locations.
          x_ref: ``[M, D]`` reference locations (e.g. the training embeddings).
          z_ref: ``[M, Z]`` reference latent means.
          chunk_size: reference points per chunk (default: the layer's ``chunk_size``).
          lengthscale: l for these weights (default: the learned one).

        Returns:
          ``[N, Z]`` predictive means, identical (up to rounding) to the unchunked
          ``softmax(logits) @ z_ref``.
        """
        numerator, normaliser, _ = self._chunked_sums(x_query, x_ref, z_ref, chunk_size,
                                                      lengthscale, squares=False)
        return tf.math.divide_no_nan(numerator, normaliser)  # no neighbour in range: 0

    def effective_neighbours(self, x_query, x_ref, chunk_size=None, lengthscale=None):
        """``1 / sum_j W(x*, x_j)^2`` per query, ``[N]``: how many reference points carry weight.

        It is M for uniform weights over M points and 1 when one point takes all the weight
        (the inverse Simpson index, or Kish's effective sample size of the weights).
        """
        x_query = tf.convert_to_tensor(x_query)
        no_values = tf.zeros([tf.shape(x_ref)[0], 0], x_query.dtype)
        _, normaliser, squares = self._chunked_sums(x_query, x_ref, no_values, chunk_size,
                                                    lengthscale, squares=True)
        return tf.math.divide_no_nan(tf.square(normaliser[:, 0]), squares[:, 0])

    def _chunked_sums(self, x_query, x_ref, z_ref, chunk_size, lengthscale, squares):
        """Running ``(sum_j p_j z_j, sum_j p_j, sum_j p_j^2)`` with ``p_j = exp(logit_j - max)``.

        One pass over the reference set in chunks; the running maximum is rescaled as it
        grows (flash-attention style), so nothing overflows and memory is O(N * chunk).
        """
        chunk = int(chunk_size or self.chunk_size)
        x_query = tf.convert_to_tensor(x_query)
        x_ref = tf.convert_to_tensor(x_ref, dtype=x_query.dtype)
        z_ref = tf.convert_to_tensor(z_ref, dtype=x_query.dtype)
        n_ref = tf.shape(x_ref)[0]
        n_chunks = (n_ref + chunk - 1) // chunk
        pad = n_chunks * chunk - n_ref
        # Padded reference points get logit -inf, i.e. weight exactly 0.
        x_chunks = tf.reshape(tf.pad(x_ref, [[0, pad], [0, 0]]), [n_chunks, chunk, tf.shape(x_ref)[1]])
        z_chunks = tf.reshape(tf.pad(z_ref, [[0, pad], [0, 0]]), [n_chunks, chunk, tf.shape(z_ref)[1]])
        valid = tf.reshape(tf.sequence_mask(n_ref, n_chunks * chunk), [n_chunks, chunk])

        n_query = tf.shape(x_query)[0]
        neg_inf = tf.constant(-math.inf, x_query.dtype)

        def accumulate(state, inputs):
            running_max, normaliser, numerator, sum_squares = state
            x_c, z_c, valid_c = inputs
            logits = tf.where(valid_c[None, :], self.logits(x_query, x_c, lengthscale), neg_inf)
            new_max = tf.maximum(running_max, tf.reduce_max(logits, axis=1, keepdims=True))
            # No finite logit so far: subtract 0, not -inf (exp(-inf - -inf) would be NaN).
            new_max = tf.where(tf.math.is_finite(new_max), new_max, tf.zeros_like(new_max))
            # Rescale what was accumulated under the old maximum (flash-attention style).
            rescale = tf.exp(running_max - new_max)
            p = tf.exp(logits - new_max)
            normaliser = normaliser * rescale + tf.reduce_sum(p, axis=1, keepdims=True)
            numerator = numerator * rescale + tf.matmul(p, z_c)
            if squares:
                sum_squares = (sum_squares * tf.square(rescale)
                               + tf.reduce_sum(tf.square(p), axis=1, keepdims=True))
            return new_max, normaliser, numerator, sum_squares

        init = (
            tf.fill([n_query, 1], neg_inf),
            tf.zeros([n_query, 1], x_query.dtype),
            tf.zeros([n_query, tf.shape(z_ref)[1]], x_query.dtype),
            tf.zeros([n_query, 1], x_query.dtype),
        )
        _, normaliser, numerator, sum_squares = tf.foldl(
            accumulate, (x_chunks, z_chunks, valid), initializer=init)
        return numerator, normaliser, sum_squares

    def get_config(self):
        config = super().get_config()
        config.update(initial_lengthscale=self.initial_lengthscale, chunk_size=self.chunk_size)
        return config


# --- the grid index: visit only the reference points that can carry weight -------------------
# Relative weight a query may leave out: sum of omitted weights / total weight.
INDEX_TOLERANCE = 1e-7


class GridIndex:
    """A uniform 2-D grid over reference locations, for :func:`indexed_predictive_mean`.

    Built once per reference set and lengthscale (NumPy). Reference points are sorted by cell
    (row-major: ``cell = row * n_cols + col``); ``order`` is that permutation and
    ``cell_start[c]:cell_start[c + 1]`` the points of cell ``c`` in sorted order.

    The bound. A query visits every cell that holds a point within distance ``< radius`` of
    it (cells of side ``cell = radius / k``; for row offset ``dr`` the columns ``|dc| <=
    width[dr]``, see :meth:`offsets`). Every point left out is at distance ``>= radius``, so
    its unnormalised weight is ``<= exp(-radius^2 / (2 l^2))`` and at most ``M`` of them are
    left out:

        omitted / total <= M exp(-radius^2 / (2 l^2)) / S_visited

    with ``S_visited = sum over visited points of exp(-d^2 / (2 l^2))``. The radius is
    ``radius^2 = 2 l^2 (log M - log tolerance - slack)``, so the bound is ``< tolerance``
    whenever ``log S_visited > slack``; every query is checked at run time and one whose
    visited mass is too small (sparse regions, far outside the grid, no candidate at all)
    is computed by the exact full sum instead. ``usable`` is False (use the exact kernel)
    when the grid would not help: the visited block would cover a large part of the data's
    bounding box.
    """

    def __init__(self, x, lengthscale: float, tolerance: float = INDEX_TOLERANCE,
                 slack: float = 2.0, k: int = 4, max_cells: int = 1 << 20):
        import numpy as np

        x = np.asarray(x, np.float64)
        m = len(x)
        self.size, self.lengthscale, self.tolerance, self.k = m, float(lengthscale), tolerance, k
        self.usable = x.ndim == 2 and x.shape[1] == 2 and m >= 2
        if not self.usable:
            return
        l2 = self.lengthscale ** 2
        self.log_size = math.log(m)
        self.radius = math.sqrt(max(2 * l2 * (self.log_size - math.log(tolerance) - slack),
                                    2 * l2))
        lo, hi = x.min(axis=0), x.max(axis=0)
        cell = self.radius / k
        extent = np.maximum(hi - lo, 1e-12)
        # Cap the number of cells: coarser cells cover more than the radius (still exact).
        cell = max(cell, math.sqrt(extent[0] * extent[1] / max_cells),
                   float(extent.max()) / 4096)
        self.cell = cell
        self.k_cells = int(math.ceil(self.radius / cell))
        self.origin = lo
        self.n_cols = int(extent[0] // cell) + 1
        self.n_rows = int(extent[1] // cell) + 1
        block = sum(2 * w + 1 for _, w in self.offsets()) * cell * cell
        self.usable = block < 0.25 * float(np.prod(extent + cell))
        cols = np.minimum(((x[:, 0] - lo[0]) // cell).astype(np.int64), self.n_cols - 1)
        rows = np.minimum(((x[:, 1] - lo[1]) // cell).astype(np.int64), self.n_rows - 1)
        cells = rows * self.n_cols + cols
        self.order = np.argsort(cells, kind="stable")
        self.cell_start = np.searchsorted(cells[self.order],
                                          np.arange(self.n_rows * self.n_cols + 1)).astype(np.int64)

    def offsets(self):
        """``(dr, width)``: row offsets visited and the column half-width of each.

        A cell ``(dr, dc)`` away holds points at distance ``>= (|dr|-1)+ cell`` vertically and
        ``(|dc|-1)+ cell`` horizontally from any query in the centre cell; it is visited
        unless that lower bound is ``>= radius``.
        """
        k, c, r = self.k_cells, self.cell, self.radius
        out = []
        for dr in range(-k, k + 1):
            v = max(abs(dr) - 1, 0) * c
            if v >= r:
                continue
            width = int(math.floor(math.sqrt(r * r - v * v) / c - 1e-12)) + 1
            out.append((dr, width))
        return out

    def arrays(self):
        """What the TensorFlow query needs: ``cell_start`` ``[cells + 1]`` int64 and the
        float64 parameters ``[origin_x, origin_y, cell, radius, log M]``."""
        import numpy as np

        return self.cell_start, np.array([self.origin[0], self.origin[1], self.cell,
                                          self.radius, self.log_size])

    def __repr__(self):
        if not self.usable:
            return f"GridIndex(M={self.size}, unusable: exact kernel)"
        return (f"GridIndex(M={self.size}, {self.n_rows}x{self.n_cols} cells of "
                f"{self.cell:.3g}, radius {self.radius:.3g} = "
                f"{self.radius / self.lengthscale:.2f} l)")


def indexed_predictive_mean(kernel, x_query, x_sorted, z_sorted, cell_start, params,
                            k_cells: int, n_rows: int, n_cols: int, lengthscale, tile: int = 4,
                            tolerance: float = INDEX_TOLERANCE, chunk_size=None):
    """``z~`` ``[N, Z]`` over a reference set sorted by :class:`GridIndex` cell.

    Plain TensorFlow ops (no XLA). ``x_sorted``, ``z_sorted``: the reference set in
    ``GridIndex.order`` (rows past the index's size are padding, never visited by the grid,
    weight 0 in the exact fall-back). ``params``, ``cell_start``: :meth:`GridIndex.arrays`;
    ``k_cells``, ``n_rows``, ``n_cols``: the index's (static).

    Queries are grouped by *tile* (``tile x tile`` cells); one loop step per occupied tile
    gathers the reference points of the tile's cells widened by ``k_cells`` on each side
    (every point within the radius of any query in the tile: contiguous row ranges in the
    sorted order) and computes the tile's queries as a dense softmax and one matmul, so
    nearby queries share the gathered ``E[z]`` rows. Queries whose visited mass does not
    guarantee the ``tolerance`` bound (see :class:`GridIndex`) are computed with
    ``kernel``'s exact chunked sum over every point.
    """
    x_query = tf.convert_to_tensor(x_query, tf.float32)
    params = tf.convert_to_tensor(params, tf.float64)
    cell_start = tf.convert_to_tensor(cell_start, tf.int64)
    lengthscale = tf.cast(lengthscale, tf.float32)
    n = tf.shape(x_query)[0]
    z_dim = tf.shape(z_sorted)[1]
    inv_two_l2 = 0.5 / tf.square(lengthscale)
    n_trows, n_tcols = -(-n_rows // tile), -(-n_cols // tile)
    # Tile coordinates, clipped (in float) so far queries cannot overflow: a clipped tile
    # lies beyond the grid by more than k_cells, so it visits nothing (exact fall-back).
    margin = float(k_cells // tile + 2)
    q64 = tf.cast(x_query, tf.float64)
    tcol = tf.cast(tf.clip_by_value(tf.floor((q64[:, 0] - params[0]) / (params[2] * tile)),
                                    -margin, n_tcols + margin), tf.int64)
    trow = tf.cast(tf.clip_by_value(tf.floor((q64[:, 1] - params[1]) / (params[2] * tile)),
                                    -margin, n_trows + margin), tf.int64)
    tile_id = (trow + int(margin)) * (n_tcols + 2 * int(margin) + 1) + tcol + int(margin)
    order = tf.argsort(tile_id, stable=True)
    sorted_tiles = tf.gather(tile_id, order)
    unique_tiles, group = tf.unique(sorted_tiles)
    n_groups = tf.shape(unique_tiles)[0]
    bounds = tf.concat([[0], tf.cumsum(tf.math.bincount(group, minlength=n_groups,
                                                        dtype=tf.int32))], 0)
    rows_offsets = tf.range(-k_cells, tile + k_cells, dtype=tf.int64)
    log_tol = math.log(tolerance)
    log_omitted = params[4] - tf.square(params[3]) * tf.cast(inv_two_l2, tf.float64)

    def step(g, z_out, ok_out):
        members = order[bounds[g]:bounds[g + 1]]
        q = tf.gather(x_query, members)
        tr, tc = tf.gather(trow, members[0]), tf.gather(tcol, members[0])
        r = tr * tile + rows_offsets
        lo = tf.maximum(tc * tile - k_cells, 0)
        hi = tf.minimum(tc * tile + tile - 1 + k_cells, n_cols - 1)
        valid = (r >= 0) & (r < n_rows) & (lo <= hi)
        base = tf.clip_by_value(r, 0, n_rows - 1) * n_cols
        first = tf.gather(cell_start, tf.where(valid, base + lo, 0))
        last = tf.where(valid, tf.gather(cell_start, tf.where(valid, base + hi + 1, 0)), first)
        idx = tf.ragged.range(first, last).flat_values
        logits = -squared_distances(q, tf.gather(x_sorted, idx)) * inv_two_l2  # [q, T]
        has = tf.size(idx) > 0
        peak = tf.where(has, tf.reduce_max(logits, axis=1), -math.inf)
        p = tf.exp(logits - tf.where(has, peak, 0.0)[:, None])
        mass = tf.reduce_sum(p, axis=1)
        z = tf.math.divide_no_nan(tf.matmul(p, tf.gather(z_sorted, idx)), mass[:, None])
        log_visited = tf.cast(peak, tf.float64) + tf.math.log(tf.cast(mass, tf.float64))
        ok = (mass > 0) & (log_omitted - log_visited <= log_tol)
        return g + 1, z_out.write(g, z), ok_out.write(g, ok)

    _, z_parts, ok_parts = tf.while_loop(
        lambda g, *_: g < n_groups, step,
        (tf.constant(0), tf.TensorArray(tf.float32, size=n_groups, infer_shape=False,
                                        element_shape=tf.TensorShape([None, None])),
         tf.TensorArray(tf.bool, size=n_groups, infer_shape=False,
                        element_shape=tf.TensorShape([None]))),
        parallel_iterations=1)
    inverse = tf.math.invert_permutation(order)
    z = tf.gather(tf.reshape(z_parts.concat(), [-1, z_dim]), inverse)
    ok = tf.gather(tf.reshape(ok_parts.concat(), [-1]), inverse)
    bad = tf.where(~ok)[:, 0]

    def exact():
        z_bad = kernel.predictive_mean(tf.gather(x_query, bad), x_sorted, z_sorted,
                                       chunk_size, lengthscale=lengthscale)
        return tf.tensor_scatter_nd_update(z, bad[:, None], z_bad)

    return tf.cond(tf.size(bad) > 0, exact, lambda: z)
