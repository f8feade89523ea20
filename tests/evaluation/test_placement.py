"""Placing a new image in X from the median location of its nearest training images."""

import numpy as np
import pytest

from npvae_tf.evaluation.placement import neighbour_placement


def test_placement_is_the_median_location_of_the_nearest_training_images():
    rng = np.random.default_rng(0)
    train = rng.random((50, 6)).astype(np.float32)
    x = rng.normal(size=(50, 2)).astype(np.float32)
    queries = rng.random((7, 6)).astype(np.float32)
    got = neighbour_placement(train, x, queries, k=5)
    distances = ((queries[:, None, :] - train[None]) ** 2).sum(-1)
    nearest = np.argsort(distances, axis=1)[:, :5]
    np.testing.assert_allclose(got, np.median(x[nearest], axis=1), rtol=1e-6)


def test_a_median_stays_in_a_cluster_where_a_mean_falls_between_two():
    # 3 neighbours at x = 0 and 2 at x = 10: the median is 0, the mean would be 4.
    train = np.array([[0.0], [0.1], [0.2], [0.3], [0.4]], np.float32)
    x = np.array([[0.0, 0], [0, 0], [0, 0], [10, 10], [10, 10]], np.float32)
    got = neighbour_placement(train, x, np.array([[0.0]], np.float32), k=5)
    np.testing.assert_array_equal(got, [[0.0, 0.0]])


def test_leaving_each_training_image_out_and_bad_k():
    train = np.arange(10, dtype=np.float32)[:, None]
    x = np.stack([np.arange(10), np.zeros(10)], 1).astype(np.float32)
    got = neighbour_placement(train, x, train, k=1, exclude_self=True)
    assert np.all(got[:, 0] != np.arange(10))
    with pytest.raises(ValueError, match="neighbours out of"):
        neighbour_placement(train, x, train, k=10, exclude_self=True)
    with pytest.raises(ValueError, match="training images for"):
        neighbour_placement(train, x[:5], train)
