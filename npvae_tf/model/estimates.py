"""Evaluation metrics computed from a trained model and a data split.

Likelihood terms (nats per image): the ELBO, reconstruction at a posterior sample and at the
posterior mean, KL, the importance-weighted estimate (Burda et al. 2015), the npVAE's *X path*
and active units. 2-D embedding quality: k-NN accuracy, trustworthiness, class silhouette
(scikit-learn). Sample quality: Fréchet distance between classifier features, classifier
confidence.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from npvae_tf.core.backend import tf, tfp
from npvae_tf.data.pipeline import make_dataset

tfd = tfp.distributions

# scikit-learn and SciPy are imported inside the functions that use them: training imports
# this module too, and should not pay for them.


def per_example_terms(model, images: np.ndarray, batch_size: int = 128,
                      seed: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Per-example loss terms in evaluation mode (no dropout), each ``[N]``.

    Keys: the model's ``loss_terms`` (``reconstruction`` at a posterior sample, ``kl``,
    ``loss`` and, for the npVAE, ``match`` within evaluation batches) plus
    ``reconstruction_at_mean`` (``-log p(y | E[z])``) and ``elbo``. Both reconstructions are
    kept: at large Z the mean decodes worse than a sample, because inactive units are N(0, 1)
    noise in training but exactly 0 at the mean.
    """

    @tf.function(reduce_retracing=True)
    def step(y, seed_pair):
        terms = model.loss_terms(y, training=False, seed=seed_pair)
        q = model.approx_posterior(y)
        terms["reconstruction_at_mean"] = -model.decoder_likelihood(q.mean()).log_prob(y)
        return terms

    collected: Dict[str, list] = {}
    for b, batch in enumerate(make_dataset(images, batch_size)):
        # ``seed``: batch b draws with the stateless seed (seed, b), so the numbers do not
        # depend on the model's generator state (a resumed run gets the same); else the
        # model's own generator.
        seed_pair = None if seed is None else tf.constant([seed, b], tf.int32)
        for name, value in step(batch, seed_pair).items():
            collected.setdefault(name, []).append(value.numpy())
    terms = {name: np.concatenate(values) for name, values in collected.items()}
    terms["elbo"] = -(terms["reconstruction"] + terms["kl"])
    return terms


def elbo_summary(model, images: np.ndarray, batch_size: int = 128,
                 seed: Optional[int] = None) -> Dict[str, float]:
    """Means over the split of :func:`per_example_terms` (nats per image)."""
    terms = per_example_terms(model, images, batch_size, seed)
    return {name: float(np.mean(v)) for name, v in terms.items()}


# --- likelihoods on the test set ---------------------------------------------------------

def log_importance_weights(model, y, k: int, seed) -> Dict[str, tf.Tensor]:
    """Terms of ``log w_k = log p(y|z_k) + log p(z_k) - log q(z_k|y)``, ``z_k ~ q(z|y)``.

    All ``k`` draws for the whole batch go through the decoder as one ``[k * B, Z]`` tensor.

    Args:
      y: images ``[B, P]``.
      k: number of draws per image.
      seed: stateless seed ``[2]`` for the draws.

    Returns:
      ``log_likelihood`` (log p(y|z_k)), ``log_prior`` (log p(z_k)), ``log_posterior``
      (log q(z_k|y)) and ``log_weight`` (their combination), each ``[k, B]``.
    """
    y = tf.convert_to_tensor(y, tf.float32)
    q = model.approx_posterior(y)
    z = q.sample(k, seed=seed)                                    # [k, B, Z]
    flat = tf.reshape(z, [-1, tf.shape(z)[-1]])                   # [k * B, Z], k-major
    tiled = tf.tile(y, [k, 1])                                    # [k * B, P], same order
    log_likelihood = tf.reshape(model.decoder_likelihood(flat).log_prob(tiled), [k, -1])
    log_prior = model.prior.log_prob(z)
    log_posterior = q.log_prob(z)
    return {"log_likelihood": log_likelihood, "log_prior": log_prior,
            "log_posterior": log_posterior,
            "log_weight": log_likelihood + log_prior - log_posterior}


def importance_weighted_log_likelihood(log_weight: tf.Tensor) -> tf.Tensor:
    """``log p(y) ~= log (1/k) sum_k w_k`` (Burda et al. 2015) from log-weights ``[k, B]``.

    A lower bound on log p(y) that tightens as k grows; with k = 1 it is the one-sample
    ELBO estimate ``log p(y|z) + log p(z) - log q(z|y)`` for the same draw. Returns ``[B]``.
    """
    return tfp.math.reduce_logmeanexp(log_weight, axis=0)


def evaluation_terms(model, images: np.ndarray, k: int = 100, seed: int = 0,
                   batch_size: Optional[int] = None, reference=None) -> Dict[str, np.ndarray]:
    """Per-image likelihood terms on a split in evaluation mode, seeded, one pass.

    Batch ``b`` draws with the stateless seed ``(seed, b)``; ``batch_size`` defaults to
    ``min(1024, 8192 // k)`` images (at least 1), so about 8,192 rows (``k`` draws of every
    image) go through the decoder at once. Cost: ``k + 1`` decoder passes over the split.

    Returns, each ``[N]`` unless said otherwise (nats):
      ``elbo``: ``log p(y|z_1) - KL(q(z|y) || p(z))`` (analytic KL, z_1 the first draw),
      ``reconstruction_ll_sample``: ``log p(y|z_1)``,
      ``reconstruction_ll_mean``: ``log p(y|E[z])``, ``kl``,
      ``iw_ll``: the importance-weighted estimate with ``k`` draws,
      ``z_mean``: ``[N, Z]`` posterior means.
    With a ``reference`` set (npVAE only) also the *X path*, with the reference set's
    serving lengthscale (the learned one if it records none):
      ``x``: ``[N, D]`` embeddings ``x = f(y)``,
      ``x_path_ll``: ``log p_X(y | z~(x))`` with ``z~(x) = sum_j W(x, x_j) E[z_j]``,
      ``x_images``: ``[N, P]`` the images served at x: the VAE decoder's means at ``z~(x)``
      (sharp; the X path's own decoder, if any, scores ``x_path_ll`` only),
      ``effective_neighbours``: ``1 / sum_j W(x, x_j)^2``, the reference points that carry
      weight, with the serving lengthscale and (``effective_neighbours_learned``) the learned.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    batch_size = int(batch_size or max(1, min(1024, 8192 // k)))
    use_x = reference is not None
    if use_x:
        x_ref = tf.constant(reference.x, tf.float32)
        z_ref = tf.constant(reference.z_mean, tf.float32)

    @tf.function(reduce_retracing=True)
    def step(y, seed_pair):
        q = model.approx_posterior(y)
        z_mean = q.mean()
        weights = log_importance_weights(model, y, k, seed_pair)
        out = {
            "reconstruction_ll_sample": weights["log_likelihood"][0],
            "reconstruction_ll_mean": model.decoder_likelihood(z_mean).log_prob(y),
            "kl": tfd.kl_divergence(q, model.prior),
            "iw_ll": importance_weighted_log_likelihood(weights["log_weight"]),
            "z_mean": z_mean,
        }
        if use_x:
            x = model.embed(y)
            z_tilde = model.predictive_mean(x, x_ref, z_ref, lengthscale=reference.lengthscale)
            out.update(x=x, x_path_ll=model.x_path_likelihood(z_tilde).log_prob(y),
                       x_images=model.decode(z_tilde),
                       effective_neighbours=model.kernel.effective_neighbours(
                           x, x_ref, lengthscale=reference.lengthscale),
                       effective_neighbours_learned=model.kernel.effective_neighbours(x, x_ref))
        return out

    collected: Dict[str, list] = {}
    for b, start in enumerate(range(0, len(images), batch_size)):
        y = tf.constant(images[start:start + batch_size], tf.float32)
        for name, value in step(y, tf.constant([seed, b], tf.int32)).items():
            collected.setdefault(name, []).append(value.numpy())
    terms = {name: np.concatenate(values) for name, values in collected.items()}
    terms["elbo"] = terms["reconstruction_ll_sample"] - terms["kl"]
    return terms


def neighbour_average_log_likelihood(model, images: np.ndarray, test_z: np.ndarray,
                                     train_z: np.ndarray, ks: Sequence[int] = (1, 10, 100),
                                     batch_size: int = 500) -> Dict[int, float]:
    """How well an average of *other* images' codes can reconstruct an image, per k.

    ``{k: mean_i log p_X(y_i | mean of the k training E[z] nearest to E[z|y_i])}`` (nats),
    the neighbours found in Z itself (Euclidean: the exact streamed search of
    :func:`npvae_tf.model.placement.nearest_indices`, one float32 matrix product per block,
    about 10x faster than scikit-learn's float64 search at M = 55,000, Z = 500) and decoded
    the way the X path decodes (``model.x_path_likelihood``). The X path decodes a kernel
    average of training codes too, but with neighbours found in a 2-D X: this is what it
    would give if X kept Z's own neighbourhoods exactly, a reference point for how far a 2-D
    X could take it.
    """
    from npvae_tf.model.placement import nearest_indices, squared_norms

    k_max = int(max(ks))
    train_z = np.asarray(train_z, np.float32)
    reference, norms = tf.constant(train_z), tf.constant(squared_norms(train_z))
    search = tf.function(lambda q: nearest_indices(q, reference, norms, k_max),
                         reduce_retracing=True)

    @tf.function(reduce_retracing=True)
    def log_prob(z, y):
        return model.x_path_likelihood(z).log_prob(y)

    totals = {int(k): 0.0 for k in ks}
    for start in range(0, len(images), batch_size):
        end = start + batch_size
        nearest = search(tf.constant(test_z[start:end], tf.float32)).numpy()  # [b, k_max]
        y = tf.constant(images[start:end], tf.float32)
        for k in totals:
            z = train_z[nearest[:, :k]].mean(axis=1).astype(np.float32)  # [b, Z]
            totals[k] += float(tf.reduce_sum(log_prob(tf.constant(z), y)))
    return {k: total / len(images) for k, total in totals.items()}


# --- 2-D embedding quality -----------------------------------------------------------------
