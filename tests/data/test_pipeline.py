"""``tf.data`` pipelines (npvae_tf/data/pipeline.py): batches, seeded epochs, binarisation."""

import numpy as np
import pytest

from npvae_tf.data.datasets import DataError
from npvae_tf.data.pipeline import evaluation_batch_size, make_dataset, steps_per_epoch


@pytest.mark.parametrize("n,batch", [(129, 128), (257, 128), (7, 2), (3, 2), (10, 4)])
def test_every_batch_has_at_least_two_examples(n, batch):
    images = np.random.default_rng(0).random((n, 16)).astype(np.float32)
    for shuffle in (True, False):
        sizes = [len(b) for b in make_dataset(images, batch, shuffle=shuffle)]
        assert min(sizes) >= 2
        assert sum(sizes) >= n - 1 if shuffle else sum(sizes) == n


def test_evaluation_batch_size():
    assert evaluation_batch_size(10000, 128) == 128
    assert 10001 % evaluation_batch_size(10001, 128) != 1
    with pytest.raises(DataError):
        evaluation_batch_size(1, 128)


def test_epoch_order_depends_on_seed_and_epoch_only():
    images = np.arange(64, dtype=np.float32).reshape(32, 2)
    three = [b for b in make_dataset(images, 8, shuffle=True, seed=1, epochs=3)]
    assert len(three) == 3 * steps_per_epoch(32, 8)
    epochs = [np.concatenate(three[e * 4:(e + 1) * 4]) for e in range(3)]
    for epoch in epochs:  # each epoch visits every example once
        np.testing.assert_array_equal(np.sort(epoch[:, 0]), images[:, 0])
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    # A run resumed at epoch 2 sees exactly the batches an uninterrupted run sees there.
    resumed = np.concatenate(list(make_dataset(images, 8, shuffle=True, seed=1, first_epoch=2,
                                               epochs=3)))
    np.testing.assert_array_equal(resumed, epochs[2])
    other_seed = np.concatenate(list(make_dataset(images, 8, shuffle=True, seed=2)))
    assert not np.array_equal(other_seed, epochs[0])


@pytest.mark.parametrize("n,batch,drop", [(32, 8, False), (33, 8, False), (34, 8, False),
                                          (34, 8, True), (9, 8, False)])
def test_steps_per_epoch_counts_the_batches(n, batch, drop):
    images = np.zeros((n, 2), np.float32)
    batches = list(make_dataset(images, batch, shuffle=True, drop_remainder=drop))
    assert len(batches) == steps_per_epoch(n, batch, drop)
    assert min(len(b) for b in batches) >= 2


def test_binarize_draws_bernoulli_pixels():
    images = np.full((400, 50), 0.3, np.float32)
    ds = make_dataset(images, 100, shuffle=True, seed=0, binarize=True, epochs=2)
    both = np.concatenate(list(ds))
    epoch1, epoch2 = both[:400], both[400:]
    again = np.concatenate(list(make_dataset(images, 100, shuffle=True, seed=0, binarize=True,
                                             first_epoch=1, epochs=2)))
    np.testing.assert_array_equal(again, epoch2)  # the draws depend on (seed, epoch, batch)
    assert set(np.unique(epoch1)) <= {0.0, 1.0}
    assert abs(epoch1.mean() - 0.3) < 0.01
    assert not np.array_equal(epoch1, epoch2)  # fresh draws every epoch
    fixed = make_dataset(images, 100, seed=0, binarize=True)
    np.testing.assert_array_equal(np.concatenate(list(fixed)), np.concatenate(list(fixed)))
