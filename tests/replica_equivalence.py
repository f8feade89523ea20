"""Run as a script (a fresh process: the CPU must be split before TensorFlow starts).

Prints JSON with the relative differences (norm of the difference over the norm, all tensors
together) and largest absolute differences between one device and a 2-replica
MirroredStrategy for: the loss and gradients of one global batch, and the weights after three
``fit`` steps. Dropout is off (its masks are per replica); the latent noise is drawn for the
global batch, so everything else must agree.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from npvae_tf.training.distribute import make_strategy  # noqa: E402

mirrored = make_strategy("mirrored", cpu_replicas=2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from npvae_tf import Config, build_model  # noqa: E402

KIND = sys.argv[1] if len(sys.argv) > 1 else "npvae"
# "xpath": the X-path term with its own decoder beside the match term, gradients into E[z].
# "umap": the neighbour term beside the match term (negatives index the global batch).
SCHEME = {"xpath": dict(model="npvae", match_weight=0.5, x_path_weight=1.0,
                        x_path_decoder="separate"),
          "umap": dict(model="npvae", match_weight=0.5, neighbour_weight=1.0)}.get(
              KIND, dict(model=KIND))
CONFIG = Config(z_dim=6, hidden=(32, 16), image_shape=(4, 4), dropout=0.0, batch_size=16, seed=1,
                **SCHEME)
images = np.random.default_rng(0).random((48, 16)).astype(np.float32)
seed = tf.constant([5, 7], tf.int32)
# The neighbour draws a training batch carries (as the pipeline adds them), or none.
rng = np.random.default_rng(1)
neighbours = {"tails": images[rng.permutation(48)],
              "head_weight": rng.uniform(0.5, 2, 48).astype(np.float32),
              "negatives": rng.integers(0, 32, (48, 5)).astype(np.int32)}
data = (images, neighbours) if KIND == "umap" else images


def make(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(CONFIG)
        # Adam turns a gradient entry of ~1e-9 (a few x-encoder biases under the neighbour
        # term) into a full step whose sign the last bits decide; SGD keeps the comparison
        # about the gradients, which agree to 1e-7 (loss_rel, grad_rel).
        model.compile(optimizer=keras.optimizers.SGD(1e-2) if KIND == "umap"
                      else keras.optimizers.Adam(1e-2))
    return model


def loss_and_grads(model, batch):
    y, nb = batch if isinstance(batch, tuple) else (batch, None)
    with tf.GradientTape() as tape:
        loss = model.scaled_loss(model.loss_terms(y, training=True, seed=seed,
                                                  neighbours=nb)["loss"])
    return [loss] + tape.gradient(loss, model.trainable_variables)


def rel(got, expected):
    """||got - expected|| / ||expected|| over all tensors together."""
    got = np.concatenate([np.ravel(t) for t in got]).astype(np.float64)
    expected = np.concatenate([np.ravel(t) for t in expected]).astype(np.float64)
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


single, multi = make(tf.distribute.get_strategy()), make(mirrored)
assert mirrored.num_replicas_in_sync == 2
first = tf.data.Dataset.from_tensor_slices(data).batch(16)
expected = loss_and_grads(single, next(iter(first)))
batch = next(iter(mirrored.experimental_distribute_dataset(first)))
per_replica = mirrored.run(tf.function(lambda y: loss_and_grads(multi, y)), args=(batch,))
got = [mirrored.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in per_replica]

dataset = tf.data.Dataset.from_tensor_slices(data).batch(16, drop_remainder=True)
single.fit(dataset, epochs=1, verbose=0, shuffle=False)
multi.fit(dataset, epochs=1, verbose=0, shuffle=False)
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "loss_single": float(expected[0]), "loss_mirrored": float(got[0]),
    "loss_rel": rel([got[0]], [expected[0]]),
    "grad_rel": rel(got[1:], expected[1:]),
    "grad_max_abs": max(float(np.max(np.abs(g - e))) for g, e in zip(got[1:], expected[1:])),
    "weights_rel": rel(multi.get_weights(), single.get_weights()),
    "weights_max_abs": max(float(np.max(np.abs(m - s)))
                           for m, s in zip(multi.get_weights(), single.get_weights())),
}))
