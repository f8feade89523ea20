"""Shared fixtures: tiny generated data in MNIST's IDX layout (no download, no real MNIST)."""

import gzip
import os
import struct
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_idx(path, array, magic=None, gz=True):
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else 0x800 + array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    opener = gzip.open if gz else open
    with opener(path + (".gz" if gz else ""), "wb") as f:
        f.write(header + array.tobytes())


def synthetic_digits(n, seed=0, size=28):
    """Ten blurry, noisy prototype images: learnable, class-structured, deterministic."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, size, size)) > 0.7).astype(np.float32)
    labels = rng.integers(0, 10, n)
    noise = rng.random((n, size, size)) < 0.05
    images = np.where(noise, 1 - prototypes[labels], prototypes[labels])
    return (images * 255).astype(np.uint8), labels.astype(np.uint8)


def write_mnist_like(folder, n_train=600, n_test=200, size=28, gz=True):
    os.makedirs(folder, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed, size)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), images, gz=gz)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), labels, gz=gz)
    return folder


@pytest.fixture(scope="session")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(str(tmp_path_factory.mktemp("mnist_like")))


@pytest.fixture(scope="session")
def real_or_synthetic_data_dir(mnist_like_dir):
    """The real MNIST when NPVAE_DATA_DIR points at it, generated data otherwise."""
    real = os.environ.get("NPVAE_DATA_DIR")
    return real if real and os.path.isdir(real) else mnist_like_dir
