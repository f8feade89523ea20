"""Decoder likelihoods (npvae_tf/model/likelihoods.py) against SciPy / NumPy references written
from their formulas."""

import numpy as np
import pytest
from scipy import stats

from npvae_tf.model.likelihoods import (MIN_VARIANCE, decoder_distribution, output_width)

RNG = np.random.default_rng(0)


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def test_bernoulli_is_the_cross_entropy_on_grayscale_values():
    logits = RNG.normal(size=(3, 5)).astype(np.float32)
    y = RNG.random((3, 5)).astype(np.float32)
    lam = sigmoid(logits.astype(np.float64))
    expected = np.sum(y * np.log(lam) + (1 - y) * np.log1p(-lam), axis=1)
    got = decoder_distribution("bernoulli", logits).log_prob(y).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def continuous_bernoulli_log_normaliser(lam):
    """log C(lambda), C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda); C(1/2) = 2 (the limit)."""
    lam = np.asarray(lam, np.float64)
    near = np.abs(lam - 0.5) < 1e-6
    safe = np.where(near, 0.25, lam)
    c = 2 * np.arctanh(1 - 2 * safe) / (1 - 2 * safe)
    return np.where(near, np.log(2.0), np.log(c))


@pytest.mark.parametrize("logit_scale", [3.0, 1e-3])  # 1e-3: lambda within 3e-4 of 0.5
def test_continuous_bernoulli_is_normalised_and_matches_its_formula(logit_scale):
    logits = (RNG.normal(size=(4, 6)) * logit_scale).astype(np.float32)
    y = RNG.random((4, 6)).astype(np.float32)
    lam = sigmoid(logits.astype(np.float64))
    expected = np.sum(continuous_bernoulli_log_normaliser(lam) + y * np.log(lam)
                      + (1 - y) * np.log1p(-lam), axis=1)
    got = decoder_distribution("continuous_bernoulli", logits).log_prob(y).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # The density integrates to 1 over [0, 1] (trapezoid rule, one dimension at a time).
    grid = np.linspace(0.0, 1.0, 2001, dtype=np.float32)
    one = decoder_distribution("continuous_bernoulli", logits[:1, :1].repeat(len(grid), 0))
    density = np.exp(one.log_prob(grid[:, None]).numpy())
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)


def test_the_continuous_bernoullis_mean_is_not_lambda():
    logits = np.array([[2.0, -1.0, 1e-4]], np.float32)
    lam = sigmoid(logits.astype(np.float64))[0]
    expected = lam / (2 * lam - 1) + 1 / (2 * np.arctanh(1 - 2 * lam))
    expected[2] = 0.5
    got = decoder_distribution("continuous_bernoulli", logits).mean().numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_gaussian_takes_mean_and_log_variance_with_a_floor():
    mean = RNG.normal(size=(3, 4))
    log_var = RNG.normal(size=(3, 4))
    log_var[0, 0] = -40.0  # a collapsing variance stops at the floor
    outputs = np.concatenate([mean, log_var], axis=1).astype(np.float32)
    y = RNG.normal(size=(3, 4)).astype(np.float32)
    scale = np.sqrt(np.exp(log_var) + MIN_VARIANCE)
    expected = stats.norm.logpdf(y, mean, scale).sum(axis=1)
    got = decoder_distribution("gaussian", outputs).log_prob(y).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_allclose(decoder_distribution("gaussian", outputs).mean().numpy(), mean,
                               rtol=1e-6)
    assert output_width("gaussian", 4) == 8 and output_width("bernoulli", 4) == 4


def test_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        decoder_distribution("poisson", np.zeros((1, 2), np.float32))
