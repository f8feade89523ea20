"""Shared fixtures: tiny generated data in MNIST's IDX layout (no download, no real MNIST).

The helpers test modules share are in tests/helpers.py (no test module imports another).
"""

import os
import sys

import pytest

from tests.helpers import ROOT, write_mnist_like

sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mnist_like_dir(tmp_path_factory):
    return write_mnist_like(str(tmp_path_factory.mktemp("mnist_like")))


@pytest.fixture(scope="session")
def real_or_synthetic_data_dir(mnist_like_dir):
    """The real MNIST when NPVAE_DATA_DIR points at it, generated data otherwise."""
    real = os.environ.get("NPVAE_DATA_DIR")
    return real if real and os.path.isdir(real) else mnist_like_dir
