"""Evaluation metrics computed from a trained model and a data split."""

from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from npvae_tf.data import make_dataset


def per_example_terms(model, images: np.ndarray, batch_size: int = 128) -> Dict[str, np.ndarray]:
    """Per-example loss terms in evaluation mode (no dropout), each ``[N]``.

    Keys: the model's ``loss_terms`` (``reconstruction`` at a posterior sample, ``kl``,
    ``loss`` and, for the npVAE, ``match`` within evaluation batches) plus
    ``reconstruction_at_mean`` (``-log p(y | E[z])``) and ``elbo``. Both reconstructions are
    kept: at large Z the mean decodes worse than a sample, because inactive units are N(0, 1)
    noise in training but exactly 0 at the mean.
    """

    @tf.function(reduce_retracing=True)
    def step(y):
        terms = model.loss_terms(y, training=False)
        q = model.approx_posterior(y)
        terms["reconstruction_at_mean"] = -model.decoder_likelihood(q.mean()).log_prob(y)
        return terms

    collected: Dict[str, list] = {}
    for batch in make_dataset(images, batch_size):
        for name, value in step(batch).items():
            collected.setdefault(name, []).append(value.numpy())
    terms = {name: np.concatenate(values) for name, values in collected.items()}
    terms["elbo"] = -(terms["reconstruction"] + terms["kl"])
    return terms


def elbo_summary(model, images: np.ndarray, batch_size: int = 128) -> Dict[str, float]:
    """Means over the split of :func:`per_example_terms` (nats per image)."""
    return {name: float(np.mean(v)) for name, v in per_example_terms(model, images, batch_size).items()}
