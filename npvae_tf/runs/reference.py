"""The reference set: training-set embeddings and latent means kept after training.

The npVAE maps a new location ``x*`` to ``z~* = sum_j W(x*, x_j) E[z_j]`` over these
``(x_j, E[z_j])`` pairs; the VAE keeps its latent means too (for embedding metrics).

The *serving lengthscale*. The lengthscale l is learned inside mini-batches of B = 128
points, but served against M = 55,000 reference points: in 2-D the reference set is
M / B ~ 430 times denser, so the learned l averages thousands of reference points and z~ is
a broad average. After training, :func:`select_serving_lengthscale` tries scale factors of
the learned l (or, for the neighbour scheme, of the median nearest-neighbour distance in X)
on validation images (the X path ``log p(y | z~(f(y)))`` over the reference set) and keeps
the best, extending the grid past its edge when the best lies there; the reference set
records it, and evaluation and the SavedModel use it (``ReferenceSet.lengthscale``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from npvae_tf.core.backend import tf
from npvae_tf.core.files import atomic_write
from npvae_tf.model.grid_index import GridIndex
from npvae_tf.model.grid_search import indexed_predictive_mean
from npvae_tf.runs.layout import REFERENCE_FILE

# Reference points per kernel chunk: 1,024 cost the least time at batch 1,024 with
# M = 55,000, Z = 500, with and without XLA (512: +5%, 2,048: +5-15%; bench_serving.py).
DEFAULT_CHUNK_SIZE = 1024

# Factors of the learned lengthscale tried for serving: 2, 1, 1/2, ..., 1/256.
SERVING_SCALES = tuple(2.0 ** -k for k in range(-1, 9))
# Extra factors tried beyond the grid's edge when the best one lies on it.
MAX_EXTENSIONS = 6
# Validation images the choice is made on (the first ones: the same every time).
SELECTION_IMAGES = 2000
# The smallest serving lengthscale, as a share of the median nearest-neighbour distance in
# the training X. Far below it the kernel is a nearest-neighbour lookup whose logits
# -d^2 / 2l^2 run into the thousands, and float32 rounding of them (about 6e-8 of each)
# moves the weights of near-tied neighbours: on a 1-epoch run that chose l = 6.2e-5 at
# |x| ~ 8, a float64 recomputation moved z~ by 4.7e-4 and the X path by up to 0.68 nats.
# At a quarter, a typical query's nearest point has logit ~8 and rounding stays below 1e-6.
MIN_LENGTHSCALE_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class ReferenceSet:
    """``z_mean``: ``[M, Z]``; ``x``: ``[M, D]`` (npVAE) or ``None``; ``labels``: ``[M]``.

    npVAE only: ``lengthscale`` is the serving lengthscale (None: use the learned one),
    ``selection`` how it was chosen: the ``anchor`` lengthscale (``anchor_kind``: the learned
    one, or the median nearest-neighbour distance in X), the factors of it tried
    (``scales``, decreasing), the validation X-path log-likelihood (nats per image)
    ``log_likelihood`` at each, ``extensions`` (factors added past the first grid's edge),
    ``on_edge`` (the best is still the smallest or largest tried) and ``learned_lengthscale``.

    Runs that place new examples from their nearest training examples (the neighbour
    schemes, :mod:`npvae_tf.model.placement`) also keep those examples: ``images`` ``[M, P]``
    as stored (:func:`compact_images`: uint8 where they are bytes / 255) and
    ``images_scale``, the factor that gives the model's values.
    """

    z_mean: np.ndarray
    labels: np.ndarray
    x: Optional[np.ndarray] = None
    lengthscale: Optional[float] = None
    selection: Optional[Dict[str, object]] = None
    images: Optional[np.ndarray] = None
    images_scale: float = 1.0

    def save(self, run_dir: str) -> str:
        path = os.path.join(run_dir, REFERENCE_FILE)
        arrays = {"z_mean": self.z_mean, "labels": self.labels}
        if self.x is not None:
            arrays["x"] = self.x
        if self.lengthscale is not None:
            arrays["lengthscale"] = np.float64(self.lengthscale)
        if self.selection is not None:
            arrays.update({f"selection_{k}": np.asarray(v) for k, v in self.selection.items()})
        if self.images is not None:
            arrays.update(images=self.images, images_scale=np.float64(self.images_scale))
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
                       selection=selection or None,
                       images=f["images"] if "images" in f else None,
                       images_scale=float(f["images_scale"]) if "images_scale" in f else 1.0)


def compact_images(images: np.ndarray) -> Tuple[np.ndarray, float]:
    """``(stored, scale)`` with ``stored * scale`` equal to ``images`` ``[M, P]`` (float32):
    uint8 and 1/255 where every value is a byte / 255 (images read as bytes: a quarter of the
    memory), else float32 and 1."""
    images = np.asarray(images, np.float32).reshape(len(images), -1)
    as_bytes = np.rint(images * 255.0)
    if (as_bytes.min(initial=0) >= 0 and as_bytes.max(initial=0) <= 255
            and np.array_equal((as_bytes / 255.0).astype(np.float32), images)):
        return as_bytes.astype(np.uint8), 1.0 / 255.0
    return images, 1.0


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


def x_path_scorer(model, reference: ReferenceSet, batch_size: int = 500,
                  shared_decoder: bool = False):
    """``score(images, lengthscale) -> [N]``: ``log p_X(y | z~(f(y)))`` per image, z~ over the
    reference set with the given lengthscale (one traced function for every lengthscale).
    ``shared_decoder``: decode with the VAE's decoder even if the X path has its own."""
    likelihood = model.decoder_likelihood if shared_decoder else model.x_path_likelihood
    x_ref = tf.constant(reference.x, tf.float32)
    z_ref = tf.constant(reference.z_mean, tf.float32)

    @tf.function(reduce_retracing=True)
    def step(y, l):
        z_tilde = model.predictive_mean(model.embed(y), x_ref, z_ref, lengthscale=l)
        return likelihood(z_tilde).log_prob(y)

    def score(images: np.ndarray, lengthscale: float) -> np.ndarray:
        l = tf.constant(lengthscale, tf.float32)
        return np.concatenate([step(tf.constant(images[i:i + batch_size], tf.float32), l).numpy()
                               for i in range(0, len(images), batch_size)])

    return score


def median_neighbour_distance(x: np.ndarray, sample: int = 5000) -> float:
    """The median distance from a reference point to its nearest other one, ``||x_i - x_j||``
    (on the first ``sample`` points as queries; scikit-learn's exact kNN)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, np.float64)
    if len(x) < 2:
        raise ValueError("the reference set needs 2 points to have a neighbour distance")
    distances, _ = NearestNeighbors(n_neighbors=2).fit(x).kneighbors(x[:sample])
    positive = distances[:, 1][distances[:, 1] > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def select_serving_lengthscale(model, reference: ReferenceSet, images: np.ndarray,
                               scales: Sequence[float] = SERVING_SCALES,
                               max_extensions: int = MAX_EXTENSIONS,
                               shared_decoder: bool = False,
                               min_lengthscale: Optional[float] = None
                               ) -> Tuple[float, Dict[str, object]]:
    """The lengthscale ``s * anchor`` (s in ``scales``) with the best X path on ``images``.

    The anchor is the learned lengthscale l when a term of the objective trains it (match,
    X path); for the neighbour scheme, whose X is laid out by the neighbour graph and whose
    l is not trained for serving, it is the reference set's median nearest-neighbour
    distance in X, so the grid sits at the scale of the points that are averaged. When the
    best factor lies on the grid's edge the grid is extended by halving (or doubling) up to
    ``max_extensions`` times; the record says whether it still ended on an edge.

    No lengthscale below ``min_lengthscale`` is tried (default: :data:`MIN_LENGTHSCALE_SHARE`
    of the median nearest-neighbour distance in X, where float32 weights stay exact): factors
    under it are raised to it, and halving stops there (``record["floor"]``; ``on_edge`` is
    then False when the floor is the best).

    ``shared_decoder``: score with the VAE's decoder (to fit an X-path decoder of its own at
    the chosen lengthscale, :mod:`npvae_tf.training.xpath_decoder`).
    Returns the chosen lengthscale and the selection record (see :class:`ReferenceSet`).
    Cost: one kernel pass of ``images`` over the reference set per factor tried.
    """
    learned = float(model.kernel.lengthscale.numpy())
    knobs = model.objective
    spacing = median_neighbour_distance(reference.x)
    if knobs.uses_neighbour_graph and knobs.match_weight == 0 and knobs.x_path_weight == 0:
        anchor_kind, anchor = "median nearest-neighbour distance in X", spacing
    else:
        anchor_kind, anchor = "learned lengthscale", learned
    floor = MIN_LENGTHSCALE_SHARE * spacing if min_lengthscale is None else min_lengthscale
    lowest = floor / anchor  # the smallest factor tried
    images = np.asarray(images[:SELECTION_IMAGES], np.float32)
    score = x_path_scorer(model, reference, shared_decoder=shared_decoder)
    tried = {}
    for s in sorted({max(float(s), lowest) for s in scales}):
        tried[s] = float(np.mean(score(images, s * anchor)))
    extensions = 0
    while True:
        order = sorted(tried)
        best = max(order, key=tried.get)
        at_floor = best == order[0] and order[0] <= lowest
        if best not in (order[0], order[-1]) or at_floor or extensions >= max_extensions:
            break
        step = max(order[0] / 2, lowest) if best == order[0] else order[-1] * 2
        tried[step] = float(np.mean(score(images, step * anchor)))
        extensions += 1
    order = sorted(tried, reverse=True)
    best = max(order, key=tried.get)
    on_edge = best in (order[0], order[-1]) and not (best == order[-1] and best <= lowest)
    return best * anchor, {"learned_lengthscale": learned, "anchor": anchor,
                           "anchor_kind": anchor_kind, "scales": order,
                           "log_likelihood": [tried[s] for s in order],
                           "extensions": extensions, "on_edge": bool(on_edge),
                           "floor": float(floor), "at_floor": bool(best <= lowest)}


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


def serving_lengthscale(reference: ReferenceSet, model) -> float:
    """The kernel lengthscale ``l`` the export serves with: the one training chose on
    validation images and recorded in the reference set (``ReferenceSet.lengthscale``, see
    :mod:`npvae_tf.runs.reference`), else (runs from before it was chosen) the learned one."""
    if reference.lengthscale is not None:
        return float(reference.lengthscale)
    return float(model.kernel.lengthscale.numpy())


def indexed_mean_function(model, reference: ReferenceSet, lengthscale: float,
                          chunk_size: int = DEFAULT_CHUNK_SIZE):
    """``x [N, D] -> z~ [N, Z]`` over ``reference`` through the grid index when it helps
    (:func:`~npvae_tf.model.grid_index.indexed_predictive_mean`, as the SavedModel serves), else the
    exact chunked sum; for evaluation's decoding of locations."""
    x_ref = np.asarray(reference.x, np.float32)
    z_ref = np.asarray(reference.z_mean, np.float32)
    index = GridIndex(x_ref, lengthscale)
    if not index.usable:
        x_t, z_t = tf.constant(x_ref), tf.constant(z_ref)
        return lambda x: model.kernel.predictive_mean(x, x_t, z_t, chunk_size,
                                                      lengthscale=lengthscale)
    x_t, z_t = tf.constant(x_ref[index.order]), tf.constant(z_ref[index.order])
    return lambda x: indexed_predictive_mean(model.kernel, x, x_t, z_t, index,
                                             chunk_size=chunk_size)
