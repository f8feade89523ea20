"""Low-level data formats and errors: MNIST's IDX files, and the one-line DataError.

An IDX file (LeCun's MNIST format): a big-endian header (magic number ``0x000008DD``, ``DD``
the number of dimensions, then each dimension's size as a 32-bit integer) and the unsigned
bytes. Any image size the header states is read.
"""

from __future__ import annotations

import gzip
import os
from typing import Optional

import numpy as np

# The command-line options messages point at.
DATA_FLAG, LABELS_FLAG, LABEL_COLUMN_FLAG = "--data", "--labels", "--label_column"
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


def _error(path: str, problem: str, flag: str = DATA_FLAG) -> DataError:
    # One line whatever a library's message holds: the CLI prints it as "error: ...".
    return DataError(" ".join(f"{path}: {problem} (check {flag})".split("\n")))


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
