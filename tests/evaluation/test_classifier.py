"""The judging classifier trains enough steps on a small data set; MNIST's is unchanged."""

import numpy as np

from npvae_tf.evaluation.classifier import BATCH, MIN_STEPS, cache_key, train_classifier


def test_a_small_data_set_trains_the_minimum_number_of_steps():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    images = (rng.random((200, 16)) < 0.2 + 0.6 * labels[:, None]).astype(np.float32)
    classifier = train_classifier(images[:150], labels[:150], images[150:], labels[150:],
                                  (4, 4), epochs=1)
    assert int(classifier.model.optimizer.iterations.numpy()) == MIN_STEPS
    assert classifier.test_accuracy > 0.9  # the classes are easy: 33 steps would not do


def test_the_cache_key_of_a_data_set_as_large_as_mnist_is_unchanged():
    # 55,000 images x 3 epochs = 1,290 steps >= MIN_STEPS: the key has no steps term, so the
    # MNIST classifier cached before this rule is the one used.
    big = np.zeros((MIN_STEPS * BATCH // 3 + BATCH, 4), np.float32)
    small = big[:BATCH]
    labels = np.zeros(len(big), np.int64)
    import hashlib

    digest = hashlib.sha256()
    from npvae_tf.evaluation.classifier import ARCHITECTURE_VERSION
    digest.update(f"{ARCHITECTURE_VERSION}|{(2, 2)}|3|0|".encode())
    digest.update(big.tobytes())
    digest.update(labels.tobytes())
    assert cache_key(big, labels, (2, 2), 3, 0) == digest.hexdigest()[:16]
    assert cache_key(small, labels[:BATCH], (2, 2), 3, 0) != cache_key(
        small, labels[:BATCH], (2, 2), 4, 0)
