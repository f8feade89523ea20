"""``tf.data`` pipelines over image arrays: shuffled, seeded, resumable epochs; binarisation.

Shapes: ``B`` batch, ``P`` values per example (flattened). Every epoch's order and binarisation
comes from stateless seeds of ``(run seed, epoch)``, so a resumed run sees the batches an
uninterrupted one would.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from npvae_tf.core.backend import tf
from npvae_tf.core.seeds import stream_seed
from npvae_tf.data.datasets import DataError


def evaluation_batch_size(n: int, batch_size: int) -> int:
    """A batch size near ``batch_size`` whose last batch is not a single example.

    The kernel excludes each point from its own prediction, so a batch of one has no
    neighbours; every batch must hold at least two examples.
    """
    if n < 2:
        raise DataError(f"a split of {n} example(s) is too small: the kernel needs 2")
    size = min(batch_size, n)
    while n % size == 1:
        size += 1
    return size


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches in one training epoch of ``n`` examples (see :func:`make_dataset`)."""
    if drop_remainder:
        return n // batch_size
    used = n - 1 if n % batch_size == 1 else n
    return -(-used // batch_size)


def make_dataset(images: np.ndarray, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, binarize: bool = False, labels: Optional[np.ndarray] = None,
                 drop_remainder: bool = False, first_epoch: int = 0,
                 epochs: int = 1, neighbours=None) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of image batches ``[B, H*W]`` (with labels if given).

    Training (``shuffle=True``): the batches of epochs ``first_epoch, ..., epochs - 1`` in a
    row (:func:`steps_per_epoch` batches each). Epoch ``e`` visits the examples in the order
    of a permutation drawn from the stateless seed ``(stream_seed(seed, "data_order"), e)``,
    so it depends on the seed and the epoch only: a run resumed at epoch k sees exactly the
    batches an uninterrupted run sees there. When one example would be left over it is
    dropped (the permutation's last: a different one each epoch), so every batch holds at
    least two examples. Evaluation: a batch size is chosen so no batch holds one example.
    ``binarize``: y ~ Bernoulli(pixel), drawn per (seed, epoch, batch) when shuffling,
    per (seed, batch) otherwise.
    ``drop_remainder``: only full batches of exactly ``batch_size`` (distributed training
    splits each batch evenly over replicas).
    ``neighbours``: a :class:`~npvae_tf.data.neighbour_graph.NeighbourGraph` of ``images``
    (training only): each batch becomes ``(images, {"tails", "head_weight", "negatives"})``, one tail image per
    head drawn from the graph and the negatives' positions (and ``"landmarks"``, the heads'
    places in the graph's UMAP layout, when it has one), drawn per (seed, epoch, batch)
    from the streams ``neighbour_tails`` and ``neighbour_negatives``.
    """
    n = len(images)
    if n < 2:
        raise DataError(f"a split of {n} example(s) is too small: the kernel needs 2")
    if drop_remainder and n < batch_size:
        raise DataError(f"a split of {n} examples holds no full batch of {batch_size}")
    if neighbours is not None and (not shuffle or labels is not None):
        raise ValueError("neighbour draws are for shuffled training batches without labels")
    if shuffle:
        ds = _shuffled_epochs(images, labels, batch_size, seed, first_epoch, epochs,
                              drop_remainder, binarize, neighbours)
    else:
        tensors = images if labels is None else (images, labels)
        if not drop_remainder:
            batch_size = evaluation_batch_size(n, batch_size)
        ds = tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size,
                                                               drop_remainder=drop_remainder)
        if binarize:
            # One stateless seed pair per batch: (seed, batch index), fixed forever.
            seeds = tf.data.Dataset.range(1 << 62).map(
                lambda i: tf.stack([tf.constant(seed, tf.int64), i]))
            ds = tf.data.Dataset.zip(ds, seeds).map(_binarize,
                                                    num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Workers of a multi-worker run each take their share of every global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _shuffled_epochs(images, labels, batch_size, seed, first_epoch, epochs, drop_remainder,
                     binarize, neighbours=None):
    """Batches of epochs ``[first_epoch, epochs)``, each in its own seeded order."""
    n = len(images)
    used = n // batch_size * batch_size if drop_remainder else (n - 1 if n % batch_size == 1 else n)
    order_seed = tf.constant(stream_seed(seed, "data_order"), tf.int64)
    binarize_seed = tf.constant(stream_seed(seed, "binarize"), tf.int64)
    images_t = tf.constant(images)
    labels_t = None if labels is None else tf.constant(labels)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([order_seed, epoch]))[:used]
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        # (epoch, batch) identifies a batch's binarisation draw: 2**32 batches per epoch.
        return batches.enumerate().map(
            lambda b, idx: (idx, epoch * (1 << 32) + b))

    def gather(idx, counter):
        batch = tf.gather(images_t, idx)
        if binarize:
            batch = _binarize(batch, tf.stack([binarize_seed, counter]))
        if sampler is not None:
            return batch, _neighbour_draws(idx, counter)
        return batch if labels_t is None else (batch, tf.gather(labels_t, idx))

    sampler = None
    if neighbours is not None:
        from npvae_tf.data.neighbour_graph import GraphSampler

        if neighbours.size != n:
            raise DataError(f"the neighbour graph has {neighbours.size} rows for {n} images")
        sampler = GraphSampler(neighbours)
        tails_seed = tf.constant(stream_seed(seed, "neighbour_tails"), tf.int64)
        negatives_seed = tf.constant(stream_seed(seed, "neighbour_negatives"), tf.int64)

    def _neighbour_draws(idx, counter):
        tails = sampler.tails(idx, tf.stack([tails_seed, counter]))
        draws = {"tails": tf.gather(images_t, tails),
                 "head_weight": tf.gather(sampler.head_weight, idx),
                 "negatives": sampler.negative_positions(tf.shape(idx)[0],
                                                         tf.stack([negatives_seed, counter]))}
        if sampler.landmarks is not None:
            draws["landmarks"] = tf.gather(sampler.landmarks, idx)
        return draws

    epochs_ds = tf.data.Dataset.range(int(first_epoch), max(int(epochs), int(first_epoch)))
    return epochs_ds.flat_map(epoch_batches).map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                                                 deterministic=True)


def evaluation_images(images: np.ndarray, binarize: bool, seed: int,
                      split: str = "test") -> np.ndarray:
    """Images as every evaluation sees them: as they are, or (for runs trained on binarised
    images) binarised once from the run seed's stream for ``split``, the same draw every
    time (each split its own stream, so no two splits share their noise)."""
    if not binarize:
        return images
    stream = stream_seed(seed, f"evaluation_binarize/{split}")
    return np.concatenate(list(make_dataset(images, 1024, seed=stream,
                                            binarize=True).as_numpy_iterator()))


def _binarize(batch, seed):
    """y ~ Bernoulli(pixel) for the images of a batch (labels, if any, pass through)."""
    images = batch[0] if isinstance(batch, tuple) else batch
    noise = tf.random.stateless_uniform(tf.shape(images), seed=seed)
    binary = tf.cast(noise < images, images.dtype)
    return (binary,) + tuple(batch[1:]) if isinstance(batch, tuple) else binary
