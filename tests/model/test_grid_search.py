"""The grid-indexed kernel (npvae_tf/model/grid_index.py, grid_search.py) against the exact sum."""

import math

import numpy as np
import pytest
import tensorflow as tf

from npvae_tf.model.kernel import SquaredExponentialKernel
from npvae_tf.model.grid_index import GridIndex
from npvae_tf.model.grid_search import indexed_predictive_mean


def numpy_exact(q, x, z, l):
    d2 = ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    logits = -d2 / (2 * l * l)
    w = np.exp(logits - logits.max(1, keepdims=True))
    return (w / w.sum(1, keepdims=True)) @ z.astype(np.float64)


def indexed(q, x, z, l, **kw):
    index = GridIndex(x, l)
    assert index.usable
    kernel = SquaredExponentialKernel(1.0, chunk_size=256)
    fn = tf.function(lambda q: indexed_predictive_mean(
        kernel, q, tf.constant(x[index.order]), tf.constant(z[index.order]), index, **kw),
        autograph=False)
    return fn(tf.constant(q, tf.float32)).numpy(), index


@pytest.mark.parametrize("tile", [1, 4, None])
def test_indexed_kernel_equals_the_exact_sum_far_queries_and_batch_one_included(tile):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 2)) * 15
    x = (centres[rng.integers(0, 6, 4000)] + rng.normal(size=(4000, 2)) * 2).astype(np.float32)
    x[:50] = x[50]  # identical points
    z = rng.normal(size=(4000, 5)).astype(np.float32)
    l = 0.6
    q = (x[rng.integers(0, 4000, 300)] + rng.normal(size=(300, 2))).astype(np.float32)
    q[:4] = [[500, 500], [-1e6, 3], [x[0, 0] + 30, x[0, 1]], x[0]]  # far away, and on a duplicate
    got, index = indexed(q, x, z, l, tile=tile)
    want = numpy_exact(q, x, z, l)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    one, _ = indexed(q[5:6], x, z, l, tile=tile)
    np.testing.assert_allclose(one, want[5:6], rtol=1e-5, atol=1e-5)
    # Far queries: the nearest point dominates (and it is the same result as the exact sum).
    nearest = np.argmin(((x - q[0]) ** 2).sum(1))
    np.testing.assert_allclose(got[0], z[nearest], atol=1e-4)


@pytest.mark.parametrize("tile", [1, 4, None])
def test_an_empty_batch_gives_an_empty_result(tile):
    x = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32) * 10
    got, _ = indexed(np.zeros((0, 2), np.float32), x, np.ones((500, 3), np.float32), 0.3,
                     tile=tile)
    assert got.shape == (0, 3)


def test_z_order_interleaves_the_bits_of_row_and_column():
    from npvae_tf.model.grid_search import _z_order

    rng = np.random.default_rng(0)
    row, col = rng.integers(0, 1 << 16, 200), rng.integers(0, 1 << 16, 200)
    want = [sum((((r >> b) & 1) << (2 * b)) | (((c >> b) & 1) << (2 * b + 1)) for b in range(16))
            for r, c in zip(row, col)]
    np.testing.assert_array_equal(_z_order(tf.constant(row), tf.constant(col)).numpy(), want)


def lone_queries_beside_a_cluster(seed=1, l=0.3):
    """``(x, q, l)``: 150 queries near the data, 50 anywhere, then 200 lone queries 6.5-7.5 l
    from a tight cluster of 20,000 points, each with one point of its own 2 l away: where
    the cluster falls in the ring, its count decides the bound."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, 2 * np.pi, 200)
    unit = np.stack([np.cos(angles), np.sin(angles)], 1)
    lone = unit * rng.uniform(6.5, 7.5, (200, 1)) * l + [60.0, 0.0]
    x = np.concatenate([rng.normal(size=(15000, 2)) * 10, rng.normal(size=(5000, 2)),
                        [60.0, 0.0] + rng.normal(size=(20000, 2)) * 0.01 * l,
                        lone + unit * 2 * l]).astype(np.float32)
    q = np.concatenate([x[:150] + rng.normal(size=(150, 2)) * 0.3,
                        rng.uniform(-40, 40, size=(50, 2)), lone]).astype(np.float32)
    return x, q, l


class NoExactSum(SquaredExponentialKernel):
    """A kernel whose exact sum gives NaN: a result without NaN never used it."""

    def predictive_mean(self, x_query, x_ref, z_ref, chunk_size=None, lengthscale=None):
        return tf.fill([tf.shape(x_query)[0], tf.shape(z_ref)[1]], math.nan)


def test_queries_the_ring_bound_does_not_clear_are_served_by_the_wide_pass():
    """The lone queries fail the ring bound at tile 1; the wide pass (everything within the
    far radius, and a ring beyond) serves them, equal to the exact sum, without the exact
    sum over M."""
    from npvae_tf.model.grid_search import _grid_pass

    x, q, l = lone_queries_beside_a_cluster()
    # And isolated queries: one point 3 l away, nothing else within 12 l (the wide pass's
    # own ring clears them; M exp(-R^2 / 2l^2) alone would not).
    alone = np.stack([np.linspace(-60, 60, 25), np.full(25, 80.0)], 1)
    x = np.concatenate([x, alone]).astype(np.float32)
    q = np.concatenate([q[200:], alone + [0.0, 3 * l]]).astype(np.float32)
    index = GridIndex(x, l)
    xs, cs = tf.constant(x[index.order]), tf.constant(index.cell_start)
    z = np.random.default_rng(3).normal(size=(len(x), 3)).astype(np.float32)
    zs = tf.constant(z[index.order])
    _, ok = _grid_pass(tf.constant(q), xs, zs, cs, index, l, tile=1)
    assert (~ok.numpy()).sum() >= 5
    got = indexed_predictive_mean(NoExactSum(1.0), tf.constant(q), xs, zs, index, tile=1)
    want = numpy_exact(q, x, z, l)
    assert np.abs(got.numpy() - want).max() <= 1e-5 * np.abs(want).max()


def test_the_bound_holds_for_every_query_it_passes():
    """For a lone query (tile 1): the weight of the points it does not visit, against the
    per-query bound of GridIndex (ring cells at their distance + M exp(-R^2 / 2l^2)),
    both from NumPy; every query the pass accepts leaves out < tolerance of its weight."""
    from npvae_tf.model.grid_search import _grid_pass

    x, q, l = lone_queries_beside_a_cluster()
    index = GridIndex(x, l)
    _, ok = _grid_pass(tf.constant(q), tf.constant(x[index.order]),
                       tf.constant(np.zeros((len(x), 1), np.float32)),
                       tf.constant(index.cell_start), index, l, tile=1)
    ok = ok.numpy()
    rows, widths, ring_rows, ring_cols, ring_mask = index.tile_tables(1)
    def cell_of(p):  # (row, col), clipped into the grid like the index's own cells
        rc = np.floor((p[..., ::-1] - index.origin[::-1]) / index.cell).astype(np.int64)
        return rc[..., 0], rc[..., 1]

    pr, pc = cell_of(x)
    pr, pc = np.minimum(pr, index.n_rows - 1), np.minimum(pc, index.n_cols - 1)
    d2 = ((q[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * l * l))

    def gap(r, c, p):  # distance from p to the rectangle of cell (r, c)
        lo = index.origin + np.stack([c, r], -1) * index.cell
        d = np.maximum(np.maximum(lo - p, p - lo - index.cell), 0)
        return np.sqrt((d * d).sum(-1))

    needs_ring = 0
    for i, (r0, c0) in enumerate(zip(*cell_of(q))):
        # Visited: a cell of the tables of the query's cell that comes within the radius.
        row = pr - r0 - rows[0]            # position in the table of visited rows
        in_rows = (row >= 0) & (row < len(rows))
        tables = in_rows & (np.abs(pc - c0) <= widths[np.clip(row, 0, len(rows) - 1)])
        visited = tables & (gap(pr, pc, q[i]) < index.radius)
        omitted = w[i, ~visited].sum()
        ring = 0.0   # every cell within the far radius (tables) the query did not visit
        for a, rr in enumerate(r0 + ring_rows):
            for b, cc in enumerate(c0 + ring_cols):
                g = rr - r0 - rows[0]
                in_tables = 0 <= g < len(rows) and abs(cc - c0) <= widths[g]
                far_cell = ring_mask[a, b] or in_tables
                if in_tables and gap(rr, cc, q[i]) < index.radius * (1 - 1e-9):
                    continue  # visited (at the boundary the code may go either way: kept)
                if far_cell and 0 <= rr < index.n_rows and 0 <= cc < index.n_cols:
                    n_c = index.cell_start[rr * index.n_cols + cc + 1] - index.cell_start[rr * index.n_cols + cc]
                    ring += n_c * np.exp(-gap(rr, cc, q[i]) ** 2 / (2 * l * l))
        far = len(x) * np.exp(-index.far_radius ** 2 / (2 * l * l))
        bound = ring + far
        needs_ring += omitted >= index.tolerance * w[i].sum() > far
        assert omitted <= bound * (1 + 1e-9)
        if ok[i]:
            assert omitted < index.tolerance * w[i].sum()
            assert bound <= index.tolerance * w[i, visited].sum() * (1 + 1e-6)
    assert ok[:150].mean() > 0.95 and not ok[150:].all()   # near the data it passes
    assert needs_ring >= 5   # queries only the ring's count keeps from passing


def test_the_index_is_not_used_where_it_cannot_help():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 2))
    assert not GridIndex(x, 5.0).usable                     # lengthscale as broad as the data
    assert not GridIndex(rng.normal(size=(1000, 3)), 0.01).usable   # X not 2-D
    assert GridIndex(x * 100, 0.5).usable
