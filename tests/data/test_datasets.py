import gzip
import os

import numpy as np
import pytest

from npvae_tf.data.datasets import DataError, load_data
from tests.helpers import synthetic_digits, write_idx, write_mnist_like


def load(folder, **kw):
    return load_data(folder, validation_examples=kw.pop("validation_examples", 100), **kw)


@pytest.mark.parametrize("gz", [True, False])
def test_loads_and_splits_idx_files(tmp_path, gz):
    folder = write_mnist_like(str(tmp_path), n_train=300, n_test=50, gz=gz)
    data = load(folder)
    assert (len(data.train), len(data.validation), len(data.test)) == (200, 100, 50)
    assert data.train.images.shape == (200, 784) and data.train.images.dtype == np.float32
    assert 0.0 <= data.train.images.min() and data.train.images.max() == 1.0
    raw, labels = synthetic_digits(300, seed=0)
    # Validation is the *last* part of the training file.
    np.testing.assert_array_equal(data.validation.labels, labels[200:])
    np.testing.assert_allclose(data.validation.images, raw[200:].reshape(100, -1) / 255.0)
    assert len(load(folder, train_examples=20).train) == 20


def test_environment_variable_is_used(tmp_path, monkeypatch):
    folder = write_mnist_like(str(tmp_path), n_train=300, n_test=50)
    monkeypatch.setenv("NPVAE_DATA_DIR", folder)
    assert load(None).source == folder


def test_loads_keras_npz(tmp_path):
    images, labels = synthetic_digits(250)
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=labels, x_test=images[:20],
             y_test=labels[:20])
    data = load(str(tmp_path))
    assert len(data.train) == 150 and len(data.test) == 20


def test_any_size_dataset_needs_matching_shape(tmp_path):
    folder = write_mnist_like(str(tmp_path), n_train=300, n_test=50, size=20)
    with pytest.raises(DataError, match="examples are 20x20, the run expects 28x28"):
        load(folder, image_shape=(28, 28))
    assert load(folder, image_shape=(20, 20)).train.images.shape[1] == 400
    assert load(folder).image_shape == (20, 20)  # no shape asked: the data's own


def corrupt(folder, name, transform):
    path = os.path.join(folder, name + ".gz")
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(transform(data))
    return path


@pytest.mark.parametrize("name,transform,message", [
    ("train-images-idx3-ubyte", lambda d: b"\x00\x00\x09\x99" + d[4:], "wrong magic number"),
    ("t10k-labels-idx1-ubyte", lambda d: b"\x00\x00\x08\x03" + d[4:], "wrong magic number"),
    ("train-images-idx3-ubyte", lambda d: d[: len(d) // 2], "truncated"),
    ("train-labels-idx1-ubyte", lambda d: d[:6], "truncated header"),
    ("t10k-images-idx3-ubyte", lambda d: d + b"\x00" * 10, "trailing bytes"),
])
def test_corrupted_files_name_the_file_and_problem(tmp_path, name, transform, message):
    folder = write_mnist_like(str(tmp_path), n_train=300, n_test=50)
    path = corrupt(folder, name, transform)
    with pytest.raises(DataError, match=message) as info:
        load(folder)
    assert path in str(info.value) and "\n" not in str(info.value)


def test_labels_and_the_test_file_are_optional_the_images_are_not(tmp_path):
    folder = write_mnist_like(str(tmp_path), n_train=300, n_test=50)
    os.remove(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
    assert np.all(load(folder).test.labels == -1)  # unlabelled test split
    for name in ("t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        os.remove(os.path.join(folder, name))
    data = load(folder, test_fraction=0.2, seed=3)  # a seeded test split is carved off
    assert (len(data.train) + len(data.validation), len(data.test)) == (240, 60)
    assert data.test_split == {"fraction": 0.2, "seed": 3} and not data.has_labels
    os.remove(os.path.join(folder, "train-images-idx3-ubyte.gz"))
    with pytest.raises(DataError, match="no IDX files, .npz or images"):
        load(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load(str(tmp_path / "nowhere"))


def test_image_label_count_mismatch(tmp_path):
    folder = write_mnist_like(str(tmp_path), n_train=300, n_test=50)
    _, labels = synthetic_digits(299)
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte"), labels)
    with pytest.raises(DataError, match="299 labels for the 300 images"):
        load(folder)


def test_not_gzip_but_named_gz(tmp_path):
    folder = write_mnist_like(str(tmp_path), n_train=300, n_test=50)
    with open(os.path.join(folder, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        load(folder)


def test_small_data_validates_on_a_tenth_and_too_little_is_refused(tmp_path):
    folder = write_mnist_like(str(tmp_path), n_train=300, n_test=50)
    assert len(load(folder, validation_examples=150).validation) == 30  # would take half
    assert len(load(folder, validation_examples=149).validation) == 149
    tiny = write_mnist_like(str(tmp_path / "tiny"), n_train=3, n_test=5)
    with pytest.raises(DataError, match="too few"):
        load(tiny, validation_examples=2)


def test_fingerprint_is_of_the_arrays_not_the_files(tmp_path):
    from npvae_tf.data.datasets import MNIST_SHA256

    gz = load(write_mnist_like(str(tmp_path / "gz"), 250, 20, gz=True))
    plain = load(write_mnist_like(str(tmp_path / "plain"), 250, 20, gz=False))
    images, labels = synthetic_digits(250, 0)
    test_images, test_labels = synthetic_digits(20, 1)
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=labels, x_test=test_images,
             y_test=test_labels)
    npz = load(str(tmp_path))
    assert len(gz.sha256) == 64 and gz.sha256 == plain.sha256 == npz.sha256
    other = load(write_mnist_like(str(tmp_path / "other"), 251, 20))
    assert other.sha256 != gz.sha256
    assert not gz.is_mnist and {k: gz.provenance[k] for k in ("source", "sha256", "name")} == {
        "source": gz.source, "sha256": gz.sha256, "name": None}
    assert MNIST_SHA256 != gz.sha256
    # Float data is hashed as it is: two sets equal once cast to bytes still differ.
    a = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x_train=a)
    np.savez(tmp_path / "b.npz", x_train=a * 0.5)
    assert load(str(tmp_path / "a.npz")).sha256 != load(str(tmp_path / "b.npz")).sha256


def test_float_data_is_never_divided_by_255(tmp_path):
    a = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x_train=a)
    data = load(str(tmp_path / "a.npz"), validation_examples=4, test_fraction=0.25)
    assert data.scaling.kind == "unit" and data.train.images.max() > 0.9

