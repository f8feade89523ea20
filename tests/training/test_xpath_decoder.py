"""The X path's own decoder, fitted after training on leave-one-out kernel averages."""

import keras
import numpy as np
import pytest

from npvae_tf.core.config import Config
from npvae_tf.model.vae import build_model
from npvae_tf.training.xpath_decoder import fit_x_path_decoder, leave_one_out_means


def test_leave_one_out_means_match_numpy_and_never_use_the_point_itself():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(23, 2)).astype(np.float32)
    z = rng.normal(size=(23, 4)).astype(np.float32)
    got = leave_one_out_means(x, z, 0.7, batch_size=5)  # chunks that do not divide 23
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * 0.7 ** 2))
    np.fill_diagonal(w, 0)
    np.testing.assert_allclose(got, (w / w.sum(1, keepdims=True)) @ z, rtol=1e-4, atol=1e-5)
    # A point with a duplicate: its average is (nearly) the duplicate's code, not its own.
    x2 = np.array([[0, 0], [0, 0], [50, 50]], np.float32)
    z2 = np.array([[1.0], [2.0], [3.0]], np.float32)
    np.testing.assert_allclose(leave_one_out_means(x2, z2, 1.0)[:2, 0], [2.0, 1.0], atol=1e-6)


def test_fitting_trains_only_the_own_decoder_and_lowers_its_loss():
    config = Config(z_dim=3, hidden=(16,), image_shape=(3, 3), match_weight=0.0,
                    x_path_decoder="separate", seed=0)
    assert config.fits_x_path_decoder and "own decoder fitted after" in config.scheme
    keras.utils.set_random_seed(0)
    model = build_model(config)
    rng = np.random.default_rng(1)
    images = (rng.random((64, 9)) > 0.5).astype(np.float32)
    x, z = rng.normal(size=(64, 2)).astype(np.float32), rng.normal(size=(64, 3)).astype(np.float32)
    before = {v.path: v.numpy().copy() for v in model.variables}
    losses = []
    first = fit_x_path_decoder(model, images, x, z, 0.5, 1, 16, seed=0, learning_rate=1e-2,
                               log=losses.append)
    last = fit_x_path_decoder(model, images, x, z, 0.5, 5, 16, seed=0, learning_rate=1e-2,
                              log=losses.append)
    assert last < first and any("epoch 5/5" in line for line in losses)
    own = [v for v in model.trainable_variables if "/x_path_decoder/" in v.path]
    assert own and all(not np.array_equal(before[v.path], v.numpy()) for v in own)
    # The VAE, X encoder and kernel are untouched (dropout generators' paths name no layer:
    # the own decoder's advance, the others' do not, but they are not told apart here).
    for v in model.trainable_variables:
        if "/x_path_decoder/" not in v.path:
            np.testing.assert_array_equal(before[v.path], v.numpy(), err_msg=v.path)
    with pytest.raises(ValueError, match="no X-path decoder"):
        fit_x_path_decoder(build_model(config.replace(x_path_decoder="shared")), images, x, z,
                           0.5, 1, 16, seed=0)
