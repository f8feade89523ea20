"""UMAP's cross-entropy for the X encoder (npvae_tf/model/neighbour_loss.py) against NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from npvae_tf.data.neighbour_graph import umap_ab
from npvae_tf.model.neighbour_loss import DISTANCE_EPS, neighbour_cross_entropy


def numpy_cross_entropy(x_heads, x_tails, pool, negatives, head_weight, a, b):
    """Written from UMAP's formula: q(d) = 1 / (1 + a d^(2b)), d^2 floored by eps."""
    def q(d2):
        return 1.0 / (1.0 + a * (d2 + DISTANCE_EPS) ** b)

    d2_edge = ((x_heads - x_tails) ** 2).sum(-1)
    d2_neg = ((x_heads[:, None, :] - pool[negatives]) ** 2).sum(-1)
    return head_weight * (-np.log(q(d2_edge)) - np.log(1.0 - q(d2_neg)).sum(-1))


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    b, k, d = 6, 4, 2
    x_heads, x_tails = rng.normal(size=(b, d)), rng.normal(size=(b, d))
    pool = np.concatenate([x_heads, x_tails])
    negatives = rng.integers(0, 2 * b, (b, k))
    head_weight = rng.uniform(0.5, 2.0, b)
    a, bb = umap_ab(0.1)
    got = neighbour_cross_entropy(*(tf.constant(v, tf.float32) for v in
                                    (x_heads, x_tails, pool)), tf.constant(negatives),
                                  tf.constant(head_weight, tf.float32), a, bb)
    expected = numpy_cross_entropy(x_heads, x_tails, pool, negatives, head_weight, a, bb)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_umap_ab_is_umaps_fit():
    a, b = umap_ab(0.1)
    assert a == pytest.approx(1.577, rel=1e-2) and b == pytest.approx(0.895, rel=1e-2)
    assert umap_ab(0.5) != (a, b)


def test_cross_entropy_is_finite_for_identical_and_far_apart_points():
    a, b = umap_ab(0.1)
    x = tf.Variable([[0.0, 0.0], [0.0, 0.0], [1e4, -1e4]])
    with tf.GradientTape() as tape:
        # head 0: its tail coincides with it, a negative coincides with it, one is far away.
        loss = neighbour_cross_entropy(x[:1], x[1:2], x, tf.constant([[1, 2]]),
                                       tf.constant([1.0]), a, b)
    grad = tape.gradient(loss, x)
    assert np.all(np.isfinite(loss.numpy())) and np.all(np.isfinite(grad.numpy()))
    # Far from everything, a head pays (almost) nothing for its negatives.
    far = neighbour_cross_entropy(x[2:], x[2:], x, tf.constant([[0, 1]]), tf.constant([1.0]), a, b)
    attraction = np.log1p(a * DISTANCE_EPS ** b)
    assert float(far[0]) == pytest.approx(attraction, abs=1e-6)
