"""A data set ready to train on: read, split, scaled and fingerprinted (:func:`load_data`).

Where the data comes from (:class:`DataSpec`): ``--data PATH`` (any source
:func:`npvae_tf.data.sources.read_source` reads: IDX folder, ``.npz``, ``.npy``, image folder,
``.csv``), else MNIST looked for in order in
  1. ``--data_dir`` (the older flag; the same as ``--data``),
  2. the ``NPVAE_DATA_DIR`` environment variable,
  3. Keras' cache (``~/.keras/datasets/mnist.npz``),
  4. a Keras download (needs internet).

Splits: a source without a test split gets a seeded one (``test_fraction`` of the examples,
:func:`~npvae_tf.data.sources.split_test`); the last ``validation_examples`` training
examples validate (MNIST: 5,000 of 60,000), or a tenth of them where that many would take half
or more (a small data set keeps most of its examples for training); ``train_examples`` keeps the first N of the rest.

Scaling (the values the model sees, flattened to ``[N, P]`` float32):
  * uint8 data is divided by 255 (pixels in [0, 1]);
  * float data is used as it is, never divided by 255;
  * the ``gaussian`` likelihood then standardises every dimension with the training split's
    mean and standard deviation (1 where a dimension is constant); the Bernoulli likelihoods
    need values in [0, 1] and refuse others with one line naming the option to use.
The scaling is recorded in the run (``data.json``) and undone by the SavedModel and the API,
so clients send and receive raw values.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Optional, Union

import numpy as np

from npvae_tf.data.formats import DataError  # noqa: F401  (the data layer's error, re-exported)
from npvae_tf.data.sources import SKLEARN_PREFIX, RawData, read_source, split_test

DATA_DIR_ENV = "NPVAE_DATA_DIR"
# fingerprint() of the canonical MNIST (gzipped IDX files and Keras' mnist.npz alike).
MNIST_SHA256 = "25c98f992c005963b7428e1f38418b233c9b286cc403519287eb8063f0bcfe07"
# The share of the training examples that validates when validation_examples would take half.
SMALL_DATA_VALIDATION = 0.1
# No label: evaluation rows that need labels say so instead of failing.
NO_LABEL = -1


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the data comes from: ``path`` (None: MNIST, see the module docstring), and for a
    ``.npy`` a ``labels`` file, for a ``.csv`` the ``label_column``."""

    path: Optional[str] = None
    labels: Optional[str] = None
    label_column: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Split:
    """``images``: ``[N, P]`` float32 as the model sees them (scaled, flattened); ``labels``:
    ``[N]`` int64, :data:`NO_LABEL` where the data has none."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def take(self, n: int) -> "Split":
        return Split(self.images[:n], self.labels[:n])


@dataclasses.dataclass(frozen=True)
class Scaling:
    """What the SavedModel and the API apply: ``model value = (client value - offset) / scale``
    on inputs and the inverse on decoded means (``[P]`` each, or scalars).

    ``kind``: ``"bytes"`` (uint8 data divided by 255 for training; clients send values in
    [0, 1], as the MNIST model always took them), ``"unit"`` (float data in [0, 1], as read) or
    ``"standardised"`` (the Gaussian likelihood: the training split's mean and deviation per
    dimension, in the units the data was read in).
    """

    kind: str
    offset: Union[float, np.ndarray] = 0.0
    scale: Union[float, np.ndarray] = 1.0
    value_range: tuple = (0.0, 1.0)  # the training split's smallest and largest value

    def to_dict(self) -> dict:
        return {"kind": self.kind, "offset": np.asarray(self.offset, np.float64).tolist(),
                "scale": np.asarray(self.scale, np.float64).tolist(),
                "value_range": [float(v) for v in self.value_range]}

    @classmethod
    def from_dict(cls, values: Optional[dict]) -> "Scaling":
        """The scaling a ``data.json`` records (runs from before it was recorded: bytes)."""
        if not values:
            return cls("bytes")
        return cls(values["kind"], np.asarray(values["offset"], np.float32),
                   np.asarray(values["scale"], np.float32),
                   tuple(values.get("value_range", (0.0, 1.0))))

    def to_client(self, values: np.ndarray) -> np.ndarray:
        """Model values ``[N, P]`` in the units clients send and receive."""
        if self.kind != "standardised":
            return values
        return np.asarray(values, np.float32) * self.scale + self.offset

    def to_model(self, values: np.ndarray) -> np.ndarray:
        """Client values ``[N, P]`` in the model's units (the inverse of :meth:`to_client`)."""
        if self.kind != "standardised":
            return values
        return (np.asarray(values, np.float32) - self.offset) / self.scale

    def log_det(self, dim: int) -> float:
        """``sum_p log scale_p`` over ``dim`` values: a density of model values minus it is the
        density in the data's own units (change of variables; 0 unless standardised)."""
        if self.kind != "standardised":
            return 0.0
        return float(np.sum(np.log(np.broadcast_to(np.asarray(self.scale, np.float64), [dim]))))

    def for_display(self, values: np.ndarray, image_shape) -> np.ndarray:
        """Model values ``[N, P]`` as figures draw them: standardised images back in [0, 1]
        (their own units, over the training range); feature vectors stay standardised."""
        if self.kind != "standardised" or len(image_shape) == 1:
            return values
        low, high = self.value_range
        return np.clip((self.to_client(values) - low) / max(high - low, 1e-12), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """``source``: what was read; ``sha256``: :func:`fingerprint` of the arrays as read."""

    train: Split
    validation: Split
    test: Split
    image_shape: tuple              # the shape of one example: [H, W], [H, W, C] or [D]
    source: str
    sha256: str = ""
    spec: DataSpec = DataSpec()
    kind: str = "idx"
    scaling: Scaling = Scaling("bytes")
    class_names: Optional[list] = None
    test_split: Optional[dict] = None  # how a test split was carved, if the source had none

    @property
    def is_mnist(self) -> bool:
        return self.sha256 == MNIST_SHA256

    @property
    def has_labels(self) -> bool:
        """Whether the data has labels of at least two classes (what label metrics need)."""
        labels = self.train.labels
        return bool(len(labels)) and labels.min() >= 0 and len(np.unique(labels)) > 1

    @property
    def provenance(self) -> dict:
        """What a run folder records of its data (``data.json``)."""
        return {"source": self.source, "sha256": self.sha256,
                "name": "MNIST" if self.is_mnist else None, "kind": self.kind,
                "spec": self.spec.to_dict(), "shape": list(self.image_shape),
                "scaling": self.scaling.to_dict(), "class_names": self.class_names,
                "test_split": self.test_split,
                "examples": {"train": len(self.train), "validation": len(self.validation),
                             "test": len(self.test)}}


def fingerprint(*arrays) -> str:
    """SHA-256 of the arrays as read (None entries allowed): bytes, and integers that fit a
    byte (labels), by their shape and bytes (so MNIST's fingerprint is the same from IDX files
    or ``mnist.npz``); any other array also by its dtype, and floats are never cast, so float
    data sets that agree once rounded to bytes differ."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"None;")
            continue
        array = np.ascontiguousarray(array)
        if array.dtype.kind in "iu" and array.size and 0 <= array.min() and array.max() <= 255:
            array = array.astype(np.uint8)  # integers that fit a byte (labels): as bytes
        if array.dtype != np.uint8:
            digest.update(array.dtype.str.encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _keras_cache() -> Optional[str]:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(base, "datasets", "mnist.npz")
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=1)
def _read_once(path: str, labels: Optional[str], label_column: Optional[str], stamp) -> RawData:
    """The last source read, kept: a command that looks at the data's shape before training
    does not read it twice (``stamp``: the path's modification time and size)."""
    return read_source(path, labels, label_column)


def read_raw(spec: DataSpec) -> RawData:
    """The arrays ``spec`` names, as read (MNIST's search order when ``spec.path`` is None)."""
    path = spec.path or os.environ.get(DATA_DIR_ENV) or _keras_cache()
    if path and path.startswith(SKLEARN_PREFIX):  # not a file: nothing to stamp
        return _read_once(path, spec.labels, spec.label_column, None)
    if path:
        if not spec.path and not os.path.exists(path):  # name where the folder came from
            raise DataError(f"{path}: no such data folder (from ${DATA_DIR_ENV})")
        path = os.path.abspath(os.path.expanduser(path))
        st = os.stat(path) if os.path.exists(path) else None
        stamp = (st.st_mtime_ns, st.st_size) if st else None
        return _read_once(path, spec.labels, spec.label_column, stamp)
    from npvae_tf.core.backend import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data()
    except Exception as e:  # noqa: BLE001 - any download failure gets the same advice
        raise DataError(f"MNIST not found locally and the download failed ({e}); "
                        f"pass --data or set {DATA_DIR_ENV}") from None
    return RawData(xtr, ytr.astype(np.int64), xte, yte.astype(np.int64),
                   "keras.datasets.mnist", "npz")


def scaling_for(train_x: np.ndarray, likelihood: str, source: str) -> Scaling:
    """How values are scaled for the model (module docstring); refuses data outside the
    likelihood's support with one line."""
    if likelihood == "gaussian":
        values = train_x.reshape(len(train_x), -1).astype(np.float64)
        mean, std = values.mean(axis=0), values.std(axis=0)
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # constant: 1
        return Scaling("standardised", mean.astype(np.float32), std.astype(np.float32),
                       (float(values.min()), float(values.max())))
    if train_x.dtype == np.uint8:
        return Scaling("bytes")
    low, high = float(np.min(train_x)), float(np.max(train_x))
    if low < 0.0 or high > 1.0:
        raise DataError(f"{source}: values in [{low:.4g}, {high:.4g}], outside [0, 1] where "
                        f"the {likelihood} likelihood lives; use --likelihood gaussian for "
                        "real-valued data (or scale it to [0, 1])")
    return Scaling("unit")


def _scaled(x: np.ndarray, scaling: Scaling) -> np.ndarray:
    """``[N, P]`` float32 as the model sees them."""
    flat = x.reshape(len(x), -1)
    if scaling.kind == "bytes":  # as always: float32 division of the bytes
        return flat.astype(np.float32) / 255.0
    if scaling.kind == "unit":
        return flat.astype(np.float32)
    return ((flat.astype(np.float64) - scaling.offset) / scaling.scale).astype(np.float32)


def load_data(spec: Union[DataSpec, RawData, str, None] = None, *,
              validation_examples: int = 5000, train_examples: Optional[int] = None,
              image_shape: Optional[tuple] = None, likelihood: str = "bernoulli",
              test_fraction: float = 0.15, seed: int = 0) -> Dataset:
    """Reads, checks, splits and scales the data (module docstring).

    Args:
      spec: where the data comes from (a path is ``DataSpec(path)``), or arrays as read.
      validation_examples: the last this many training examples validate (a tenth where
        that would be half of them or more).
      train_examples: keep only the first N of the remaining training examples.
      image_shape: the shape of one example the caller expects (None: any).
      likelihood: the decoder's family, which decides the scaling.
      test_fraction, seed: the test split carved off a source without one.
    """
    if spec is None or isinstance(spec, str):
        spec = DataSpec(spec)
    raw = spec if isinstance(spec, RawData) else read_raw(spec)
    sha256 = fingerprint(raw.train_x, raw.train_y, raw.test_x, raw.test_y)
    carved = raw.test_x is None
    if carved:
        raw = split_test(raw, test_fraction, seed)
    source = raw.source
    shape = tuple(raw.train_x.shape[1:])
    if tuple(raw.test_x.shape[1:]) != shape:
        raise DataError(f"{source}: training examples are {shape}, test examples are "
                        f"{tuple(raw.test_x.shape[1:])}")
    if image_shape is not None and shape != tuple(image_shape):
        raise DataError(f"{source}: examples are {'x'.join(map(str, shape))}, the run expects "
                        f"{'x'.join(map(str, image_shape))}")
    n_validation = validation_examples
    if 2 * validation_examples >= len(raw.train_x):  # small data: a tenth validates instead
        n_validation = max(2, int(SMALL_DATA_VALIDATION * len(raw.train_x)))
    n_train = len(raw.train_x) - n_validation
    if n_train < 2:
        raise DataError(f"{source}: {len(raw.train_x)} training examples, too few for "
                        f"{n_validation} validation examples plus a training split")
    if train_examples is not None and train_examples > n_train:
        # Refused rather than silently capped: the config would record a number not used.
        raise DataError(f"{source}: train_examples {train_examples} is more than the "
                        f"{n_train} training examples ({len(raw.train_x)} minus "
                        f"{n_validation} for validation)")
    scaling = scaling_for(raw.train_x[:n_train], likelihood, source)

    def labels_of(y, n):
        return np.full(n, NO_LABEL, np.int64) if y is None else y.astype(np.int64)

    train_y = labels_of(raw.train_y, len(raw.train_x))
    train = Split(_scaled(raw.train_x[:n_train], scaling), train_y[:n_train])
    if train_examples is not None:
        train = train.take(train_examples)
    validation = Split(_scaled(raw.train_x[n_train:], scaling), train_y[n_train:])
    test = Split(_scaled(raw.test_x, scaling), labels_of(raw.test_y, len(raw.test_x)))
    spec = spec if isinstance(spec, DataSpec) else DataSpec()
    return Dataset(train, validation, test, shape, source, sha256, spec, raw.kind, scaling,
                   raw.class_names,
                   {"fraction": test_fraction, "seed": seed} if carved else None)


def load_for_config(spec: Union[DataSpec, RawData, str, None], config,
                    truncate: bool = True) -> Dataset:
    """:func:`load_data` with a :class:`~npvae_tf.core.config.Config`'s settings
    (``truncate=False``: the whole training split, whatever ``train_examples`` says)."""
    return load_data(spec, validation_examples=config.validation_examples,
                     train_examples=config.train_examples if truncate else None,
                     image_shape=config.image_shape, likelihood=config.likelihood,
                     test_fraction=config.test_fraction, seed=config.seed)
