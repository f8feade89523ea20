"""The decoder's likelihood families p(y|z): what the decoder's outputs parameterise.

Shapes: ``B`` batch, ``P`` values per example (pixels, or features). Each family is a
:class:`tfd.Independent` over the ``P`` values (batch ``[B]``, event ``[P]``):

* ``bernoulli``: ``p(y|z) = prod_p lambda_p^y_p (1 - lambda_p)^(1 - y_p)``, ``lambda =
  sigmoid(logits)``; the decoder outputs ``P`` logits. The paper's (and Kingma & Welling's)
  likelihood for MNIST. On grayscale values in [0, 1] it is not a normalised density (the
  nats are those of the cross-entropy).
* ``continuous_bernoulli``: the normalised density on [0, 1] of Loaiza-Ganem & Cunningham
  (2019), ``p(y) = C(lambda) lambda^y (1 - lambda)^(1 - y)`` with
  ``C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda)`` (``C(1/2) = 2``); ``P`` logits.
  Its mean is not ``lambda``: ``lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda))``.
* ``gaussian``: ``p(y|z) = prod_p N(y_p; mu_p, sigma_p^2)`` with the decoder's ``2P`` outputs
  ``(mu, log sigma^2)`` (Kingma & Welling's Frey Face decoder), for real-valued data
  (standardised per dimension by the data loader). The variance has a floor
  :data:`MIN_VARIANCE`: a dimension (nearly) constant in the training split would otherwise
  drive its variance to zero and a test value off that constant to thousands of nats.
"""

from __future__ import annotations

from npvae_tf.core.backend import tf, tfp
from npvae_tf.core.config import LIKELIHOODS

tfd = tfp.distributions

# Variance floor of the Gaussian decoder, in standardised units (a standard deviation of 0.1).
# Measured on scikit-learn's digits (umap-landmark, Z = 5, 30 epochs): test ELBO -12,750 nats
# with a floor of 1e-4 (pixels constant in the training split), -190 with this one.
MIN_VARIANCE = 1e-2


def output_width(likelihood: str, data_dim: int) -> int:
    """How many outputs per example the decoder needs for ``data_dim`` values."""
    return 2 * data_dim if likelihood == "gaussian" else data_dim


def decoder_distribution(likelihood: str, outputs: tf.Tensor) -> tfd.Distribution:
    """p(y|z) of the family, from the decoder's ``outputs`` ``[B, output_width]``.

    ``dtype=float32`` on the Bernoulli matters: with the default integer dtype ``log_prob``
    casts grayscale targets given as NumPy arrays to integers (0.7 -> 0).
    """
    if likelihood == "bernoulli":
        base = tfd.Bernoulli(logits=outputs, dtype=tf.float32)
    elif likelihood == "continuous_bernoulli":
        base = tfd.ContinuousBernoulli(logits=outputs)
    elif likelihood == "gaussian":
        loc, log_variance = tf.split(outputs, 2, axis=-1)
        base = tfd.Normal(loc=loc, scale=tf.sqrt(tf.exp(log_variance) + MIN_VARIANCE))
    else:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    return tfd.Independent(base, reinterpreted_batch_ndims=1)


def in_unit_interval(likelihood: str) -> bool:
    """Whether the family's data lie in [0, 1] (images), rather than anywhere (features)."""
    return likelihood != "gaussian"
