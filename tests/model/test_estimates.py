"""The likelihood estimates (npvae_tf/model/estimates.py) against independent NumPy references."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from npvae_tf.model.estimates import (elbo_summary, importance_weighted_log_likelihood,
                                      log_importance_weights, per_example_terms, evaluation_terms,
                                      neighbour_average_log_likelihood)
from npvae_tf.runs.reference import ReferenceSet
from tests.helpers import images, numpy_mlp, numpy_weights, small_model, softplus

tfd = tfp.distributions


def numpy_log_weight_terms(model, y, eps):
    """log p(y|z), log p(z), log q(z|y) for z = mu + sigma * eps, written out in NumPy."""
    loc, raw = np.split(numpy_mlp(model.encoder, y), 2, axis=-1)
    scale = softplus(raw) + 1e-5
    z = loc + scale * eps                                          # [k, B, Z]
    logits = numpy_mlp(model.decoder, z.reshape(-1, z.shape[-1])).reshape(*z.shape[:2], -1)
    log_lik = (y * logits - softplus(logits)).sum(-1)
    log_norm = -0.5 * np.log(2 * np.pi)
    log_prior = (log_norm - 0.5 * z ** 2).sum(-1)
    log_post = (log_norm - np.log(scale) - 0.5 * eps ** 2).sum(-1)
    return log_lik, log_prior, log_post



@pytest.mark.parametrize("k", [1, 4])
def test_log_importance_weights_match_numpy(k):
    model = small_model("vae")
    y = images(6)
    seed = tf.constant([3, 7], tf.int32)
    # The draw itself is TFP's: recover eps from q's stateless draw for the same seed.
    q = model.approx_posterior(y)
    z = q.sample(k, seed=seed).numpy().astype(np.float64)
    eps = (z - q.mean().numpy()) / q.stddev().numpy()
    got = {name: v.numpy() for name, v in log_importance_weights(model, y, k, seed).items()}
    log_lik, log_prior, log_post = numpy_log_weight_terms(model, y.astype(np.float64), eps)
    assert got["log_weight"].shape == (k, 6)
    np.testing.assert_allclose(got["log_likelihood"], log_lik, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["log_prior"], log_prior, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["log_posterior"], log_post, rtol=1e-4, atol=1e-3)


def test_k1_importance_weighted_estimate_equals_the_elbo_estimate_for_the_same_draw():
    model = small_model("vae")
    y = images(6)
    seed = tf.constant([5, 1], tf.int32)
    iw = importance_weighted_log_likelihood(
        log_importance_weights(model, y, 1, seed)["log_weight"]).numpy()
    # The one-sample ELBO estimate log p(y|z) + log p(z) - log q(z|y) for the same z.
    q = model.approx_posterior(y)
    z = q.sample(seed=seed)
    elbo_hat = (model.decoder_likelihood(z).log_prob(y) + model.prior.log_prob(z)
                - q.log_prob(z)).numpy()
    np.testing.assert_allclose(iw, elbo_hat, rtol=1e-6, atol=1e-5)


def test_log_weights_average_to_the_elbo():
    # E_q[log p(z) - log q(z|y)] = -KL(q || p): the k = 1 estimate is unbiased for the ELBO.
    model = small_model("vae")
    y = images(4)
    w = log_importance_weights(model, y, 20000, tf.constant([0, 3], tf.int32))
    kl = tfd.kl_divergence(model.approx_posterior(y), model.prior).numpy()
    np.testing.assert_allclose(np.mean(w["log_prior"] - w["log_posterior"], axis=0), -kl,
                               atol=0.05)


def test_importance_weighted_estimate_is_log_mean_exp():
    log_w = np.log(np.array([[1.0, 4.0], [3.0, 2.0]]))          # [k=2, B=2]
    got = importance_weighted_log_likelihood(tf.constant(log_w)).numpy()
    np.testing.assert_allclose(got, np.log([2.0, 3.0]), rtol=1e-12)


def test_more_samples_tighten_the_bound():
    model = small_model("vae")
    y = images(32)
    elbo = evaluation_terms(model, y, k=1, seed=0)
    iw = evaluation_terms(model, y, k=64, seed=0)
    assert np.mean(iw["iw_ll"]) > np.mean(elbo["iw_ll"]) + 0.1
    assert np.mean(iw["iw_ll"]) > np.mean(elbo["elbo"]) + 0.1


def test_evaluation_terms_agree_with_per_example_terms():
    model = small_model("vae")
    y = images(20)
    got = evaluation_terms(model, y, k=3, seed=1, batch_size=7)
    ref = per_example_terms(model, y, batch_size=8)
    np.testing.assert_allclose(got["kl"], ref["kl"], rtol=1e-5)
    np.testing.assert_allclose(-got["reconstruction_ll_mean"], ref["reconstruction_at_mean"],
                               rtol=1e-5)
    np.testing.assert_allclose(got["elbo"], got["reconstruction_ll_sample"] - got["kl"])
    assert got["z_mean"].shape == (20, 5)
    # Seeded: the same call twice gives the same draws; another seed does not.
    again = evaluation_terms(model, y, k=3, seed=1, batch_size=7)
    np.testing.assert_array_equal(got["iw_ll"], again["iw_ll"])
    assert not np.array_equal(got["iw_ll"], evaluation_terms(model, y, k=3, seed=2)["iw_ll"])
    assert set(elbo_summary(model, y)) >= {"elbo", "kl"}  # the old summary still works


def test_x_path_matches_numpy():
    model = small_model("npvae")
    y = images(9, seed=1)
    rng = np.random.default_rng(0)
    reference = ReferenceSet(z_mean=rng.normal(size=(30, 5)).astype(np.float32),
                             labels=np.zeros(30, np.int64),
                             x=rng.normal(size=(30, 2)).astype(np.float32))
    got = evaluation_terms(model, y, k=2, seed=0, batch_size=4, reference=reference)
    x = numpy_mlp(model.x_encoder, y.astype(np.float64))
    w = numpy_weights(x, reference.x.astype(np.float64), float(model.kernel.lengthscale), False)
    logits = numpy_mlp(model.decoder, w @ reference.z_mean)
    expected = (y * logits - softplus(logits)).sum(-1)
    np.testing.assert_allclose(got["x"], x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["x_path_ll"], expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["x_images"], 1 / (1 + np.exp(-logits)), atol=1e-5)


@pytest.mark.parametrize("serving_lengthscale", [None, 0.2])
def test_x_path_uses_the_serving_lengthscale_and_the_x_path_decoder(serving_lengthscale):
    model = small_model("npvae", x_path_weight=1.0, x_path_decoder="separate")
    y = images(6, seed=2)
    rng = np.random.default_rng(1)
    reference = ReferenceSet(z_mean=rng.normal(size=(25, 5)).astype(np.float32),
                             labels=np.zeros(25, np.int64),
                             x=rng.normal(size=(25, 2)).astype(np.float32),
                             lengthscale=serving_lengthscale)
    got = evaluation_terms(model, y, k=1, seed=0, batch_size=4, reference=reference)
    x = numpy_mlp(model.x_encoder, y.astype(np.float64))
    l = serving_lengthscale or float(model.kernel.lengthscale)
    w = numpy_weights(x, reference.x.astype(np.float64), l, False)
    logits = numpy_mlp(model.x_path_decoder_net, w @ reference.z_mean)
    np.testing.assert_allclose(got["x_path_ll"], (y * logits - softplus(logits)).sum(-1),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["effective_neighbours"], 1 / (w ** 2).sum(1), rtol=1e-4)
    # The images served at x are the VAE decoder's (sharp), not the X path's own decoder's.
    sharp = 1 / (1 + np.exp(-numpy_mlp(model.decoder, w @ reference.z_mean)))
    np.testing.assert_allclose(got["x_images"], sharp, atol=1e-5)
    assert not np.allclose(got["x_images"], 1 / (1 + np.exp(-logits)), atol=1e-3)


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be >= 1"):
        evaluation_terms(small_model("vae"), images(4), k=0)


def test_neighbour_average_log_likelihood_matches_numpy():
    model = small_model("npvae", x_path_weight=1.0, x_path_decoder="separate")
    rng = np.random.default_rng(3)
    train_z = rng.normal(size=(40, 5)).astype(np.float32)
    test_z = rng.normal(size=(7, 5)).astype(np.float32)
    y = images(7, seed=6)
    got = neighbour_average_log_likelihood(model, y, test_z, train_z, ks=(1, 3), batch_size=3)
    distances = ((test_z[:, None, :] - train_z[None, :, :]) ** 2).sum(-1)
    for k in (1, 3):
        z = train_z[np.argsort(distances, axis=1)[:, :k]].mean(1)
        logits = numpy_mlp(model.x_path_decoder_net, z)
        expected = (y * logits - softplus(logits)).sum(-1).mean()
        assert got[k] == pytest.approx(expected, rel=1e-4)
