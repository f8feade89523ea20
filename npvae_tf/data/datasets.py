"""MNIST (or any data set in MNIST's IDX layout): loading, validation, splits, pipelines.

Where the files are looked for, in order:
  1. ``data_dir`` (the ``--data_dir`` flag),
  2. the ``NPVAE_DATA_DIR`` environment variable,
  3. Keras' cache (``~/.keras/datasets/mnist.npz``),
  4. a Keras download (needs internet).
A folder may hold the four canonical IDX files (gzipped or not) or Keras' ``mnist.npz``.

Splits follow the paper's protocol: the first 55,000 training images train, the last 5,000
validate, and the 10,000 test images test. Pixels are float32 in [0, 1], flattened.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Optional

import numpy as np


DATA_DIR_ENV = "NPVAE_DATA_DIR"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


class DataError(ValueError):
    """The data cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Split:
    """``images``: ``[N, H*W]`` float32 in [0, 1]; ``labels``: ``[N]`` int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, n: int) -> "Split":
        return Split(self.images[:n], self.labels[:n])


# fingerprint() of the canonical MNIST (gzipped IDX files and Keras' mnist.npz alike).
MNIST_SHA256 = "25c98f992c005963b7428e1f38418b233c9b286cc403519287eb8063f0bcfe07"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """``source``: where the files were found; ``sha256``: :func:`fingerprint` of them."""

    train: Split
    validation: Split
    test: Split
    image_shape: tuple
    source: str
    sha256: str = ""

    @property
    def is_mnist(self) -> bool:
        return self.sha256 == MNIST_SHA256

    @property
    def provenance(self) -> dict:
        """What a run folder records of its data (``data.json``)."""
        return {"source": self.source, "sha256": self.sha256,
                "name": "MNIST" if self.is_mnist else None}


def fingerprint(arrays) -> str:
    """SHA-256 of the decoded uint8 arrays (training and test images and labels, with their
    shapes): the same for the same data whatever the file format or compression."""
    import hashlib

    digest = hashlib.sha256()
    for split in ("train", "test"):
        for array in arrays[split]:
            array = np.ascontiguousarray(array, np.uint8)
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _read_bytes(path: str) -> bytes:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:  # bad gzip stream, unreadable file
        raise DataError(f"{path}: cannot read ({e})") from None


def read_idx(path: str, expected_magic: int) -> np.ndarray:
    """Reads one IDX file of unsigned bytes; checks magic number, header and length."""
    data = _read_bytes(path)
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong magic number {magic:#010x}, expected {expected_magic:#010x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        problem = "truncated" if len(data) - header < expected else "has trailing bytes"
        raise DataError(f"{path}: {problem}: header says {shape} = {expected} bytes of data, "
                        f"file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: str, stem: str) -> Optional[str]:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _load_idx_folder(folder: str):
    paths = {}
    for key, stem in IDX_FILES.items():
        path = _find(folder, stem)
        if path is None:
            raise DataError(f"{os.path.join(folder, stem)}[.gz]: missing file")
        paths[key] = path
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], IMAGES_MAGIC)
        labels = read_idx(paths[f"{split}_labels"], LABELS_MAGIC)
        if len(images) != len(labels):
            raise DataError(f"{paths[f'{split}_images']}: {len(images)} images but "
                            f"{paths[f'{split}_labels']} has {len(labels)} labels")
        arrays[split] = (images, labels)
    return arrays


def _load_npz(path: str):
    try:
        with np.load(path) as f:
            arrays = {s: (f[f"x_{s}"], f[f"y_{s}"]) for s in ("train", "test")}
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not a Keras mnist.npz ({e})") from None
    for split, (images, labels) in arrays.items():
        if images.ndim != 3 or len(images) != len(labels):
            raise DataError(f"{path}: x_{split} {images.shape} / y_{split} {labels.shape} "
                            "are not [N, H, W] images with N labels")
    return arrays


def _load_folder(folder: str):
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such data folder")
    npz = os.path.join(folder, "mnist.npz")
    if _find(folder, IDX_FILES["train_images"]) is None and os.path.isfile(npz):
        return _load_npz(npz), npz
    return _load_idx_folder(folder), folder


def _keras_cache() -> Optional[str]:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(base, "datasets", "mnist.npz")
    return path if os.path.isfile(path) else None


def load_raw(data_dir: Optional[str] = None):
    """Returns ``({"train": (images, labels), "test": ...}, source)`` as uint8 arrays."""
    folder = data_dir or os.environ.get(DATA_DIR_ENV)
    if folder:
        if not data_dir and not os.path.isdir(folder):  # name where the folder came from
            raise DataError(f"{folder}: no such data folder (from ${DATA_DIR_ENV})")
        return _load_folder(folder)
    cached = _keras_cache()
    if cached:
        return _load_npz(cached), cached
    from npvae_tf.core.backend import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data()
    except Exception as e:  # noqa: BLE001 - any download failure gets the same advice
        raise DataError(f"MNIST not found locally and the download failed ({e}); "
                        f"pass --data_dir or set {DATA_DIR_ENV}") from None
    return {"train": (xtr, ytr), "test": (xte, yte)}, "keras.datasets.mnist"


def load_mnist(data_dir: Optional[str] = None, validation_examples: int = 5000,
               train_examples: Optional[int] = None,
               image_shape: Optional[tuple] = (28, 28)) -> Dataset:
    """Loads, checks and splits the data set.

    Args:
      data_dir: folder with the IDX files or ``mnist.npz`` (else see the module docstring).
      validation_examples: the last this many training images form the validation split.
      train_examples: keep only the first N of the remaining training images.
      image_shape: required ``(H, W)``; ``None`` accepts any size.
    """
    arrays, source = load_raw(data_dir)
    train_images, train_labels = arrays["train"]
    test_images, test_labels = arrays["test"]
    shape = tuple(train_images.shape[1:])
    for name, images in (("training", train_images), ("test", test_images)):
        got = tuple(images.shape[1:])
        if image_shape is not None and got != tuple(image_shape):
            raise DataError(f"{source}: {name} images are {got[0]}x{got[1]}, expected "
                            f"{image_shape[0]}x{image_shape[1]}")
        if got != shape:
            raise DataError(f"{source}: training images are {shape}, test images are {got}")
    if len(train_images) <= validation_examples + 1:
        raise DataError(f"{source}: {len(train_images)} training images, too few for "
                        f"{validation_examples} validation images plus a training split")

    def to_split(images, labels):
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return Split(flat, labels.astype(np.int64))

    n_train = len(train_images) - validation_examples
    if train_examples is not None and train_examples > n_train:
        # Refused rather than silently capped: the config would record a number not used.
        raise DataError(f"{source}: train_examples {train_examples} is more than the "
                        f"{n_train} training images ({len(train_images)} minus "
                        f"{validation_examples} for validation)")
    train = to_split(train_images[:n_train], train_labels[:n_train])
    if train_examples is not None:
        train = train.take(train_examples)
    validation = to_split(train_images[n_train:], train_labels[n_train:])
    test = to_split(test_images, test_labels)
    return Dataset(train, validation, test, shape, source, fingerprint(arrays))

