"""The squared-exponential kernel that predicts each latent mean from its neighbours in X.

For locations ``x_i`` (rows of a ``[N, D]`` tensor) and a reference set ``x_j`` (``[M, D]``)

    W_ij = exp(-||x_i - x_j||^2 / (2 l^2)) / sum_k exp(-||x_i - x_k||^2 / (2 l^2))

i.e. a softmax over j of the logits ``-||x_i - x_j||^2 / (2 l^2)``. The kernel amplitude
cancels in the normalisation, so only the lengthscale ``l`` is a parameter (learned as
``log l``). Inside a mini-batch the diagonal is excluded (``W_ii = 0``): each point is
predicted from the others only. Writing the weights as a masked softmax keeps them finite
when all neighbours are far away (every unnormalised weight underflows to 0) or identical.

A location with no neighbour at all (a batch of one point) or none within floating-point
range (every squared distance overflows, e.g. ``|x| ~ 1e19``) has all-zero weights, so its
prediction is 0, the prior mean, rather than NaN.

The predictive mean ``z~_i = sum_j W_ij E[z_j]`` against a large reference set is computed
in chunks with a running log-sum-exp, so memory is ``O(N * chunk_size)`` rather than
``O(N * M)``.
"""

from __future__ import annotations

import math

from npvae_tf.core.backend import keras, tf

def squared_distances(x_query: tf.Tensor, x_ref: tf.Tensor) -> tf.Tensor:
    """``||x_query_i - x_ref_j||^2`` for ``[N, D]`` and ``[M, D]`` inputs, shape ``[N, M]``.

    Differences are formed explicitly (not via ``|a|^2 + |b|^2 - 2ab``): X is low-dimensional,
    and the expanded form loses all precision for points far from the origin. For small D
    they are summed one coordinate at a time, which never materialises an ``[N, M, D]``
    tensor (measured 2x faster for D = 2 against a large reference set).
    """
    dims = x_query.shape[-1]
    if dims is None or dims > 8:
        diff = x_query[:, None, :] - x_ref[None, :, :]
        return tf.reduce_sum(tf.square(diff), axis=-1)
    total = tf.square(x_query[:, :1] - tf.transpose(x_ref[:, :1]))
    for d in range(1, dims):
        total += tf.square(x_query[:, d:d + 1] - tf.transpose(x_ref[:, d:d + 1]))
    return total


def masked_softmax(logits: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis; a row whose logits are all -inf gets weights 0, not NaN.

    Such rows (no neighbour, or every distance overflowed) take the softmax of zeros and are
    then zeroed, so neither the values nor the gradients hold NaN; other rows are exactly
    ``tf.nn.softmax``.
    """
    has_neighbour = tf.reduce_any(tf.math.is_finite(logits), axis=-1, keepdims=True)
    safe = tf.where(has_neighbour, logits, tf.zeros_like(logits))
    return tf.where(has_neighbour, tf.nn.softmax(safe, axis=-1), tf.zeros_like(logits))


@keras.saving.register_keras_serializable(package="npvae_tf")
class SquaredExponentialKernel(keras.layers.Layer):
    """Row-normalised squared-exponential kernel weights with a learned lengthscale.

    Args:
      initial_lengthscale: starting value of ``l`` (> 0).
      chunk_size: reference points handled at once by :meth:`predictive_mean`.
    """

    def __init__(self, initial_lengthscale: float = 1.0, chunk_size: int = 8192, **kwargs):
        super().__init__(**kwargs)
        if initial_lengthscale <= 0:
            raise ValueError(f"initial_lengthscale must be > 0, got {initial_lengthscale}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.initial_lengthscale = float(initial_lengthscale)
        self.chunk_size = int(chunk_size)
        self.log_lengthscale = self.add_weight(
            name="log_lengthscale",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial_lengthscale)),
            trainable=True,
        )

    @property
    def lengthscale(self) -> tf.Tensor:
        return tf.exp(self.log_lengthscale)

    def logits(self, x_query: tf.Tensor, x_ref: tf.Tensor, lengthscale=None) -> tf.Tensor:
        """Unnormalised log-weights ``-||x_i - x_j||^2 / (2 l^2)``, shape ``[N, M]``.

        ``lengthscale``: use this l instead of the learned one (e.g. a serving lengthscale).
        """
        if lengthscale is None:
            log_l = tf.cast(self.log_lengthscale, x_query.dtype)
        else:
            log_l = tf.math.log(tf.cast(lengthscale, x_query.dtype))
        inv_two_l2 = 0.5 * tf.exp(-2.0 * log_l)
        return -squared_distances(x_query, x_ref) * inv_two_l2

    def kernel_weights(self, x_query, x_ref=None, exclude=None):
        """Row-normalised weights ``W``, shape ``[N, M]``; rows sum to 1.

        With ``x_ref=None`` the reference set is ``x_query`` itself and the diagonal is
        excluded (``W_ii = 0``, needs ``N >= 2``). ``exclude``: a ``[N, M]`` boolean mask of
        other pairs to give weight 0 (the model's in-batch kernel under ``tf.distribute``
        excludes each replica's own rows of the gathered batch).
        """
        if x_ref is None:
            x_ref = x_query
            exclude = tf.eye(tf.shape(x_query)[0], dtype=tf.bool)
        logits = self.logits(x_query, x_ref)
        if exclude is not None:
            # -inf: exp(-inf) = 0 exactly, and softmax subtracts the row maximum, so rows of
            # far-apart points stay finite.
            logits = tf.where(exclude, tf.constant(-math.inf, logits.dtype), logits)
        return masked_softmax(logits)

    def call(self, x_query, z_ref, x_ref=None, exclude=None):
        """Predictive means ``z~ = W @ z_ref``, shape ``[N, Z]`` (the paper's
        ``z~_i = sum_j W_ij E[z_j]``).

        In-batch (``x_ref=None``): ``z_ref`` are the batch's own latent means ``[N, Z]``.
        Against a reference set, prefer :meth:`predictive_mean`, which is chunked.
        """
        return tf.matmul(self.kernel_weights(x_query, x_ref, exclude), z_ref)

    def predictive_mean(self, x_query, x_ref, z_ref, chunk_size=None, lengthscale=None):
        """``z~* = sum_j W(x*, x_j) z_ref_j`` over a reference set, in bounded memory.

        Args:
          x_query: ``[N, D]`` query locations.
          x_ref: ``[M, D]`` reference locations (e.g. the training embeddings).
          z_ref: ``[M, Z]`` reference latent means.
          chunk_size: reference points per chunk (default: the layer's ``chunk_size``).
          lengthscale: l for these weights (default: the learned one).

        Returns:
          ``[N, Z]`` predictive means, identical (up to rounding) to the unchunked
          ``softmax(logits) @ z_ref``.
        """
        numerator, normaliser, _ = self._chunked_sums(x_query, x_ref, z_ref, chunk_size,
                                                      lengthscale, squares=False)
        return tf.math.divide_no_nan(numerator, normaliser)  # no neighbour in range: 0

    def effective_neighbours(self, x_query, x_ref, chunk_size=None, lengthscale=None):
        """``1 / sum_j W(x*, x_j)^2`` per query, ``[N]``: how many reference points carry weight.

        It is M for uniform weights over M points and 1 when one point takes all the weight
        (the inverse Simpson index, or Kish's effective sample size of the weights).
        """
        x_query = tf.convert_to_tensor(x_query)
        no_values = tf.zeros([tf.shape(x_ref)[0], 0], x_query.dtype)
        _, normaliser, squares = self._chunked_sums(x_query, x_ref, no_values, chunk_size,
                                                    lengthscale, squares=True)
        return tf.math.divide_no_nan(tf.square(normaliser[:, 0]), squares[:, 0])

    def _chunked_sums(self, x_query, x_ref, z_ref, chunk_size, lengthscale, squares):
        """Running ``(sum_j p_j z_j, sum_j p_j, sum_j p_j^2)`` with ``p_j = exp(logit_j - max)``.

        One pass over the reference set in chunks; the running maximum is rescaled as it
        grows (flash-attention style), so nothing overflows and memory is O(N * chunk).
        """
        chunk = int(chunk_size or self.chunk_size)
        x_query = tf.convert_to_tensor(x_query)
        x_ref = tf.convert_to_tensor(x_ref, dtype=x_query.dtype)
        z_ref = tf.convert_to_tensor(z_ref, dtype=x_query.dtype)
        n_ref = tf.shape(x_ref)[0]
        n_chunks = (n_ref + chunk - 1) // chunk
        pad = n_chunks * chunk - n_ref
        # Padded reference points get logit -inf, i.e. weight exactly 0.
        x_chunks = tf.reshape(tf.pad(x_ref, [[0, pad], [0, 0]]), [n_chunks, chunk, tf.shape(x_ref)[1]])
        z_chunks = tf.reshape(tf.pad(z_ref, [[0, pad], [0, 0]]), [n_chunks, chunk, tf.shape(z_ref)[1]])
        valid = tf.reshape(tf.sequence_mask(n_ref, n_chunks * chunk), [n_chunks, chunk])

        n_query = tf.shape(x_query)[0]
        neg_inf = tf.constant(-math.inf, x_query.dtype)

        def accumulate(state, inputs):
            running_max, normaliser, numerator, sum_squares = state
            x_c, z_c, valid_c = inputs
            logits = tf.where(valid_c[None, :], self.logits(x_query, x_c, lengthscale), neg_inf)
            new_max = tf.maximum(running_max, tf.reduce_max(logits, axis=1, keepdims=True))
            # No finite logit so far: subtract 0, not -inf (exp(-inf - -inf) would be NaN).
            new_max = tf.where(tf.math.is_finite(new_max), new_max, tf.zeros_like(new_max))
            # Rescale what was accumulated under the old maximum (flash-attention style).
            rescale = tf.exp(running_max - new_max)
            p = tf.exp(logits - new_max)
            normaliser = normaliser * rescale + tf.reduce_sum(p, axis=1, keepdims=True)
            numerator = numerator * rescale + tf.matmul(p, z_c)
            if squares:
                sum_squares = (sum_squares * tf.square(rescale)
                               + tf.reduce_sum(tf.square(p), axis=1, keepdims=True))
            return new_max, normaliser, numerator, sum_squares

        init = (
            tf.fill([n_query, 1], neg_inf),
            tf.zeros([n_query, 1], x_query.dtype),
            tf.zeros([n_query, tf.shape(z_ref)[1]], x_query.dtype),
            tf.zeros([n_query, 1], x_query.dtype),
        )
        _, normaliser, numerator, sum_squares = tf.foldl(
            accumulate, (x_chunks, z_chunks, valid), initializer=init)
        return numerator, normaliser, sum_squares

    def get_config(self):
        config = super().get_config()
        config.update(initial_lengthscale=self.initial_lengthscale, chunk_size=self.chunk_size)
        return config

