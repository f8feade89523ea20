"""Ancestral sampling in X, interpolation paths and pairs, grids."""

import numpy as np
import pytest

from npvae_tf.runs.x_density import (XDensity, fit_x_density, interpolation_pairs,
                                     interpolation_paths, occupied_grid)


def two_blobs(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal([-10.0, 0.0], 0.5, size=(3 * n // 4, 2))
    b = rng.normal([10.0, 5.0], 1.0, size=(n // 4, 2))
    return np.concatenate([a, b])


def test_density_samples_follow_the_training_points():
    density = XDensity.fit(two_blobs(), seed=0)
    x = density.sample(4000, seed=1)
    assert x.shape == (4000, 2) and x.dtype == np.float32
    left = x[:, 0] < 0
    assert left.mean() == pytest.approx(0.75, abs=0.03)        # the blobs' weights
    np.testing.assert_allclose(x[left].mean(0), [-10.0, 0.0], atol=0.1)
    np.testing.assert_allclose(x[~left].mean(0), [10.0, 5.0], atol=0.2)
    np.testing.assert_allclose(x[left].std(0), [0.5, 0.5], rtol=0.1)
    # Shuffled: any prefix is a fair sample, not one component.
    assert 0.6 < left[:100].mean() < 0.9


def test_sampling_is_seeded():
    density = XDensity.fit(two_blobs(), seed=0)
    np.testing.assert_array_equal(density.sample(50, seed=3), density.sample(50, seed=3))
    assert not np.array_equal(density.sample(50, seed=3), density.sample(50, seed=4))


def test_small_reference_sets_get_fewer_components():
    assert fit_x_density(two_blobs(60), seed=0).n_components == 6
    assert fit_x_density(two_blobs(400), seed=0).n_components == 20
    with pytest.raises(ValueError, match="need embeddings"):
        fit_x_density(np.zeros((1, 2)))


def test_interpolation_paths():
    a = np.array([[0.0, 0.0], [1.0, 1.0]])
    b = np.array([[4.0, 2.0], [1.0, -1.0]])
    paths = interpolation_paths(a, b, 5)
    assert paths.shape == (2, 5, 2)
    np.testing.assert_allclose(paths[:, 0], a)
    np.testing.assert_allclose(paths[:, -1], b)
    np.testing.assert_allclose(paths[0, 2], [2.0, 1.0])
    np.testing.assert_allclose(paths[1, 1], [1.0, 0.5])
    assert interpolation_paths(a[0], b[0], 3).shape == (3, 2)
    with pytest.raises(ValueError, match=">= 2 steps"):
        interpolation_paths(a, b, 1)


def test_interpolation_pairs_have_different_labels_and_depend_only_on_the_seed():
    labels = np.repeat(np.arange(10), 30)
    pairs = interpolation_pairs(labels, 50, seed=0)
    assert pairs.shape == (50, 2)
    assert np.all(labels[pairs[:, 0]] != labels[pairs[:, 1]])
    np.testing.assert_array_equal(pairs, interpolation_pairs(labels, 50, seed=0))
    assert not np.array_equal(pairs, interpolation_pairs(labels, 50, seed=1))
    with pytest.raises(ValueError, match="two classes"):
        interpolation_pairs(np.zeros(5), 1)


def test_occupied_grid_spans_the_percentile_box_top_row_first():
    x = np.random.default_rng(0).uniform([0, 10], [100, 20], size=(5000, 2))
    x[0] = [1e6, 1e6]                                           # an outlier is ignored
    grid, extent = occupied_grid(x, n=4, percentiles=(0.0, 99.0))
    assert grid.shape == (16, 2)
    assert extent[0] == pytest.approx(x[:, 0].min()) and extent[1] < 100.0
    assert extent[2] == pytest.approx(x[:, 1].min()) and extent[3] < 20.0
    np.testing.assert_allclose(grid[0], [extent[0], extent[3]], rtol=1e-6)     # top left
    np.testing.assert_allclose(grid[3], [extent[1], extent[3]], rtol=1e-6)     # top right
    np.testing.assert_allclose(grid[-1], [extent[1], extent[2]], rtol=1e-6)    # bottom right
    with pytest.raises(ValueError, match="2-D points"):
        occupied_grid(np.zeros((5, 3)))


def test_x_density_is_stored_loaded_and_sampled_like_the_fitted_mixture(tmp_path):
    from npvae_tf.runs.x_density import X_DENSITY_FILE, XDensity, x_density_for

    x = two_blobs()
    density = XDensity.fit(x, seed=0)
    fitted = fit_x_density(x, seed=0)
    np.testing.assert_allclose(density.means, fitted.means_)
    density.save(str(tmp_path))
    loaded = XDensity.load(str(tmp_path))
    np.testing.assert_array_equal(loaded.covariances, density.covariances)
    assert loaded.fit_seed == 0
    samples = loaded.sample(4000, seed=1)
    assert samples.dtype == np.float32 and samples.shape == (4000, 2)
    np.testing.assert_array_equal(samples, loaded.sample(4000, seed=1))
    left = samples[:, 0] < 0
    assert left.mean() == pytest.approx(0.75, abs=0.03)
    np.testing.assert_allclose(samples[left].mean(0), [-10.0, 0.0], atol=0.1)
    # The stored density is used, not a refit: a shifted one comes back shifted.
    shifted = XDensity(density.weights, density.means + 100.0, density.covariances, 0)
    shifted.save(str(tmp_path))
    np.testing.assert_allclose(x_density_for(str(tmp_path), x, 0).means, density.means + 100.0)
    # A run from before the density was stored gets the fit training would have stored.
    np.testing.assert_allclose(x_density_for(str(tmp_path / "older"), x, 0).means,
                               density.means)
    (tmp_path / X_DENSITY_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read the density over X"):
        XDensity.load(str(tmp_path))
