"""FusedAdam and the Philox Dropout: both lean on Keras internals, so a Keras upgrade that
changes them must fail here rather than change training silently (keras is pinned)."""

import os
import re

import keras
import numpy as np
import tensorflow as tf

from npvae_tf.model.layers import Dropout
from npvae_tf.model.optimizers import FusedAdam
from tests.helpers import ROOT


def test_keras_is_pinned_and_the_pin_is_installed():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", f.read(), re.M))
    assert pins.get("keras") == keras.__version__


def run_steps(optimizer, steps=5):
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=(7, 3)).astype(np.float32)),
                 keras.Variable(rng.normal(size=(3,)).astype(np.float32))]
    for _ in range(steps):
        grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in variables]
        optimizer.apply_gradients(zip(grads, variables))
    return [v.numpy() for v in variables], optimizer


def test_fused_adam_takes_the_steps_of_keras_adam():
    fused, optimizer = run_steps(FusedAdam(1e-2))
    plain, reference = run_steps(keras.optimizers.Adam(1e-2))
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # float32 rounding
    assert int(optimizer.iterations.numpy()) == 5
    # Same slots (moments), so a backup holds the same state as Adam's.
    assert [v.shape for v in optimizer.variables] == [v.shape for v in reference.variables]
    for a, b in zip(optimizer.variables[2:], reference.variables[2:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_fused_adam_round_trips_through_its_config():
    optimizer = FusedAdam(3e-4, beta_1=0.8)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, FusedAdam)
    assert again.get_config()["beta_1"] == 0.8
    assert np.isclose(float(again.learning_rate), 3e-4)


def test_philox_dropout_draws_the_masks_of_keras_dropout():
    x = tf.ones([16, 50])
    ours, theirs = Dropout(0.3, seed=5), keras.layers.Dropout(0.3, seed=5)
    for _ in range(3):  # the generators advance alike
        np.testing.assert_array_equal(ours(x, training=True).numpy(),
                                      theirs(x, training=True).numpy())
    np.testing.assert_array_equal(ours(x, training=False).numpy(), x.numpy())
    kept = ours(x, training=True).numpy()
    assert 0.5 < np.mean(kept > 0) < 0.9 and np.allclose(kept[kept > 0], 1 / 0.7)


def test_philox_dropout_round_trips_through_its_config():
    layer = keras.layers.deserialize(keras.layers.serialize(Dropout(0.2, seed=9)))
    assert isinstance(layer, Dropout) and layer.rate == 0.2 and layer.seed == 9
