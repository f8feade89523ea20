"""A small MNIST classifier that judges generated images, trained once and cached.

Architecture (``[B, H*W]`` pixels in [0, 1] -> ``[B, C]`` class probabilities)::

    reshape [H, W, 1] -> conv 3x3x16 ReLU -> max-pool 2 -> conv 3x3x32 ReLU -> max-pool 2
    -> flatten -> dense 128 ReLU ("features") -> dropout 0.3 -> dense C (logits)

trained with Adam (1e-3, batch 128) on the training split for ``CLASSIFIER_EPOCHS`` epochs
(about 99% test accuracy on MNIST, ~1 minute on 2 CPU cores), or for :data:`MIN_STEPS` steps
where those epochs are fewer (3 epochs of scikit-learn's 1,375 training digits were 33 steps:
a classifier of 79% test accuracy and 0.17 mean confidence, judging nothing). The 128 penultimate
activations are the features of the Fréchet distance; the softmax gives the confidence.

The trained model is cached as ``classifier-<key>.keras`` (with a ``.json`` of its test
accuracy) in ``--classifier_cache``, else ``$NPVAE_CACHE_DIR``, else
``$XDG_CACHE_HOME/npvae_tf`` or ``~/.cache/npvae_tf``. The key hashes the training images and
labels, the image shape, the architecture version, the epochs and the seed, so a different
data set or setting trains a new classifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Optional, Sequence, Tuple

import numpy as np

from npvae_tf.core.backend import keras, tf

from npvae_tf.core.files import atomic_write
from npvae_tf.evaluation.settings import CLASSIFIER_EPOCHS

CACHE_ENV = "NPVAE_CACHE_DIR"
ARCHITECTURE_VERSION = "cnn16-32-128-v1"
FEATURES_LAYER = "features"


def default_cache_dir() -> str:
    """``$NPVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/npvae_tf``, else ``~/.cache/npvae_tf``."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "npvae_tf")


def build_classifier(image_shape: Sequence[int], n_classes: int = 10,
                     seed: int = 0) -> keras.Model:
    """The (untrained) classifier of the module docstring: the small CNN for images
    ``(H, W)`` or ``(H, W, C)``, an MLP of the same head for feature vectors ``(D,)``."""
    init = lambda i: keras.initializers.GlorotUniform(seed=seed + i)  # noqa: E731
    inputs = keras.Input((int(np.prod(image_shape)),), name="pixels")
    if len(image_shape) == 1:
        t = keras.layers.Dense(256, activation="relu", kernel_initializer=init(0))(inputs)
    else:
        h, w, c = (tuple(image_shape) + (1,))[:3]
        t = keras.layers.Reshape((h, w, c))(inputs)
        t = keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                                kernel_initializer=init(0))(t)
        t = keras.layers.MaxPooling2D(2, padding="same")(t)
        t = keras.layers.Conv2D(32, 3, padding="same", activation="relu",
                                kernel_initializer=init(1))(t)
        t = keras.layers.MaxPooling2D(2, padding="same")(t)
        t = keras.layers.Flatten()(t)
    features = keras.layers.Dense(128, activation="relu", kernel_initializer=init(2),
                                  name=FEATURES_LAYER)(t)
    t = keras.layers.Dropout(0.3, seed=seed)(features)
    logits = keras.layers.Dense(n_classes, kernel_initializer=init(3), name="logits")(t)
    return keras.Model(inputs, logits, name="mnist_classifier")


@dataclasses.dataclass
class Classifier:
    """A trained classifier; ``test_accuracy`` on the real test split; ``path`` its file."""

    model: keras.Model
    test_accuracy: float
    path: Optional[str] = None

    def __post_init__(self):
        features = self.model.get_layer(FEATURES_LAYER).output
        self._both = keras.Model(self.model.inputs, [features, self.model.outputs[0]])
        self._predict = tf.function(lambda y: self._both(y, training=False),
                                    reduce_retracing=True)

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> Tuple[np.ndarray, np.ndarray]:
        """Penultimate features ``[N, 128]`` and class probabilities ``[N, C]``."""
        features, probs = [], []
        for start in range(0, len(images), batch_size):
            f, logits = self._predict(tf.constant(images[start:start + batch_size], tf.float32))
            features.append(f.numpy())
            probs.append(tf.nn.softmax(logits).numpy())
        return np.concatenate(features), np.concatenate(probs)


def cache_key(train_images: np.ndarray, train_labels: np.ndarray, image_shape, epochs: int,
              seed: int) -> str:
    """First 16 hex digits of a SHA-256 over the training data and the settings."""
    digest = hashlib.sha256()
    digest.update(f"{ARCHITECTURE_VERSION}|{tuple(image_shape)}|{epochs}|{seed}|".encode())
    if _short(len(train_images), epochs):  # trained for MIN_STEPS instead
        digest.update(f"steps {MIN_STEPS}|".encode())
    digest.update(np.ascontiguousarray(train_images, np.float32).tobytes())
    digest.update(np.ascontiguousarray(train_labels, np.int64).tobytes())
    return digest.hexdigest()[:16]


# The fewest optimisation steps a classifier trains for (MNIST's 3 epochs are 1,290).
MIN_STEPS = 1000
BATCH = 128


def _short(n_images: int, epochs: int) -> bool:
    """Whether ``epochs`` over ``n_images`` are fewer than MIN_STEPS steps (then it trains
    MIN_STEPS steps instead)."""
    return -(-n_images // BATCH) * epochs < MIN_STEPS


def train_classifier(train_images, train_labels, test_images, test_labels, image_shape,
                     epochs: int = CLASSIFIER_EPOCHS, seed: int = 0) -> Classifier:
    """Trains the CNN on ``[N, H*W]`` images with integer labels; returns it and its accuracy."""
    n_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    keras.utils.set_random_seed(seed)
    model = build_classifier(image_shape, n_classes, seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train = (tf.data.Dataset.from_tensor_slices((train_images, train_labels))
             .shuffle(len(train_images), seed=seed).batch(BATCH).prefetch(tf.data.AUTOTUNE))
    if not _short(len(train_images), epochs):
        model.fit(train, epochs=epochs, shuffle=False, verbose=0)  # the dataset shuffles
    else:  # a small data set: MIN_STEPS steps in one pass (not hundreds of tiny epochs)
        model.fit(train.repeat(), epochs=1, steps_per_epoch=MIN_STEPS, shuffle=False,
                  verbose=0)
    _, accuracy = model.evaluate(test_images, test_labels, batch_size=1000, verbose=0)
    return Classifier(model, float(accuracy))


def load_or_train_classifier(train_images, train_labels, test_images, test_labels, image_shape,
                             cache_dir: Optional[str] = None, epochs: int = CLASSIFIER_EPOCHS,
                             seed: int = 0, log=print) -> Classifier:
    """The cached classifier for this training data, trained (and cached) if absent."""
    cache_dir = cache_dir or default_cache_dir()
    key = cache_key(train_images, train_labels, image_shape, epochs, seed)
    path = os.path.join(cache_dir, f"classifier-{key}.keras")
    info_path = path[:-len(".keras")] + ".json"
    if os.path.isfile(path) and os.path.isfile(info_path):
        try:
            with open(info_path) as f:
                accuracy = float(json.load(f)["test_accuracy"])
            return Classifier(keras.saving.load_model(path, compile=False), accuracy, path)
        except Exception as e:  # noqa: BLE001 - an unreadable cache entry is rebuilt
            log(f"{path}: unreadable cached classifier ({type(e).__name__}); retraining")
    length = f"{MIN_STEPS:,} steps" if _short(len(train_images), epochs) else f"{epochs} epochs"
    log(f"training the evaluation classifier ({length} on {len(train_images):,} images; "
        f"cached in {cache_dir}) ...")
    classifier = train_classifier(train_images, train_labels, test_images, test_labels,
                                  image_shape, epochs, seed)
    os.makedirs(cache_dir, exist_ok=True)
    atomic_write(path, classifier.model.save)

    def write_info(tmp):
        with open(tmp, "w") as f:
            json.dump({"test_accuracy": classifier.test_accuracy, "epochs": epochs, "seed": seed,
                       "architecture": ARCHITECTURE_VERSION,
                       "train_examples": int(len(train_images))}, f, indent=2)

    atomic_write(info_path, write_info)
    classifier.path = path
    return classifier
