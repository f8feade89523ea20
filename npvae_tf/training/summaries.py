"""TensorBoard that shows the model: per-epoch images during training.

During training (:class:`ModelSummaries`, in ``RUN/logs/model``; Keras' own loss curves are
in ``logs/train`` and ``logs/validation``), after every epoch:

* ``reconstructions``: a fixed set of validation images (top row) and their reconstructions
  decoded at ``E[z|y]`` (bottom row), so an epoch's progress is seen on the same digits;
* ``prior_samples``: images decoded from fixed draws ``z ~ N(0, I)``;
* npVAE with a 2-D X: ``x_grid``, images decoded on a regular grid over the occupied part of
  X, through the kernel over validation embeddings (the training reference set does not exist
  until training ends), and the scalar ``kernel/lengthscale`` (the learned ``l``).
(The Embedding Projector of the test set is :mod:`npvae_tf.evaluation.projector`.)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from npvae_tf.core.backend import keras
from npvae_tf.data.pictures import rgb, tile

MODEL_LOGS = "model"           # RUN/logs/model


class ModelSummaries(keras.callbacks.Callback):
    """Keras callback writing the per-epoch images and lengthscale of the module docstring.

    Args:
      log_dir: the summary folder (``RUN/logs/model``).
      validation_images: ``[N, P]`` images in [0, 1]; the first ``count`` are reconstructed,
        the first ``reference`` are the kernel's reference points for the X grid.
      image_shape: ``(H, W)``.
      seed: seeds the fixed prior draws.
      count: images per mosaic; grid: the X grid is ``grid x grid``.
    """

    def __init__(self, log_dir: str, validation_images: np.ndarray, image_shape: Sequence[int],
                 seed: int = 0, count: int = 16, grid: int = 10, reference: int = 1000):
        super().__init__()
        self.log_dir, self.image_shape = log_dir, tuple(image_shape)
        self.images = np.asarray(validation_images[:count], np.float32)
        self.reference_images = np.asarray(validation_images[:reference], np.float32)
        self.seed, self.count, self.grid = int(seed), int(count), int(grid)
        self._writer = None
        self._z = None

    def _write(self, name: str, mosaic: np.ndarray, step: int, description: str) -> None:
        from npvae_tf.core.backend import tf

        # TensorBoard draws values as they are: grayscale light on dark (as MNIST's own
        # images), colour as colour, feature vectors' heat strips through their colour map.
        image = rgb(mosaic, self.image_shape, light=False)
        tf.summary.image(name, (image[..., None] if image.ndim == 2 else image)[None], step=step,
                         description=description)

    def on_epoch_end(self, epoch, logs=None):
        from npvae_tf.core.backend import tf

        from npvae_tf.runs.x_density import occupied_grid

        model, step = self.model, epoch + 1
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
            self._z = np.random.default_rng(self.seed).standard_normal(
                (self.count, model.z_dim)).astype(np.float32)
        columns = len(self.images)
        with self._writer.as_default():
            recon = model(self.images).numpy()
            self._write("reconstructions", tile(np.concatenate([self.images, recon]),
                                                self.image_shape, columns), step,
                        "validation images (top) and their reconstructions at E[z|y]")
            self._write("prior_samples", tile(model.decode(self._z).numpy(), self.image_shape,
                                              int(math.ceil(math.sqrt(self.count)))), step,
                        "images decoded from fixed draws z ~ N(0, I)")
            if model.has_x:
                tf.summary.scalar("kernel/lengthscale", model.kernel.lengthscale, step=step,
                                  description="the learned kernel lengthscale l")
                if model.x_dim == 2 and len(self.reference_images) >= 2:
                    x = model.embed(self.reference_images)
                    z = model.approx_posterior(self.reference_images).mean()
                    grid, _ = occupied_grid(x.numpy(), self.grid)
                    images = model.decode_from_x(grid, x, z).numpy()
                    self._write("x_grid", tile(images, self.image_shape, self.grid), step,
                                f"images decoded on a {self.grid}x{self.grid} grid over the "
                                "occupied part of X (kernel over validation embeddings)")
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
