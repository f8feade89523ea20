"""The reference set: training-set embeddings and latent means kept after training.

The npVAE maps a new location ``x*`` to ``z~* = sum_j W(x*, x_j) E[z_j]`` over these
``(x_j, E[z_j])`` pairs; the VAE keeps its latent means too (for embedding metrics).

The *serving lengthscale*. The lengthscale l is learned inside mini-batches of B = 128
points, but served against M = 55,000 reference points: in 2-D the reference set is
M / B ~ 430 times denser, so the learned l averages thousands of reference points and z~ is
a broad average. After training, :func:`select_serving_lengthscale` tries scale factors of
the learned l on validation images (the X path ``log p(y | z~(f(y)))`` over the reference
set) and keeps the best; the reference set records it, and evaluation and the SavedModel use
it (``ReferenceSet.lengthscale``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from npvae_tf.files import atomic_write
from npvae_tf.runs import REFERENCE_FILE


# Factors of the learned lengthscale tried for serving: 2, 1, 1/2, ..., 1/256.
SERVING_SCALES = tuple(2.0 ** -k for k in range(-1, 9))
# Validation images the choice is made on (the first ones: the same every time).
SELECTION_IMAGES = 2000


@dataclasses.dataclass(frozen=True)
class ReferenceSet:
    """``z_mean``: ``[M, Z]``; ``x``: ``[M, D]`` (npVAE) or ``None``; ``labels``: ``[M]``.

    npVAE only: ``lengthscale`` is the serving lengthscale (None: use the learned one),
    ``selection`` how it was chosen: ``learned_lengthscale``, ``scales`` and the validation
    X-path log-likelihood (nats per image) ``log_likelihood`` at each scale.
    """

    z_mean: np.ndarray
    labels: np.ndarray
    x: Optional[np.ndarray] = None
    lengthscale: Optional[float] = None
    selection: Optional[Dict[str, object]] = None

    def save(self, run_dir: str) -> str:
        path = os.path.join(run_dir, REFERENCE_FILE)
        arrays = {"z_mean": self.z_mean, "labels": self.labels}
        if self.x is not None:
            arrays["x"] = self.x
        if self.lengthscale is not None:
            arrays["lengthscale"] = np.float64(self.lengthscale)
        if self.selection is not None:
            arrays.update({f"selection_{k}": np.asarray(v) for k, v in self.selection.items()})
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
        return path

    @classmethod
    def load(cls, run_dir: str) -> "ReferenceSet":
        path = os.path.join(run_dir, REFERENCE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing reference set; did training finish?")
        with np.load(path) as f:
            selection = {k[len("selection_"):]: f[k].tolist() for k in f.files
                         if k.startswith("selection_")}
            return cls(z_mean=f["z_mean"], labels=f["labels"], x=f["x"] if "x" in f else None,
                       lengthscale=float(f["lengthscale"]) if "lengthscale" in f else None,
                       selection=selection or None)


def encode_means(model, images: np.ndarray, batch_size: int = 1024):
    """Posterior means ``[N, Z]`` and, for the npVAE, embeddings ``[N, D]`` (eval mode)."""
    has_x = model.has_x

    @tf.function(reduce_retracing=True)
    def step(y):
        z = model.approx_posterior(y).mean()
        return (z, model.embed(y)) if has_x else (z, tf.zeros([tf.shape(y)[0], 0]))

    zs, xs = [], []
    for batch in tf.data.Dataset.from_tensor_slices(images).batch(batch_size):
        z, x = step(batch)
        zs.append(z.numpy())
        xs.append(x.numpy())
    z_mean = np.concatenate(zs)
    return z_mean, (np.concatenate(xs) if has_x else None)


def x_path_scorer(model, reference: ReferenceSet, batch_size: int = 500):
    """``score(images, lengthscale) -> [N]``: ``log p_X(y | z~(f(y)))`` per image, z~ over the
    reference set with the given lengthscale (one traced function for every lengthscale)."""
    x_ref = tf.constant(reference.x, tf.float32)
    z_ref = tf.constant(reference.z_mean, tf.float32)

    @tf.function(reduce_retracing=True)
    def step(y, l):
        z_tilde = model.predictive_mean(model.embed(y), x_ref, z_ref, lengthscale=l)
        return model.x_path_likelihood(z_tilde).log_prob(y)

    def score(images: np.ndarray, lengthscale: float) -> np.ndarray:
        l = tf.constant(lengthscale, tf.float32)
        return np.concatenate([step(tf.constant(images[i:i + batch_size], tf.float32), l).numpy()
                               for i in range(0, len(images), batch_size)])

    return score


def select_serving_lengthscale(model, reference: ReferenceSet, images: np.ndarray,
                               scales: Sequence[float] = SERVING_SCALES
                               ) -> Tuple[float, Dict[str, object]]:
    """The lengthscale ``s * l`` (s in ``scales``, l learned) with the best X path on ``images``.

    Returns the chosen lengthscale and the selection record (see :class:`ReferenceSet`).
    Cost: ``len(scales)`` kernel passes of ``images`` over the reference set.
    """
    learned = float(model.kernel.lengthscale.numpy())
    images = np.asarray(images[:SELECTION_IMAGES], np.float32)
    score = x_path_scorer(model, reference)
    scores = [float(np.mean(score(images, s * learned))) for s in scales]
    best = int(np.argmax(scores))
    return learned * scales[best], {"learned_lengthscale": learned, "scales": list(scales),
                                    "log_likelihood": scores}


def build_reference_set(model, images: np.ndarray, labels: np.ndarray,
                        validation_images: Optional[np.ndarray] = None) -> ReferenceSet:
    """Training-set ``E[z]`` (and ``x``); for the npVAE with ``validation_images``, the
    serving lengthscale chosen on them."""
    z_mean, x = encode_means(model, images)
    reference = ReferenceSet(z_mean=z_mean, labels=np.asarray(labels), x=x)
    if x is None or validation_images is None:
        return reference
    lengthscale, selection = select_serving_lengthscale(model, reference, validation_images)
    return dataclasses.replace(reference, lengthscale=lengthscale, selection=selection)
