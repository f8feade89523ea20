"""Embedding and image metrics (npvae_tf/evaluation/metrics.py) against hand computations."""

import numpy as np
import pytest

from npvae_tf.evaluation.metrics import (active_units, class_silhouette, embedding_trustworthiness,
                                         frechet_distance, knn_accuracy, mean_confidence)


def test_active_units_counts_units_whose_mean_varies():
    rng = np.random.default_rng(0)
    z = np.stack([rng.normal(0, 1.0, 1000), rng.normal(0, 0.05, 1000),   # var 1, var 0.0025
                  np.full(1000, 3.0), rng.normal(0, 0.2, 1000)], axis=1)  # var 0, var 0.04
    count, variance = active_units(z)
    assert count == 2
    np.testing.assert_allclose(variance, [1.0, 0.0025, 0.0, 0.04], rtol=0.15, atol=1e-12)


# --- embeddings --------------------------------------------------------------------------------

def test_knn_accuracy_is_one_on_a_perfectly_separated_embedding():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [100, 0], [0, 100]], float)
    train_labels = np.repeat([0, 1, 2], 20)
    test_labels = np.repeat([0, 1, 2], 7)
    train = centres[train_labels] + rng.normal(size=(60, 2))
    test = centres[test_labels] + rng.normal(size=(21, 2))
    assert knn_accuracy(train, train_labels, test, test_labels) == {1: 1.0, 5: 1.0, 10: 1.0}


def test_knn_accuracy_hand_computed():
    train = np.array([[0.0], [1.0], [2.0]])
    train_labels = np.array([0, 0, 1])
    test = np.array([[1.9], [0.1]])
    # 1-NN: 1.9 -> 2 (class 1), 0.1 -> 0 (class 0); 3-NN: both vote class 0.
    assert knn_accuracy(train, train_labels, test, np.array([1, 0]), ks=(1, 3)) == {1: 1.0, 3: 0.5}


def test_trustworthiness_of_the_identity_embedding_is_one():
    x = np.random.default_rng(0).normal(size=(300, 2))
    assert embedding_trustworthiness(x, x, subset=None) == pytest.approx(1.0)
    assert embedding_trustworthiness(x, x, subset=100) == pytest.approx(1.0)
    high = np.random.default_rng(1).normal(size=(300, 10))
    shuffled = embedding_trustworthiness(high, x, subset=None)  # unrelated embedding
    assert shuffled < 0.7


def test_silhouette_hand_computed():
    # Classes {0, 1} and {10, 11}: for every point a = 1, b = 10.5 (or 9.5 and 10.5 averaged
    # the other way round): s(0) = 1 - 1/10.5, s(1) = 1 - 1/9.5, symmetric for class 1.
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    expected = np.mean([1 - 1 / 10.5, 1 - 1 / 9.5, 1 - 1 / 9.5, 1 - 1 / 10.5])
    assert class_silhouette(x, np.array([0, 0, 1, 1])) == pytest.approx(expected)


# --- samples -----------------------------------------------------------------------------------

def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    assert abs(frechet_distance(a, a)) < 1e-6


def test_frechet_distance_hand_computed_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 3))
    b = rng.normal(size=(3000, 3)) * [1.0, 2.0, 3.0] + [1.0, 0.0, -2.0]
    # Diagonal (here: nearly) covariances: sum_d (mu_a - mu_b)^2 + (s_a - s_b)^2.
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2 + (a.std(0, ddof=1) - b.std(0, ddof=1)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_frechet_distance_with_singular_covariances_is_finite():
    a = np.random.default_rng(0).normal(size=(100, 4))
    a[:, 2] = 0.0                                          # a dead feature
    value = frechet_distance(a, a + 1.0)                 # same covariance, every mean + 1
    assert value == pytest.approx(4.0, abs=1e-3)


def test_mean_confidence():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    assert mean_confidence(probs) == pytest.approx((0.9 + 0.7 + 0.5) / 3)

