"""The Python API: a trained run from a notebook or a script, NumPy in and NumPy out.

    import npvae_tf

    run = npvae_tf.load_run("runs/npvae-z500-...")   # or npvae_tf.train(config, run_dir)
    x = run.embed(images)                            # images [N, P] (or [N, H, W]) -> X [N, 2]
    z_mean, z_stddev = run.encode(images)
    probs = run.reconstruct(images)                  # decoded at E[z|y]
    probs = run.decode(z)                            # decoded at latents z [N, Z]
    probs = run.generate_from_x(x)                   # npVAE: z~(x) over the reference set
    probs = run.sample(16, seed=0)                   # ancestral samples
    x = run.locate(images)                           # npVAE: the served placement in X
    probs, log_prob = run.reconstruct_through_x(images)   # through X, the X path's decoder

The maths is the SavedModel export's (:class:`npvae_tf.serving.module.ServingModule`, run in this
process): the serving lengthscale the run recorded, the density over X training stored
(:class:`npvae_tf.runs.x_density.XDensity`), the chunked kernel over the reference set, and the
same seeded draws, so ``run.sample(n, seed)`` returns the images the exported ``sample``
signature returns for ``(n, seed)``. Bad input raises ``ValueError`` with a one-line message
(before any TensorFlow work); the run folder's problems raise
:class:`npvae_tf.RunError`.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np

from npvae_tf.core.config import Config
from npvae_tf.runs.load import Run
from npvae_tf.runs.load import load_run as _load_checked_run


class TrainedRun(Run):
    """A finished run (a :class:`~npvae_tf.runs.load.Run`: ``path``, ``config``, ``model``,
    ``reference``, ``log``, ``has_x``) with NumPy-in, NumPy-out methods and its density over X.
    """

    def __repr__(self) -> str:
        kind = "npVAE" if self.has_x else "VAE"
        return f"TrainedRun({self.path!r}, {kind}, z_dim={self.config.z_dim})"

    @functools.cached_property
    def x_density(self):
        """The Gaussian mixture over the training X that :meth:`sample` draws from (npVAE)."""
        from npvae_tf.runs.x_density import x_density_for

        self._require_x("x_density")
        return x_density_for(self.path, self.reference.x, self.config.seed)

    @property
    def lengthscale(self) -> Optional[float]:
        """The kernel lengthscale :meth:`generate_from_x` uses (npVAE; None for a VAE)."""
        if not self.has_x:
            return None
        from npvae_tf.runs.reference import serving_lengthscale

        return serving_lengthscale(self.reference, self.model)

    @functools.cached_property
    def _serving(self):
        from npvae_tf.serving.module import ServingModule

        if not self.has_x:
            return ServingModule(self.model, scaling=self.scaling,
                                 image_shape=self.config.image_shape)
        placement = None
        if self.placement == "neighbours":
            from npvae_tf.runs.layout import RunError

            try:  # a run from before the reference set kept them reads its data
                placement = self.placement_set()
            except RunError as e:  # the rest of the API works without them
                self._placement_error = str(e)
        return ServingModule(self.model, self.reference, density=self.x_density,
                             lengthscale=self.lengthscale, scaling=self.scaling,
                             placement=placement, image_shape=self.config.image_shape)

    def _require_placement(self, what: str) -> None:
        """The neighbour schemes' placement needs the training images (see _serving)."""
        if self.placement == "neighbours" and not self._serving.placement_size:
            raise ValueError(f"{what}: the training images to place from are not available "
                             f"({self._placement_error})")

    # --- input checks: NumPy, before TensorFlow -----------------------------------------------
    def _require_x(self, what: str) -> None:
        if not self.has_x:
            raise ValueError(f"{what}: {self.path} is a VAE run; only the npVAE has an X space")

    def _matrix(self, values, width: int, name: str, what: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float32)
        if array.ndim == 1 and array.size == width:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != width:
            raise ValueError(f"{name} must be [N, {width}] ({what}), got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite (no NaN or Inf)")
        return array

    def _images(self, images) -> np.ndarray:
        """``[N, P]`` float32; examples of the data's shape (``[N, H, W]``, ...) are flattened."""
        array = np.asarray(images)
        shape = tuple(self.config.image_shape)
        if array.ndim == len(shape) + 1 and array.shape[1:] == shape and len(shape) > 1:
            array = array.reshape(len(array), -1)
        array = self._matrix(array, self.config.image_dim, "images",
                             f"{self.config.image_dim} values per example, or "
                             f"[N, {', '.join(map(str, shape))}]")
        if self.config.likelihood != "gaussian" and array.size and (
                array.min() < 0.0 or array.max() > 1.0):
            raise ValueError("images must be pixel values in [0, 1] (divide uint8 images "
                             "by 255)")
        return array

    # --- the model ----------------------------------------------------------------------------
    def embed(self, images) -> np.ndarray:
        """The npVAE's embedding ``x = f(images)``, ``[N, D]``."""
        self._require_x("embed")
        return self._serving.encode(self._images(images))["x"].numpy()

    def place(self, images) -> np.ndarray:
        """``[N, D]``: each image placed at the median X of its 15 nearest training images
        (npVAE runs of the neighbour schemes, whose served placement it is)."""
        self._require_x("place")
        if self.placement != "neighbours":
            raise ValueError(f"place: {self.path} places new images by its encoder "
                             f"({self.config.scheme}); use embed")
        self._require_placement("place")
        return self._serving.place(self._images(images))["x"].numpy()

    def locate(self, images) -> np.ndarray:
        """``[N, D]``: where the served run puts each image in X: :meth:`place` for the
        neighbour schemes, :meth:`embed` (``f(y)``) for the others."""
        return self.place(images) if self.placement == "neighbours" else self.embed(images)

    def reconstruct_through_x(self, images) -> Tuple[np.ndarray, np.ndarray]:
        """``(means [N, P], log_prob [N])``: each image through its served location in X
        (:meth:`locate`), decoded at ``z~`` by the X path's decoder (the run's own X-path
        decoder where it has one), and ``log p_X(y | z~)`` of the image (nats, in the data's
        own units)."""
        self._require_x("reconstruct_through_x")
        self._require_placement("reconstruct_through_x")
        out = self._serving.reconstruct_through_x(self._images(images))
        return out["images"].numpy(), out["log_prob"].numpy()

    def encode(self, images) -> Tuple[np.ndarray, np.ndarray]:
        """``(E[z|y], stddev[z|y])``, each ``[N, Z]``."""
        out = self._serving.encode(self._images(images))
        return out["z_mean"].numpy(), out["z_stddev"].numpy()

    def reconstruct(self, images) -> np.ndarray:
        """Reconstruction probabilities ``[N, P]``, decoded at ``E[z|y]``."""
        return self._serving.reconstruct(self._images(images))["images"].numpy()

    def decode(self, z) -> np.ndarray:
        """Image probabilities ``[N, P]`` at latents ``z`` ``[N, Z]``."""
        z = self._matrix(z, self.config.z_dim, "z", f"{self.config.z_dim} latent dimensions")
        return self._serving.decode(z)["images"].numpy()

    def generate_from_x(self, x) -> np.ndarray:
        """Image probabilities ``[N, P]`` at X locations ``[N, D]``: the VAE's decoder (sharp
        images) at ``z~ = sum_j W(x, x_j) E[z_j]`` over the reference set (npVAE)."""
        self._require_x("generate_from_x")
        x = self._matrix(x, self.config.x_dim, "x", f"{self.config.x_dim} coordinates of X")
        return self._serving.generate_from_x(x)["images"].numpy()

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` generated images ``[n, P]``: npVAE, x from the density over X then
        :meth:`generate_from_x`; VAE, z ~ N(0, I). The same (n, seed) gives the same images."""
        from npvae_tf.serving.module import MAX_SAMPLE_COUNT

        if int(n) != n or not 0 <= n <= MAX_SAMPLE_COUNT:
            raise ValueError(f"n must be an integer in [0, {MAX_SAMPLE_COUNT}], got {n}")
        from npvae_tf.core.backend import tf

        out = self._serving.sample(tf.constant(int(n), tf.int32), tf.constant(int(seed), tf.int64))
        return out["images"].numpy()


def load_run(path: str) -> TrainedRun:
    """The finished run in folder ``path``, ready to use (see the module docstring).

    Raises :class:`npvae_tf.RunError` with a one-line message for a folder that is
    missing, unfinished, unreadable or inconsistent.
    """
    run = _load_checked_run(path)
    return TrainedRun(run.path, run.config, run.model, run.reference, run.log)


def train(config: Config, run_dir: str, data=None,
          verbose: int = 1) -> TrainedRun:
    """Trains (or resumes, or finds finished) the run ``config`` describes in ``run_dir``,
    as ``train.py`` does, and returns it loaded. ``data``: a path as ``train.py --data``,
    or arrays (:func:`npvae_tf.training.fit.fit_run`)."""
    from npvae_tf.training.fit import fit_run

    fit_run(config, run_dir, data=data, verbose=verbose)
    return load_run(run_dir)
