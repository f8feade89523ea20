"""npvae_tf.data.sources: every format round-trips, splits, fingerprints, the image cache, and a
one-line DataError for every bad input. Fixtures are small arrays written to tmp_path."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from npvae_tf.data import image_folder
from npvae_tf.data.datasets import DataError
from npvae_tf.data.datasets import fingerprint
from npvae_tf.data.sources import RawData, read_source, split_test
from tests.helpers import write_idx


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Image-folder caches go to tmp_path, never to the real ~/.cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(folder))
    return folder


def pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def class_labels(n, seed=0):
    return np.random.default_rng(seed).integers(0, 10, n).astype(np.int64)


def same(a, b):
    assert a is not None and b is not None
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# --- IDX ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(8, 8), (20, 28)])
@pytest.mark.parametrize("with_labels,with_test", [(True, True), (False, False), (True, False)])
def test_idx_folder_any_size(tmp_path, size, with_labels, with_test):
    x, y, xt, yt = pixels((30, *size)), class_labels(30), pixels((7, *size), 1), class_labels(7, 1)
    write_idx(str(tmp_path / "train-images-idx3-ubyte"), x)
    if with_labels:
        write_idx(str(tmp_path / "train-labels-idx1-ubyte"), y, gz=False)
    if with_test:
        write_idx(str(tmp_path / "t10k-images-idx3-ubyte"), xt)
        write_idx(str(tmp_path / "t10k-labels-idx1-ubyte"), yt)
    raw = read_source(str(tmp_path))
    assert raw.kind == "idx" and raw.source == str(tmp_path)
    same(raw.train_x, x)
    if with_labels:
        same(raw.train_y, y)
    else:
        assert raw.train_y is None
    if with_test:
        same(raw.test_x, xt), same(raw.test_y, yt)
    else:
        assert raw.test_x is None and raw.test_y is None


def test_folder_with_one_npz_reads_it(tmp_path):
    x, y = pixels((20, 28, 28)), class_labels(20)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    raw = read_source(str(tmp_path))
    assert raw.kind == "npz" and raw.source == str(tmp_path / "mnist.npz")
    same(raw.train_x, x), same(raw.test_y, y[:5])


# --- .npz and .npy ------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [
    np.random.default_rng(0).random((25, 6)),                      # [N, D] float64
    pixels((25, 9, 7)),                                            # [N, H, W]
    pixels((25, 5, 6, 3)),                                         # [N, H, W, 3]
    np.random.default_rng(1).random((25, 4, 4, 1)).astype(np.float32),
])
def test_npz_round_trip(tmp_path, x):
    y = class_labels(25)
    path = tmp_path / "anything.npz"
    np.savez(path, x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    raw = read_source(str(path))
    assert raw.kind == "npz" and raw.class_names is None
    same(raw.train_x, x[:20]), same(raw.train_y, y[:20]), same(raw.test_x, x[20:])
    same(raw.test_y, y[20:])


def test_npz_train_only(tmp_path):
    x = pixels((12, 5, 5))
    np.savez(tmp_path / "d.npz", x_train=x)
    raw = read_source(str(tmp_path / "d.npz"))
    same(raw.train_x, x)
    assert raw.train_y is None and raw.test_x is None


def test_npy_with_npy_labels(tmp_path):
    x, y = np.random.default_rng(0).random((15, 3, 2)).astype(np.float32), class_labels(15)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y.astype(np.int32))
    raw = read_source(str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"))
    assert raw.kind == "npy"
    same(raw.train_x, x), same(raw.train_y, y)
    assert read_source(str(tmp_path / "x.npy")).train_y is None


def test_npy_with_text_labels(tmp_path):
    x = pixels((5, 4))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "names.txt").write_text("dog\ncat\nemu\ncat\ndog\n")
    (tmp_path / "ints.txt").write_text("3\n1\n4\n1\n5\n")
    raw = read_source(str(tmp_path / "x.npy"), labels=str(tmp_path / "names.txt"))
    assert raw.class_names == ["cat", "dog", "emu"]
    same(raw.train_y, np.array([1, 0, 2, 0, 1]))
    raw = read_source(str(tmp_path / "x.npy"), labels=str(tmp_path / "ints.txt"))
    assert raw.class_names is None
    same(raw.train_y, np.array([3, 1, 4, 1, 5]))


# --- image folders ------------------------------------------------------------------------------

def save_images(folder, images, extension="png", mode=None):
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image, mode).save(os.path.join(folder, f"{i:03d}.{extension}"))


def test_grayscale_class_subfolders(tmp_path):
    images = pixels((12, 10, 8))
    for c, name in enumerate(["b_two", "a_one", "c_three"]):  # class index: sorted name order
        save_images(tmp_path / "data" / name, images[4 * c:4 * c + 4])
    os.makedirs(tmp_path / "data" / "d_empty")  # a class all the same, as Keras counts it
    raw = read_source(str(tmp_path / "data"))
    assert raw.kind == "images" and raw.class_names == ["a_one", "b_two", "c_three", "d_empty"]
    same(raw.train_x, np.concatenate([images[4:8], images[:4], images[8:]]))
    same(raw.train_y, np.repeat(np.arange(3, dtype=np.int64), 4))
    assert raw.test_x is None


def test_colour_flat_rgba_and_palette(tmp_path):
    colour = pixels((6, 5, 7, 3))
    save_images(tmp_path / "rgb", colour)
    raw = read_source(str(tmp_path / "rgb"))
    assert raw.train_y is None and raw.class_names is None
    same(raw.train_x, colour)

    rgba = np.concatenate([colour, pixels((6, 5, 7, 1), 2)], axis=3)
    save_images(tmp_path / "rgba", rgba)
    same(read_source(str(tmp_path / "rgba")).train_x, colour)  # alpha dropped

    palette = [Image.fromarray(c).quantize(colors=16) for c in colour]
    os.makedirs(tmp_path / "palette")
    for i, im in enumerate(palette):
        im.save(tmp_path / "palette" / f"{i}.png")
    same(read_source(str(tmp_path / "palette")).train_x,
         np.stack([np.asarray(im.convert("RGB")) for im in palette]))


def test_grayscale_among_colour_is_repeated_to_rgb(tmp_path):
    gray, colour = pixels((2, 4, 5)), pixels((2, 4, 5, 3), 1)
    save_images(tmp_path / "a", gray)
    save_images(tmp_path / "b", colour)
    raw = read_source(str(tmp_path))
    assert raw.class_names == ["a", "b"]
    same(raw.train_x, np.concatenate([np.repeat(gray[..., None], 3, axis=3), colour]))


def test_jpeg_grayscale_and_colour(tmp_path):
    smooth = np.add.outer(np.arange(16), np.arange(16)).astype(np.uint8) * 7  # JPEG-friendly
    colour = np.stack([np.stack([smooth, smooth[::-1], smooth.T], axis=2)] * 3)
    save_images(tmp_path / "colour", colour, "jpg")
    x = read_source(str(tmp_path / "colour")).train_x
    assert x.shape == (3, 16, 16, 3) and x.dtype == np.uint8
    assert np.abs(x.astype(int) - colour).mean() < 4
    save_images(tmp_path / "gray", np.stack([smooth] * 2), "jpeg")
    x = read_source(str(tmp_path / "gray")).train_x
    assert x.shape == (2, 16, 16) and x.dtype == np.uint8
    assert np.abs(x.astype(int) - smooth).mean() < 4


def test_image_cache_hit_and_rebuild(tmp_path, cache, monkeypatch):
    images = pixels((5, 6, 6))
    save_images(tmp_path / "d", images)
    calls = []
    decode = image_folder._decode_folder
    monkeypatch.setattr(image_folder, "_decode_folder", lambda *a: calls.append(1) or decode(*a))
    first = read_source(str(tmp_path / "d"))
    second = read_source(str(tmp_path / "d"))
    assert len(calls) == 1  # the second read loaded the cache
    same(first.train_x, images), same(second.train_x, images)
    (cached,) = list((cache / "data").iterdir())
    cached.write_bytes(cached.read_bytes()[:100])  # truncated: rebuilt, not a crash
    same(read_source(str(tmp_path / "d")).train_x, images)
    assert len(calls) == 2 and len(cached.read_bytes()) > 100
    os.utime(tmp_path / "d" / "000.png", ns=(1, 1))  # a touched file: decoded again
    read_source(str(tmp_path / "d"))
    assert len(calls) == 3


# --- CSV ----------------------------------------------------------------------------------------

def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_csv_with_and_without_label_column(tmp_path):
    x = np.random.default_rng(0).random((9, 3)) * 100
    y = class_labels(9)
    path = write_csv(tmp_path / "d.csv", ["a", "label", "b", "c"],
                     [[repr(float(r[0])), int(l), repr(float(r[1])), repr(float(r[2]))]
                      for r, l in zip(x, y)])
    raw = read_source(path, label_column="label")
    assert raw.kind == "csv" and raw.feature_names == ["a", "b", "c"] and raw.class_names is None
    same(raw.train_x, x), same(raw.train_y, y)
    raw = read_source(path)
    assert raw.feature_names == ["a", "label", "b", "c"] and raw.train_y is None
    same(raw.train_x, np.column_stack([x[:, 0], y, x[:, 1:]]).astype(np.float64))


def test_csv_string_labels(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["x", "kind"],
                     [[1, "pear"], [2, "apple"], [3, "pear"], [4, "fig"]])
    raw = read_source(path, label_column="kind")
    assert raw.class_names == ["apple", "fig", "pear"]
    same(raw.train_y, np.array([2, 0, 2, 1]))
    same(raw.train_x, np.array([[1.0], [2.0], [3.0], [4.0]]))


# --- split_test and fingerprint -----------------------------------------------------------------

def test_split_test_sizes_determinism_and_labels():
    x, y = np.arange(100 * 3).reshape(100, 3), np.arange(100)
    raw = RawData(x, y, None, None, "/x", "npy")
    a, b, c = split_test(raw, 0.2, 0), split_test(raw, 0.2, 0), split_test(raw, 0.2, 1)
    assert (len(a.train_x), len(a.test_x)) == (80, 20)
    same(a.test_x, b.test_x), same(a.train_y, b.train_y)
    assert not np.array_equal(a.test_y, c.test_y)
    assert set(a.train_y).isdisjoint(a.test_y) and len(set(a.train_y) | set(a.test_y)) == 100
    same(a.train_x[:, 0] // 3, a.train_y), same(a.test_x[:, 0] // 3, a.test_y)  # labels follow
    assert len(split_test(raw, 0.001, 0).test_x) == 1  # at least one
    assert len(split_test(RawData(x[:3], None, None, None, "/x", "npy"), 0.9, 0).train_x) == 2
    assert split_test(a, 0.5, 0) is a  # a test split already: unchanged


def test_fingerprint():
    a = np.array([[1.0, 2.0]], np.float32)
    assert fingerprint(a, None) == fingerprint(a.copy(), None)
    assert fingerprint(a) != fingerprint(a + 256)  # equal once cast to uint8
    assert fingerprint(a) != fingerprint(a + 0.25)
    assert fingerprint(a) != fingerprint(a.reshape(2, 1))  # same bytes, other shape
    assert fingerprint(a) != fingerprint(a.view(np.int32))  # same bytes, other dtype
    assert fingerprint(a, None) != fingerprint(None, a)


# --- bad input ----------------------------------------------------------------------------------

def bad(tmp_path):
    """name -> (call, text the message must hold)."""
    def idx_with(x, y):
        folder = tmp_path / "idx"
        os.makedirs(folder)
        write_idx(str(folder / "train-images-idx3-ubyte"), x)
        write_idx(str(folder / "train-labels-idx1-ubyte"), y)
        return str(folder)

    def wrong_magic():
        folder = tmp_path / "magic"
        os.makedirs(folder)
        write_idx(str(folder / "train-images-idx3-ubyte"), pixels((3, 4, 4)), magic=0x801)
        return str(folder)

    def npy(name, x):
        np.save(tmp_path / name, x)
        return str(tmp_path / name)

    def images(sizes):
        folder = tmp_path / "mixed"
        os.makedirs(folder)
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(pixels((h, w))).save(folder / f"{i}.png")
        return str(folder)

    def text(name, content):
        (tmp_path / name).write_text(content)
        return str(tmp_path / name)

    nan = np.ones((4, 3))  # NaN at index (2, 1)
    nan[2, 1] = np.nan
    return {
        "missing": (lambda: read_source(str(tmp_path / "nope")), "nope"),
        "unknown type": (lambda: read_source(text("d.json", "{}")), "d.json"),
        "nan npy": (lambda: read_source(npy("nan.npy", nan)), "nan.npy"),
        "inf npz": (lambda: np.savez(tmp_path / "inf.npz", x_train=nan * np.inf)
                    or read_source(str(tmp_path / "inf.npz")), "inf.npz"),
        "nan csv": (lambda: read_source(write_csv(tmp_path / "n.csv", ["a", "b"], [[1, "nan"]])),
                    "n.csv"),
        "text cell": (lambda: read_source(write_csv(tmp_path / "t.csv", ["a", "b"],
                                                    [[1, 2], [3, "x"]])), "t.csv"),
        "ragged csv": (lambda: read_source(write_csv(tmp_path / "r.csv", ["a", "b"],
                                                     [[1, 2], [3]])), "r.csv"),
        "mixed sizes": (lambda: read_source(images([(5, 5), (5, 5), (6, 5)])), "2.png"),
        "label count": (lambda: read_source(npy("x.npy", nan), labels=text("l.txt", "1\n2\n")),
                        "l.txt"),
        "idx label count": (lambda: read_source(idx_with(pixels((5, 4, 4)), class_labels(4))),
                            "train-labels"),
        "no x_train": (lambda: np.savez(tmp_path / "k.npz", images=nan)
                       or read_source(str(tmp_path / "k.npz")), "k.npz"),
        "rank 1 npy": (lambda: read_source(npy("r.npy", np.arange(5))), "r.npy"),
        "rank 1 npz": (lambda: np.savez(tmp_path / "r.npz", x_train=np.arange(5))
                       or read_source(str(tmp_path / "r.npz")), "r.npz"),
        "no label column": (lambda: read_source(write_csv(tmp_path / "c.csv", ["a", "b"], [[1, 2]]),
                                                label_column="y"), "c.csv"),
        "empty folder": (lambda: os.makedirs(tmp_path / "empty")
                         or read_source(str(tmp_path / "empty")), "empty"),
        "no images": (lambda: text("e.txt", "x") and read_source(str(tmp_path)), str(tmp_path)),
        "labels flag on csv": (lambda: read_source(write_csv(tmp_path / "f.csv", ["a"], [[1]]),
                                                   labels="l.txt"), "f.csv"),
        "corrupt png": (lambda: os.makedirs(tmp_path / "bad")
                        or (tmp_path / "bad" / "0.png").write_bytes(b"\x89PNG nonsense")
                        and read_source(str(tmp_path / "bad")), "0.png"),
        "corrupt npz": (lambda: read_source(text("z.npz", "not a zip")), "z.npz"),
        "wrong idx magic": (lambda: read_source(wrong_magic()), "train-images"),
        "two npz": (lambda: np.savez(tmp_path / "a.npz", x_train=nan)
                    or np.savez(tmp_path / "b.npz", x_train=nan)
                    or read_source(str(tmp_path)), "a.npz, b.npz"),
        "empty label": (lambda: read_source(write_csv(tmp_path / "e.csv", ["a", "y"],
                                                      [[1, "u"], [2, ""]]), label_column="y"),
                        "e.csv"),
        "header only": (lambda: read_source(write_csv(tmp_path / "h.csv", ["a", "b"], [])),
                        "h.csv"),
    }


BAD_CASES = ["missing", "unknown type", "nan npy", "inf npz", "nan csv", "text cell",
             "ragged csv", "mixed sizes", "label count", "idx label count", "no x_train",
             "rank 1 npy", "rank 1 npz", "no label column", "empty folder", "no images",
             "labels flag on csv", "corrupt png", "corrupt npz", "wrong idx magic", "two npz",
             "empty label", "header only"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_data_error(tmp_path, case):
    call, names = bad(tmp_path)[case]
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and names in message and "(check --" in message, message


def test_bad_input_messages_say_what_is_wrong(tmp_path):
    cases = bad(tmp_path)
    for case, expected in [("text cell", "line 3, column 'b': 'x' is not a number"),
                           ("nan csv", "line 2, column 'b'"),
                           ("mixed sizes", "0.png is 5x5, 2.png is 6x5"),
                           ("label count", "2 labels for the 4 examples"),
                           ("no label column", "the columns are a, b"),
                           ("nan npy", "(2, 1)"),
                           ("inf npz", "x_train holds NaN or Inf"),
                           ("no x_train", "has images")]:
        with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            cases[case][0]()


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "iris"])
def test_scikit_learn_data_sets_by_name(name):
    import sklearn.datasets

    raw = read_source(f"sklearn:{name}")
    bunch = getattr(sklearn.datasets, f"load_{name}")()
    expected = bunch.images / 16.0 if name == "digits" else bunch.data
    np.testing.assert_allclose(raw.train_x, expected, rtol=1e-6)
    np.testing.assert_array_equal(raw.train_y, bunch.target)
    assert raw.test_x is None and raw.source == f"sklearn:{name}" and raw.kind == "sklearn"
    assert raw.class_names == [str(c) for c in bunch.target_names]


def test_an_unknown_scikit_learn_data_set_or_a_labels_flag_is_one_line():
    with pytest.raises(DataError, match="no scikit-learn data set 'mnist'; one of digits"):
        read_source("sklearn:mnist")
    with pytest.raises(DataError, match="--label_column does not apply"):
        read_source("sklearn:wine", label_column="x")
