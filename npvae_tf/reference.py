"""The reference set: training-set embeddings and latent means kept after training.

The npVAE maps a new location ``x*`` to ``z~* = sum_j W(x*, x_j) E[z_j]`` over these
``(x_j, E[z_j])`` pairs; the VAE keeps its latent means too (for embedding metrics).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from npvae_tf.files import atomic_write

REFERENCE_FILE = "reference_set.npz"


@dataclasses.dataclass(frozen=True)
class ReferenceSet:
    """``z_mean``: ``[M, Z]``; ``x``: ``[M, D]`` (npVAE) or ``None``; ``labels``: ``[M]``."""

    z_mean: np.ndarray
    labels: np.ndarray
    x: Optional[np.ndarray] = None

    def save(self, run_dir: str) -> str:
        path = os.path.join(run_dir, REFERENCE_FILE)
        arrays = {"z_mean": self.z_mean, "labels": self.labels}
        if self.x is not None:
            arrays["x"] = self.x
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
        return path

    @classmethod
    def load(cls, run_dir: str) -> "ReferenceSet":
        path = os.path.join(run_dir, REFERENCE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing reference set; did training finish?")
        with np.load(path) as f:
            return cls(z_mean=f["z_mean"], labels=f["labels"], x=f["x"] if "x" in f else None)


def encode_means(model, images: np.ndarray, batch_size: int = 1024):
    """Posterior means ``[N, Z]`` and, for the npVAE, embeddings ``[N, D]`` (eval mode)."""
    has_x = hasattr(model, "embed")

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


def build_reference_set(model, images: np.ndarray, labels: np.ndarray) -> ReferenceSet:
    z_mean, x = encode_means(model, images)
    return ReferenceSet(z_mean=z_mean, labels=np.asarray(labels), x=x)
