"""The k-nearest-neighbour graph of the training images that the neighbour term trains X on.

Notation: ``y`` images, ``x = f(y)`` the 2-D embedding, ``w_ij`` the weights of the fuzzy
k-nearest-neighbour graph of the training images (McInnes et al. 2018), symmetric, in (0, 1].

The X encoder learns UMAP's cross-entropy against this graph
(:mod:`npvae_tf.model.neighbour_loss`); this module builds the graph, caches it, and draws
each training batch's tails and negatives (:class:`GraphSampler`).

*Landmarks* (``landmark_weight`` > 0, the ``umap-landmark`` scheme; ParametricUMAP's landmark
loss): the graph's own nonparametric UMAP embedding ``u`` of the training images
(umap-learn's ``simplicial_set_embedding``, 200 epochs, spectral start) is stored with the
graph, and each head also pays ``landmark_i = ||x_i - u_i||^2``: the X encoder regresses the
layout UMAP's optimiser reaches, which the neighbour term alone, at one edge per image per
step, does not reach in 50 epochs.

The graph is built once per data set and settings (umap-learn's ``fuzzy_simplicial_set``),
cached in ``$NPVAE_CACHE_DIR/graphs`` (default ``~/.cache/npvae_tf``), and copied into the run
folder, which is what training reads: a resumed run uses the very graph it started with.
The tails and negatives are drawn in the input pipeline from stateless seeds of
``(run seed, epoch, batch)`` (:func:`npvae_tf.data.pipeline.make_dataset`), so resume is exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
import zipfile
from typing import Callable, Optional


import numpy as np
from npvae_tf.core.backend import tf

from npvae_tf.core.files import atomic_write
from npvae_tf.data.formats import DataError

# UMAP's default: negative samples per positive edge.
NEGATIVE_SAMPLES = 5
GRAPH_FORMAT = 1


class GraphError(DataError):
    """A neighbour graph is missing, damaged or was built for other data or settings."""


def cache_dir() -> str:
    root = os.environ.get("NPVAE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "npvae_tf")
    return os.path.join(root, "graphs")


def umap_ab(min_dist: float) -> tuple:
    """UMAP's curve parameters ``(a, b)`` for ``min_dist`` (spread 1), from umap-learn."""
    from umap.umap_ import find_ab_params

    a, b = find_ab_params(1.0, float(min_dist))
    return float(a), float(b)


@dataclasses.dataclass(frozen=True)
class NeighbourGraph:
    """The fuzzy k-NN graph of ``N`` training images in CSR form.

    ``indptr`` ``[N + 1]``, ``indices`` ``[E]`` (int32, sorted within each row), ``weights``
    ``[E]`` (float32, > 0); ``key`` records what it was built from: the data's SHA-256,
    ``n_neighbors``, ``min_dist`` and the seed.
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    key: dict
    embedding: Optional[np.ndarray] = None  # [N, D] float32: UMAP's layout (landmarks)

    @property
    def size(self) -> int:
        return len(self.indptr) - 1

    @property
    def degree(self) -> np.ndarray:
        """``deg_i = sum_j w_ij``, ``[N]`` float64."""
        return np.add.reduceat(self.weights.astype(np.float64), self.indptr[:-1]) \
            if len(self.weights) else np.zeros(self.size)

    @property
    def head_weight(self) -> np.ndarray:
        """``deg_i / mean deg``, ``[N]`` float32 (see the module docstring)."""
        degree = self.degree
        return (degree / degree.mean()).astype(np.float32)

    def sampling_keys(self) -> np.ndarray:
        """``[E]`` float64, increasing: ``i + (w_i1 + ... + w_ij) / deg_i`` for entry ``(i, j)``.

        A tail of head ``i`` is the first entry whose key exceeds ``i + u``, ``u ~ U[0, 1)``:
        entry ``(i, j)`` is chosen with probability ``w_ij / deg_i``. Each row's last key is
        exactly ``i + 1``.
        """
        rows = np.repeat(np.arange(self.size), np.diff(self.indptr))
        cumulative = np.cumsum(self.weights.astype(np.float64))
        row_start = np.concatenate([[0.0], cumulative])[self.indptr[:-1]]
        fraction = (cumulative - row_start[rows]) / self.degree[rows]
        fraction[self.indptr[1:] - 1] = 1.0
        return rows + fraction

    def validate(self, n: Optional[int] = None) -> None:
        if n is not None and self.size != n:
            raise GraphError(f"the neighbour graph has {self.size} rows for {n} images")
        if np.any(np.diff(self.indptr) < 1):
            raise GraphError("the neighbour graph has an image without neighbours")
        if not np.all(self.weights > 0) or not np.all(np.isfinite(self.weights)):
            raise GraphError("the neighbour graph has weights that are not positive and finite")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= self.size):
            raise GraphError("the neighbour graph has an edge to no image")
        if self.embedding is not None and (len(self.embedding) != self.size
                                           or not np.all(np.isfinite(self.embedding))):
            raise GraphError("the neighbour graph's embedding does not fit its images")

    def save(self, path: str) -> str:
        arrays = dict(indptr=self.indptr, indices=self.indices, weights=self.weights,
                      key=np.asarray(json.dumps(self.key, sort_keys=True)))
        if self.embedding is not None:
            arrays["embedding"] = self.embedding
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
        return path

    @classmethod
    def load(cls, path: str) -> "NeighbourGraph":
        try:
            with np.load(path) as f:
                graph = cls(indptr=f["indptr"].astype(np.int64),
                            indices=f["indices"].astype(np.int32),
                            weights=f["weights"].astype(np.float32),
                            key=json.loads(str(f["key"])),
                            embedding=(f["embedding"].astype(np.float32)
                                       if "embedding" in f.files else None))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise GraphError(f"{path}: not a readable neighbour graph ({e}); delete it to "
                             "build it again") from None
        graph.validate()
        return graph


def graph_key(data_sha256: str, n_neighbors: int, min_dist: float, seed: int,
              embedding_dim: int = 0) -> dict:
    """What a graph is built from. ``min_dist`` changes only (a, b) and the landmarks' layout;
    it stays in the key so the record says every setting of the scheme. ``embedding_dim``:
    also UMAP's layout in that many dimensions (landmarks), 0 for none."""
    key = {"format": GRAPH_FORMAT, "data_sha256": data_sha256, "n_neighbors": int(n_neighbors),
           "min_dist": float(min_dist), "seed": int(seed)}
    if embedding_dim:
        key["embedding_dim"] = int(embedding_dim)
    return key


def build_graph(images: np.ndarray, key: dict) -> NeighbourGraph:
    """umap-learn's fuzzy simplicial set of ``images`` ``[N, P]`` (Euclidean, in pixels).

    Cost on MNIST (55,000 images, 15 neighbours): about a minute on 2 CPU cores, plus
    numba's compilation the first time in a process.
    """
    from umap.umap_ import fuzzy_simplicial_set

    images = np.asarray(images, np.float32).reshape(len(images), -1)
    if len(images) < 2:
        raise ValueError(f"a neighbour graph needs at least 2 training examples, got "
                         f"{len(images)}")
    # umap-learn counts each point as its own first neighbour: 2 examples need 2 (else the
    # graph has no edge); more keep n - 1 at most, as before.
    n_neighbors = max(2, min(int(key["n_neighbors"]), len(images) - 1))
    with warnings.catch_warnings():  # pynndescent's, when n_neighbors is all of 2 examples
        warnings.filterwarnings("ignore", message="Failed to correctly find n_neighbors")
        graph, _, _ = fuzzy_simplicial_set(images, n_neighbors,
                                           np.random.RandomState(int(key["seed"])), "euclidean")
    graph = graph.tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    graph.sort_indices()
    result = NeighbourGraph(indptr=graph.indptr.astype(np.int64),
                            indices=graph.indices.astype(np.int32),
                            weights=graph.data.astype(np.float32), key=dict(key))
    if key.get("embedding_dim"):
        result = dataclasses.replace(result, embedding=umap_layout(images, result, key))
    result.validate(len(images))
    return result


def umap_layout(images: np.ndarray, graph: NeighbourGraph, key: dict) -> np.ndarray:
    """umap-learn's nonparametric embedding ``[N, D]`` of the graph (what ``UMAP.fit`` does
    after building it: spectral start, 200 epochs of its SGD, seeded and single-threaded)."""
    from scipy.sparse import csr_matrix
    from umap.umap_ import simplicial_set_embedding

    n = graph.size
    # Copies: umap-learn prunes the weak edges of the matrix it is given in place.
    matrix = csr_matrix((graph.weights.copy(), graph.indices.copy(), graph.indptr.copy()),
                        shape=(n, n))
    a, b = umap_ab(key["min_dist"])
    dim = int(key["embedding_dim"])
    # The spectral start needs dim + 1 eigenvectors of an n x n matrix, more than a handful
    # of examples have: those start at random (seeded).
    init = "spectral" if n > dim + 2 else "random"
    embedding, _ = simplicial_set_embedding(
        images, matrix, dim, 1.0, a, b, 1.0, NEGATIVE_SAMPLES, 200,
        init, np.random.RandomState(int(key["seed"])), "euclidean", {}, False, {}, False)
    return np.asarray(embedding, np.float32)


def _cache_path(key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"graph-{digest}.npz")


def graph_for_run(path: str, images: np.ndarray, key: dict,
                  log: Callable[[str], None] = print) -> NeighbourGraph:
    """The run's neighbour graph at ``path`` (``RUN/neighbour_graph.npz``): read if it is
    there (it must match ``key``), else taken from the cache or built, then written there."""
    if os.path.isfile(path):
        graph = NeighbourGraph.load(path)
        if graph.key != key:
            raise GraphError(f"{path} was built for other data or settings ({graph.key}); "
                             f"this run needs {key}")
        graph.validate(len(images))
        return graph
    cached = _cache_path(key)
    graph = None
    if os.path.isfile(cached):
        try:
            graph = NeighbourGraph.load(cached)
            if graph.key != key or graph.size != len(images):
                graph = None
        except GraphError as e:  # a damaged cache (a killed write, a full disk): rebuilt
            log(f"neighbour graph: the cached one is unreadable ({str(e).split(' (')[-1]}; "
                "building it again")
            graph = None
        if graph is not None:
            log(f"neighbour graph: {graph.size:,} images, {len(graph.indices):,} edges, "
                f"from the cache {cached}")
    if graph is None:
        log(f"neighbour graph: building the fuzzy {key['n_neighbors']}-nearest-neighbour graph "
            f"of {len(images):,} training images (umap-learn)"
            + (" and its UMAP layout" if key.get("embedding_dim") else "") + " ...")
        started = time.time()
        graph = build_graph(images, key)
        log(f"neighbour graph: {len(graph.indices):,} edges in {time.time() - started:.0f} s")
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            graph.save(cached)
        except OSError as e:  # the cache is a convenience; the run folder is the record
            log(f"neighbour graph: not cached ({e})")
    graph.save(path)
    return graph


# --- sampling (inside the input pipeline) ---------------------------------------------------------

class GraphSampler:
    """Draws each head's tail and the batch's negatives from stateless seeds.

    Built once per pipeline; the graph's arrays become constants of the ``tf.data`` graph.
    """

    def __init__(self, graph: NeighbourGraph, negatives: int = NEGATIVE_SAMPLES):
        self.keys = tf.constant(graph.sampling_keys(), tf.float64)
        self.indices = tf.constant(graph.indices, tf.int32)
        self.head_weight = tf.constant(graph.head_weight, tf.float32)
        self.negatives = int(negatives)
        self.landmarks = (None if graph.embedding is None
                          else tf.constant(graph.embedding, tf.float32))

    def tails(self, heads: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """``[b]`` int32: for each head (a training-set index) one neighbour, ``P = w_ij/deg_i``."""
        u = tf.random.stateless_uniform(tf.shape(heads), seed=seed, dtype=tf.float64)
        positions = tf.searchsorted(self.keys, tf.cast(heads, tf.float64) + u, side="right")
        return tf.gather(self.indices, positions)

    def negative_positions(self, batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """``[b, K]`` int32 positions in the pool ``[heads; tails]`` of ``2b`` points, uniform
        over the ``2b - 1`` positions other than the head's own (position ``i``)."""
        draw = tf.random.stateless_uniform([batch, self.negatives], seed=seed, minval=0,
                                           maxval=2 * batch - 1, dtype=tf.int32)
        own = tf.range(batch, dtype=tf.int32)[:, None]
        return draw + tf.cast(draw >= own, tf.int32)

