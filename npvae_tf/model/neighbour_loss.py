"""The neighbour term: UMAP's cross-entropy between a k-NN graph and X, for the X encoder.

UMAP's low-dimensional similarity is ``q_ij = 1 / (1 + a d_ij^(2b))`` with ``d_ij = ||x_i - x_j||``
and ``(a, b)`` fitted to ``min_dist`` (``umap.umap_.find_ab_params``). With
``t_ij = log a + b log(d_ij^2 + eps)`` its cross-entropy terms are softplus functions:

    -log q_ij       = softplus(t_ij)        (attraction, along a graph edge)
    -log (1 - q_ik) = softplus(-t_ik)       (repulsion, from a negative sample)

``eps`` (1e-3, UMAP's own constant in its repulsive gradient) keeps coincident points finite.
Per head ``i`` of a training batch (the parametric form, Sainburg et al. 2021):

    neighbour_i = (deg_i / mean deg) * [softplus(t_ij) + sum_{k=1..K} softplus(-t_ik)]

with one tail ``j`` drawn from row i of the graph with probability ``w_ij / deg_i`` and ``K``
negatives drawn uniformly from the batch's heads and tails (never ``i`` itself); the draws come
from :class:`npvae_tf.data.neighbour_graph.GraphSampler`.
"""

from __future__ import annotations

import numpy as np

from npvae_tf.core.backend import tf

# UMAP's distance floor.
DISTANCE_EPS = 1e-3


def _log_distance_term(d2: tf.Tensor, a: float, b: float) -> tf.Tensor:
    """``t = log a + b log(d^2 + eps)``: ``q = 1 / (1 + e^t)``."""
    return np.log(a) + b * tf.math.log(d2 + DISTANCE_EPS)


def neighbour_cross_entropy(x_heads: tf.Tensor, x_tails: tf.Tensor, pool: tf.Tensor,
                            negatives: tf.Tensor, head_weight: tf.Tensor, a: float,
                            b: float) -> tf.Tensor:
    """Per-head UMAP cross-entropy ``[b]`` (see the module docstring).

    ``x_heads``, ``x_tails``: ``[b, D]``; ``pool``: ``[P, D]`` the points negatives index
    (the global batch's heads, then its tails); ``negatives``: ``[b, K]`` positions in it;
    ``head_weight``: ``[b]``.
    """
    d2_edge = tf.reduce_sum(tf.square(x_heads - x_tails), axis=-1)
    # A one-hot product, not tf.gather: its gradient is dense, which the gradient of a
    # replica all-gather (the pool under tf.distribute) needs; [b, K, 2B] is small.
    selection = tf.one_hot(negatives, tf.shape(pool)[0], dtype=pool.dtype)
    x_negatives = tf.einsum("bkp,pd->bkd", selection, pool)
    d2_negative = tf.reduce_sum(tf.square(x_heads[:, None, :] - x_negatives), axis=-1)
    attraction = tf.nn.softplus(_log_distance_term(d2_edge, a, b))
    repulsion = tf.reduce_sum(tf.nn.softplus(-_log_distance_term(d2_negative, a, b)), axis=-1)
    return head_weight * (attraction + repulsion)
