"""Locations to decode: ancestral samples in X, interpolation paths, grids, test pairs.

NumPy and scikit-learn only (no TensorFlow), so the evaluation and the SavedModel export can
both use it. Decoding a location is the model's business: ``model.decode_from_x`` (npVAE, X
locations) or ``model.decode`` (latent locations).

Ancestral sampling in X. The npVAE has no prior over X, so generating from it needs a
density of the training embeddings. We fit a Gaussian mixture (scikit-learn
``GaussianMixture``, ``DENSITY_COMPONENTS`` = 20 full-covariance components, k-means
initialisation, seeded) to the training X and sample

    x ~ sum_c pi_c N(mu_c, S_c),   then  z~ = sum_j W(x, x_j) E[z_j],  y ~ p(y | z~)

A mixture rather than a kernel density estimate: 20 components follow the ten class clusters
and the gaps between them, sampling is O(1) per point, and the fitted density is a handful of
numbers instead of a copy of the 55,000 training points.

The mixture is fitted once, at the end of training, and stored in the run folder
(:data:`X_DENSITY_FILE`, :class:`XDensity`): evaluation and the SavedModel export then sample
the same density instead of each refitting its own (k-means initialisation makes a refit with
another seed a different mixture).
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Tuple

import numpy as np

from npvae_tf.runs.layout import X_DENSITY_FILE

DENSITY_COMPONENTS = 20


def fit_x_density(x: np.ndarray, seed: int = 0, n_components: int = DENSITY_COMPONENTS):
    """A Gaussian mixture fitted to training embeddings ``x`` ``[M, D]``.

    Uses ``min(n_components, M // 10)`` components (at least 1) so small reference sets are
    not over-fitted. Returns the fitted ``sklearn.mixture.GaussianMixture``.
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need embeddings [M >= 2, D], got shape {x.shape}")
    components = max(1, min(int(n_components), len(x) // 10))
    return GaussianMixture(components, covariance_type="full", random_state=seed,
                           reg_covar=1e-6).fit(x)


@dataclasses.dataclass(frozen=True)
class XDensity:
    """The fitted mixture ``p(x) = sum_c w_c N(x; mu_c, S_c)`` as plain arrays.

    ``weights`` ``[C]``, ``means`` ``[C, D]``, ``covariances`` ``[C, D, D]`` (float64, as
    scikit-learn fits them); ``fit_seed`` the seed of the fit. Arrays rather than the
    scikit-learn object, so a run folder holds no pickle and the export needs no scikit-learn.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    fit_seed: int = 0

    @classmethod
    def fit(cls, x: np.ndarray, seed: int = 0) -> "XDensity":
        mixture = fit_x_density(x, seed)
        return cls(mixture.weights_, mixture.means_, mixture.covariances_, int(seed))

    @property
    def scale_tril(self) -> np.ndarray:
        """``L_c`` ``[C, D, D]`` with ``S_c = L_c L_c^T``."""
        return np.linalg.cholesky(self.covariances)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` locations ``[n, D]`` (float32): ``c ~ w``, ``x = mu_c + L_c eps``; seeded."""
        rng = np.random.default_rng(seed)
        weights = np.asarray(self.weights, np.float64)
        component = rng.choice(len(weights), size=int(n), p=weights / weights.sum())
        eps = rng.standard_normal((int(n), self.means.shape[1]))
        x = self.means[component] + np.einsum("nij,nj->ni", self.scale_tril[component], eps)
        return x.astype(np.float32)

    def save(self, run_dir: str) -> str:
        from npvae_tf.core.files import atomic_write

        path = os.path.join(run_dir, X_DENSITY_FILE)
        arrays = dict(weights=self.weights, means=self.means, covariances=self.covariances,
                      fit_seed=np.int64(self.fit_seed))
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
        return path

    @classmethod
    def load(cls, run_dir: str) -> "XDensity":
        """Raises ``FileNotFoundError`` if absent, ``ValueError`` naming the file if unusable."""
        path = os.path.join(run_dir, X_DENSITY_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing density over X")
        try:
            with np.load(path) as f:
                density = cls(f["weights"], f["means"], f["covariances"], int(f["fit_seed"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: cannot read the density over X "
                             f"({type(e).__name__}: {e})") from None
        c, d = density.means.shape if density.means.ndim == 2 else (-1, -1)
        if (density.weights.shape != (c,) or density.covariances.shape != (c, d, d)
                or not np.all(np.isfinite(density.covariances))):
            raise ValueError(f"{path}: inconsistent density over X (weights "
                             f"{density.weights.shape}, means {density.means.shape}, "
                             f"covariances {density.covariances.shape})")
        return density


def x_density_for(run_dir: str, x: np.ndarray, seed: int) -> XDensity:
    """The run's stored density over X; for a folder from before it was stored, the same fit.

    Training stores ``XDensity.fit(reference.x, config.seed)``, so fitting an older run's
    reference set with its ``config.seed`` gives the density training would have stored.
    """
    try:
        return XDensity.load(run_dir)
    except FileNotFoundError:
        return XDensity.fit(x, seed)




def interpolation_paths(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """Straight lines ``(1 - t) a + t b`` at ``t = 0, 1/(S-1), ..., 1``.

    Args:
      start, end: ``[N, D]`` end points (or ``[D]`` for one path).
      steps: points per path ``S >= 2``, both end points included.
    Returns:
      ``[N, S, D]`` (``[S, D]`` for one path).
    """
    if steps < 2:
        raise ValueError(f"an interpolation needs >= 2 steps, got {steps}")
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    a, b = np.asarray(start, np.float32), np.asarray(end, np.float32)
    return (1.0 - t) * a[..., None, :] + t * b[..., None, :]


def interpolation_pairs(labels: np.ndarray, n_pairs: int, seed: int = 0) -> np.ndarray:
    """Indices ``[n_pairs, 2]`` of seeded random pairs of examples with different labels.

    Depends only on ``labels`` and ``seed``, so every run is evaluated on the same pairs.
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("interpolation pairs need at least two classes")
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n_pairs:
        i, j = rng.choice(len(labels), 2, replace=False)
        if labels[i] != labels[j]:
            pairs.append((i, j))
    return np.asarray(pairs, np.int64)


def occupied_grid(x: np.ndarray, n: int = 20, percentiles: Tuple[float, float] = (1.0, 99.0)
                  ) -> Tuple[np.ndarray, Tuple[float, float, float, float]]:
    """A regular ``n x n`` grid over the occupied box of 2-D points ``x`` ``[M, 2]``.

    The box spans the given percentiles of each coordinate, so a few outliers do not leave
    the grid mostly empty. Returns the grid ``[n * n, 2]`` (row-major, the first row at the
    *top*, i.e. the largest second coordinate, as an image is drawn) and the extent
    ``(x0_min, x0_max, x1_min, x1_max)``.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"a grid needs 2-D points [M, 2], got shape {x.shape}")
    low, high = np.percentile(x, percentiles, axis=0)
    u = np.linspace(low[0], high[0], n)
    v = np.linspace(high[1], low[1], n)
    grid = np.stack(np.meshgrid(u, v), axis=-1).reshape(-1, 2).astype(np.float32)
    return grid, (float(low[0]), float(high[0]), float(low[1]), float(high[1]))


# --- the density as a SavedModel stores and samples it ------------------------------------
def mixture_parameters(density: XDensity) -> dict:
    """A :class:`~npvae_tf.runs.x_density.XDensity` as float32 arrays to store in a SavedModel:
    ``weights`` ``[C]``, ``means`` ``[C, D]``, ``scale_tril`` ``[C, D, D]``
    (``S_c = L_c L_c^T``)."""
    return {"weights": np.asarray(density.weights, np.float32),
            "means": np.asarray(density.means, np.float32),
            "scale_tril": density.scale_tril.astype(np.float32)}

