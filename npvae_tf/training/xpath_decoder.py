"""An X-path decoder of its own, fitted after training on leave-one-out kernel averages.

For the neighbour (``umap-own``) scheme: X and the VAE are trained as in ``umap``; then, with
``x_j``, ``E[z_j]`` of the training set held, each training image ``y_i`` gets the kernel
average of the *other* training codes at the serving lengthscale ``l``,

    z~_i = sum_{j != i} W_ij E[z_j],   W_ij ∝ exp(-||x_i - x_j||^2 / (2 l^2)),  sum_j W_ij = 1

which is what a new image's location is decoded from after training (there, over all M
reference points). The X path's own decoder ``p_X(y | z~)`` is then fitted to
``(z~_i, y_i)`` by maximum likelihood (Bernoulli on logits, Adam, mini-batches of the
run's size, ``x_path_decoder_epochs`` passes in an order drawn from the stream
``x_path_decoder/order``). The in-batch X-path term cannot teach this: inside a batch of
128 an image's nearest other points are far, so its z~ is a broad average.

Cost: ``2 M^2 (Z + 3)`` flops for the averages (about 3 TFLOP at M = 55,000, Z = 500) and
``x_path_decoder_epochs`` decoder passes over M images.
"""

from __future__ import annotations

import time
from typing import Callable


from npvae_tf.core.backend import keras
import numpy as np
from npvae_tf.core.backend import tf

from npvae_tf.model.kernel import masked_softmax, squared_distances
from npvae_tf.core.seeds import stream_seed


def leave_one_out_means(x: np.ndarray, z_mean: np.ndarray, lengthscale: float,
                        batch_size: int = 512) -> np.ndarray:
    """``z~_i = sum_{j != i} W_ij E[z_j]`` over the set itself, ``[M, Z]`` (exact, chunked by
    queries; ``W_ii = 0``)."""
    x_all = tf.constant(x, tf.float32)
    z_all = tf.constant(z_mean, tf.float32)
    inv_two_l2 = tf.constant(0.5 / float(lengthscale) ** 2, tf.float32)

    @tf.function(reduce_retracing=True)
    def step(start, x_query):
        logits = -squared_distances(x_query, x_all) * inv_two_l2             # [b, M]
        rows = start + tf.range(tf.shape(x_query)[0])
        own = tf.equal(rows[:, None], tf.range(tf.shape(x_all)[0])[None, :])
        logits = tf.where(own, tf.constant(-np.inf, tf.float32), logits)
        return tf.matmul(masked_softmax(logits), z_all)

    return np.concatenate([step(tf.constant(i), x_all[i:i + batch_size]).numpy()
                           for i in range(0, len(x), batch_size)])


def fit_x_path_decoder(model, images: np.ndarray, x: np.ndarray, z_mean: np.ndarray,
                       lengthscale: float, epochs: int, batch_size: int, seed: int,
                       learning_rate: float = 1e-3,
                       log: Callable[[str], None] = print) -> float:
    """Fits ``model.x_path_decoder_net`` (the X path's own decoder) as the module says.

    Returns the final epoch's mean ``-log p_X(y | z~)`` (nats per image) on the training set.
    """
    decoder = model.x_path_decoder_net
    if decoder is None:
        raise ValueError("the model has no X-path decoder of its own to fit")
    started = time.time()
    log(f"X-path decoder: leave-one-out kernel averages of {len(x):,} training codes "
        f"(l = {lengthscale:.4g}) ...")
    targets = leave_one_out_means(x, z_mean, lengthscale)
    log(f"X-path decoder: averages in {time.time() - started:.0f} s; fitting "
        f"{epochs} epochs ...")
    optimizer = keras.optimizers.Adam(learning_rate)
    images_t = tf.constant(np.asarray(images, np.float32))
    targets_t = tf.constant(targets, tf.float32)

    @tf.function(reduce_retracing=True)
    def step(idx):
        y, z_tilde = tf.gather(images_t, idx), tf.gather(targets_t, idx)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.x_path_likelihood(z_tilde, training=True).log_prob(y))
        grads = tape.gradient(loss, decoder.trainable_variables)
        optimizer.apply_gradients(zip(grads, decoder.trainable_variables))
        return loss

    order_seed = stream_seed(seed, "x_path_decoder/order")
    n = len(images)
    mean_loss = float("nan")
    for epoch in range(int(epochs)):
        order = np.random.default_rng([order_seed, epoch]).permutation(n)
        losses = []
        for start in range(0, n - 1, batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:
                continue
            losses.append(float(step(tf.constant(batch, tf.int32))))
        mean_loss = float(np.mean(losses))
        log(f"X-path decoder: epoch {epoch + 1}/{epochs}  -log p_X(y|z~) {mean_loss:.2f}  "
            f"{time.time() - started:.0f} s")
    return mean_loss
