"""Metrics of embeddings and images: k-NN accuracy, trustworthiness, silhouette, active units,
Fréchet distance and classifier confidence. NumPy in, floats out.

scikit-learn and SciPy are imported inside the functions that use them.
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np


def active_units(z_mean: np.ndarray, threshold: float = 0.01) -> Tuple[int, np.ndarray]:
    """Active latent units (Burda et al. 2015): ``A_u = Var_y(E_q[z_u | y]) > threshold``.

    Args:
      z_mean: posterior means ``[N, Z]`` over a data set.
    Returns:
      the number of active units and the per-unit variances ``[Z]``.
    """
    variance = np.var(np.asarray(z_mean, np.float64), axis=0)
    return int(np.sum(variance > threshold)), variance


def knn_accuracy(train_embedding: np.ndarray, train_labels: np.ndarray,
                 test_embedding: np.ndarray, test_labels: np.ndarray,
                 ks: Sequence[int] = (1, 5, 10)) -> Dict[int, float]:
    """Test accuracy of k-nearest-neighbour classifiers fitted on the training embedding.

    ``{k: mean(knn_k(test_i) == label_i)}`` with scikit-learn's ``KNeighborsClassifier``
    (Euclidean, uniform vote). Embeddings are ``[N, D]``, labels ``[N]``.
    """
    from sklearn.neighbors import KNeighborsClassifier

    return {int(k): float(KNeighborsClassifier(n_neighbors=int(k))
                          .fit(train_embedding, train_labels)
                          .score(test_embedding, test_labels)) for k in ks}


def embedding_trustworthiness(high: np.ndarray, low: np.ndarray, n_neighbors: int = 5,
                              subset: Optional[int] = 2000, seed: int = 0) -> float:
    """scikit-learn's trustworthiness of ``low`` ``[N, d]`` as an embedding of ``high`` ``[N, D]``.

    1 when every point's ``n_neighbors`` nearest neighbours in the embedding are also near it
    in the original space. Its cost is O(n^2) memory, so it is computed on a seeded random
    ``subset`` of the points (``None``: all of them).
    """
    from sklearn.manifold import trustworthiness

    high, low = np.asarray(high), np.asarray(low)
    if subset is not None and subset < len(high):
        keep = np.random.default_rng(seed).choice(len(high), subset, replace=False)
        high, low = high[keep], low[keep]
    return float(trustworthiness(high, low, n_neighbors=n_neighbors))


def class_silhouette(embedding: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient of the classes in the embedding (scikit-learn), in [-1, 1]."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(embedding, labels))


# --- sample quality ------------------------------------------------------------------------

def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, F]`` and ``[M, F]``.

    ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` (the FID formula, with
    ``scipy.linalg.sqrtm``; the imaginary part rounding leaves is dropped).
    """
    import scipy.linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        # Dead ReLU features make the covariances singular; sqrtm warns but its result is
        # still the square root we need. A non-finite result is regularised, as FID code does.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
        if not np.all(np.isfinite(covmean)):
            eps = 1e-6 * np.eye(len(cov_a))
            covmean = scipy.linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                 - 2.0 * np.trace(covmean))


def mean_confidence(probabilities: np.ndarray) -> float:
    """Mean over images of the classifier's top class probability; ``[N, C]`` -> scalar."""
    return float(np.mean(np.max(probabilities, axis=-1)))
