"""Atomic writes (npvae_tf/core/files.py): the old file or the new one, never a mix."""

import json
import os

import numpy as np
import pytest

from npvae_tf.core.files import atomic_write, write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "f.txt")
    write_text(path, "old")

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_json_takes_numpy_values(tmp_path):
    path = str(tmp_path / "m.json")
    write_json(path, {"a": np.float32(1.5), "b": np.int64(3)})
    assert json.load(open(path)) == {"a": 1.5, "b": 3}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(path, {"c": object()})
    assert json.load(open(path)) == {"a": 1.5, "b": 3}  # the failed write changed nothing
