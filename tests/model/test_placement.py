"""Placing a new example in X from the median location of its nearest training examples:
the streamed TensorFlow search against NumPy and scikit-learn."""

import numpy as np
import pytest

from npvae_tf.core.backend import tf
from npvae_tf.model.placement import (nearest_indices, neighbour_placement, place,
                                      squared_norms)


def numpy_placement(train, x, queries, k):
    """From the definition: the per-coordinate median of the k nearest locations (float64)."""
    d = ((queries[:, None, :].astype(np.float64) - train[None].astype(np.float64)) ** 2).sum(-1)
    return np.median(x[np.argsort(d, axis=1, kind="stable")[:, :k]], axis=1)


@pytest.mark.parametrize("k", [5, 4])  # odd: the middle value; even: the mean of two
def test_placement_is_the_median_location_of_the_nearest_training_examples(k):
    rng = np.random.default_rng(0)
    train = rng.random((50, 6)).astype(np.float32)
    x = rng.normal(size=(50, 2)).astype(np.float32)
    queries = rng.random((7, 6)).astype(np.float32)
    np.testing.assert_allclose(place(train, x, queries, k=k),
                               numpy_placement(train, x, queries, k), rtol=1e-6)


def test_blocks_of_the_reference_set_do_not_change_the_neighbours():
    # 103 reference examples in blocks of 10 (the last one short) against one block.
    rng = np.random.default_rng(1)
    train = rng.random((103, 9)).astype(np.float32)
    queries = rng.random((11, 9)).astype(np.float32)
    norms = tf.constant(squared_norms(train))
    whole = nearest_indices(queries, tf.constant(train), norms, 7, block=4096).numpy()
    blocked = nearest_indices(queries, tf.constant(train), norms, 7, block=10).numpy()
    np.testing.assert_array_equal(whole, blocked)
    d = ((queries[:, None] - train[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(whole, np.argsort(d, axis=1, kind="stable")[:, :7])


def test_bytes_stored_as_uint8_place_as_their_float_values():
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (200, 16), dtype=np.uint8)
    train = raw.astype(np.float32) / 255
    x = rng.normal(size=(200, 2)).astype(np.float32)
    queries = rng.random((9, 16)).astype(np.float32)
    got = neighbour_placement(queries, tf.constant(raw), tf.constant(squared_norms(raw, 1 / 255)),
                              tf.constant(x), 15, scale=1 / 255, block=64).numpy()
    np.testing.assert_allclose(got, numpy_placement(train, x, queries, 15), rtol=1e-6)


def test_mnist_sized_pixels_agree_with_scikit_learn():
    # Pixel vectors of MNIST's size: float32 distances against scikit-learn's exact search.
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(3)
    train = (rng.random((2000, 784)) < 0.2).astype(np.float32) * rng.random((2000, 784),
                                                                            np.float32)
    x = rng.normal(size=(2000, 2)).astype(np.float32)
    queries = train[:40] + 0.05 * rng.random((40, 784), np.float32)
    _, index = NearestNeighbors(n_neighbors=15, algorithm="brute").fit(train).kneighbors(queries)
    np.testing.assert_allclose(place(train, x, queries), np.median(x[index], axis=1), rtol=1e-6)


def test_a_median_stays_in_a_cluster_where_a_mean_falls_between_two():
    # 3 neighbours at x = 0 and 2 at x = 10: the median is 0, the mean would be 4.
    train = np.array([[0.0], [0.1], [0.2], [0.3], [0.4]], np.float32)
    x = np.array([[0.0, 0], [0, 0], [0, 0], [10, 10], [10, 10]], np.float32)
    np.testing.assert_array_equal(place(train, x, np.array([[0.0]], np.float32), k=5),
                                  [[0.0, 0.0]])


def test_empty_queries_and_bad_k():
    train = np.arange(10, dtype=np.float32)[:, None]
    x = np.stack([np.arange(10), np.zeros(10)], 1).astype(np.float32)
    assert place(train, x, np.zeros((0, 1), np.float32), k=3).shape == (0, 2)
    with pytest.raises(ValueError, match="neighbours out of"):
        place(train, x, train, k=11)
    with pytest.raises(ValueError, match="training images for"):
        place(train, x[:5], train)
