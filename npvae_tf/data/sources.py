"""Users' own data: one ``--data PATH`` read whatever the path holds (NumPy and Pillow only).

What the path is decides how it is read (``RawData.kind``):
  * ``idx``: a folder with MNIST-layout IDX files (``train-images-idx3-ubyte[.gz]``, optional
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), any
    image size the header gives. A folder holding exactly one ``.npz`` is read as that ``.npz``.
  * ``npz``: Keras' layout: ``x_train``, optional ``y_train``, ``x_test``, ``y_test``; arrays
    ``[N, H, W]``, ``[N, H, W, C]`` (C in 1, 3, 4) or ``[N, D]``.
  * ``npy``: one array ``[N, ...]``; labels from ``--labels`` (a ``.npy``, or text with one label
    per line).
  * ``images``: a folder of PNG / JPEG files, flat (no labels) or one subfolder per class as
    Keras' ``image_dataset_from_directory`` reads it (class = index in the sorted subfolder
    names). Grayscale gives ``[N, H, W]`` uint8, colour ``[N, H, W, 3]`` uint8. The decoded
    arrays are cached in ``$NPVAE_CACHE_DIR/data`` (default ``~/.cache/npvae_tf/data``).
  * ``csv``: numeric columns under a header row; ``--label_column NAME`` gives the labels.
  * ``sklearn``: ``sklearn:NAME``, a data set bundled with scikit-learn (no download):
    ``digits`` (1,797 8x8 images, values / 16 in [0, 1]), or the tables ``breast_cancer``,
    ``wine`` and ``iris`` (real-valued: ``--likelihood gaussian``); labels included.

Arrays come back as stored (uint8 stays uint8, floats stay floats); labels are int64 ``[N]``.
String labels become indices into their sorted unique values (``class_names``). Every problem
is a one-line :class:`DataError` naming the file, the problem and the option to change.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
import zipfile
from typing import Optional

import numpy as np

from npvae_tf.data.formats import (DATA_FLAG, IDX_FILES, IMAGES_MAGIC, LABEL_COLUMN_FLAG, LABELS_FLAG,
                                   LABELS_MAGIC, DataError, _error, _find, read_idx)
from npvae_tf.data.image_folder import _read_image_folder

# The command-line options the messages point at.
KINDS = ("idx", "npz", "npy", "images", "csv", "sklearn")
# ``--data sklearn:NAME``: scikit-learn's bundled data sets (its loader for each).
SKLEARN_PREFIX = "sklearn:"
SKLEARN_SETS = {"digits": "load_digits", "breast_cancer": "load_breast_cancer",
                "wine": "load_wine", "iris": "load_iris"}


@dataclasses.dataclass(frozen=True, eq=False)  # eq would compare arrays element-wise
class RawData:
    """One data set as read.

    ``train_x``: ``[N, ...]`` (``[N, H, W]``, ``[N, H, W, C]`` or ``[N, D]``) in the stored dtype;
    ``train_y``: int64 ``[N]`` or None; ``test_x`` / ``test_y`` likewise, or None when the source
    has no test split; ``source``: absolute path; ``kind``: one of :data:`KINDS`;
    ``class_names``: the label strings by index, or None; ``feature_names``: CSV column names.
    """

    train_x: np.ndarray
    train_y: Optional[np.ndarray]
    test_x: Optional[np.ndarray]
    test_y: Optional[np.ndarray]
    source: str
    kind: str
    class_names: Optional[list] = None
    feature_names: Optional[list] = None


def split_test(raw: RawData, fraction: float, seed: int) -> RawData:
    """Without a test split, holds out a seeded random ``round(fraction * N)`` examples.

    At least one test example and two training examples; both keep the original order. The
    labels follow the same indices. A source that has a test split is returned unchanged.
    """
    if raw.test_x is not None:
        return raw
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split_test: fraction {fraction} is not between 0 and 1")
    n = len(raw.train_x)
    if n < 3:
        raise _error(raw.source, f"{n} examples, too few to hold out a test split")
    n_test = min(max(1, round(fraction * n)), n - 2)
    order = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    y = raw.train_y
    return dataclasses.replace(raw, train_x=raw.train_x[train], test_x=raw.train_x[test],
                               train_y=None if y is None else y[train],
                               test_y=None if y is None else y[test])


def read_source(path: str, labels: Optional[str] = None,
                label_column: Optional[str] = None) -> RawData:
    """Reads and checks ``path`` (see the module docstring); returns :class:`RawData`.

    Args:
      path: a folder (IDX files, one ``.npz``, or images) or a ``.npz``, ``.npy`` or ``.csv`` file.
      labels: for a ``.npy`` only: a ``.npy`` of ``[N]`` labels or a text file, one per line.
      label_column: for a ``.csv`` only: the column that holds the labels.
    """
    if path.startswith(SKLEARN_PREFIX):
        for value, flag in ((labels, LABELS_FLAG), (label_column, LABEL_COLUMN_FLAG)):
            if value is not None:
                raise _error(path, f"{flag} does not apply: the data set has its labels", flag)
        return _checked(RawData(source=path, kind="sklearn", test_x=None, test_y=None,
                                **_read_sklearn(path)))
    path = os.path.abspath(os.path.expanduser(path))
    kind, path = _kind(path)
    # Refused rather than ignored: a flag that silently does nothing hides a mistake.
    for value, flag, needs in ((labels, LABELS_FLAG, "npy"),
                               (label_column, LABEL_COLUMN_FLAG, "csv")):
        if value is not None and kind != needs:
            raise _error(path, f"{flag} applies to a .{needs} file only, this is {kind} data", flag)
    readers = {"idx": _read_idx_folder, "npz": _read_npz, "images": _read_image_folder,
               "npy": lambda p: _read_npy(p, labels), "csv": lambda p: _read_csv(p, label_column)}
    fields = {"train_y": None, "test_x": None, "test_y": None, **readers[kind](path)}
    return _checked(RawData(source=path, kind=kind, **fields))


def _read_sklearn(source: str) -> dict:
    """``sklearn:NAME``: the arrays of scikit-learn's bundled data set (no test split: one is
    carved off as for any source without one)."""
    name = source[len(SKLEARN_PREFIX):]
    if name not in SKLEARN_SETS:
        raise _error(source, f"no scikit-learn data set {name!r}; one of "
                             f"{', '.join(SKLEARN_SETS)}")
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, SKLEARN_SETS[name])()
    # The digits are 8x8 images of counts 0..16: as images in [0, 1]. The tables as read.
    x = (bunch.images / 16.0).astype(np.float32) if name == "digits" else bunch.data
    out = {"train_x": x, "train_y": np.asarray(bunch.target, np.int64),
           "class_names": [str(c) for c in bunch.target_names]}
    if name != "digits":
        out["feature_names"] = [str(f) for f in bunch.feature_names]
    return out


def _kind(path: str):
    """``(kind, path to read)``: what the path holds, decided by what it is."""
    if not os.path.exists(path):
        raise _error(path, "no such file or folder")
    if os.path.isdir(path):
        if _find(path, IDX_FILES["train_images"]) is not None:
            return "idx", path
        npz = sorted(n for n in os.listdir(path) if n.endswith(".npz") and not n.startswith("."))
        if len(npz) > 1:
            raise _error(path, f"holds {len(npz)} .npz files ({', '.join(npz)}); name one")
        return ("npz", os.path.join(path, npz[0])) if npz else ("images", path)
    kinds = {".npz": "npz", ".npy": "npy", ".csv": "csv"}
    extension = os.path.splitext(path)[1].lower()
    if extension not in kinds:
        raise _error(path, f"unknown file type '{extension}'; expected a folder (IDX files or "
                           "images) or a .npz, .npy or .csv file")
    return kinds[extension], path


# --- checks every source gets -------------------------------------------------------------------

def _checked(raw: RawData) -> RawData:
    """Dtypes, ranks, counts, finiteness and matching train / test shapes."""
    for split in ("train", "test"):
        x, y = getattr(raw, f"{split}_x"), getattr(raw, f"{split}_y")
        # The name the user knows the array by: the .npz key, else the split.
        name = f"x_{split}" if raw.kind == "npz" else f"the {split} examples"
        if x is None:
            continue
        if x.dtype.kind not in "biuf":
            raise _error(raw.source, f"{name} has dtype {x.dtype}, not numbers")
        if x.ndim < 2:
            raise _error(raw.source, f"{name} has shape {x.shape}: need [N, features...], "
                                     "rank >= 2")
        if len(x) == 0:
            raise _error(raw.source, f"{name} holds no examples")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise _error(raw.source, f"{name} holds NaN or Inf (first at index {where})")
        if y is not None and len(y) != len(x):
            raise _error(raw.source, f"{name}: {len(x)} examples but {len(y)} labels")
    if raw.test_x is not None and raw.test_x.shape[1:] != raw.train_x.shape[1:]:
        raise _error(raw.source, f"training examples are {raw.train_x.shape[1:]}, test examples "
                                 f"{raw.test_x.shape[1:]}")
    return raw


def _text_labels(values, where: str, flag: str, first_line: int) -> np.ndarray:
    """Label strings (one per line from ``first_line``) as int64 if all are integers, else text."""
    if "" in values:
        raise _error(where, f"line {values.index('') + first_line}: empty label", flag)
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array(values, dtype=str)


def _encode_labels(splits, where: str, flag: str):
    """``([int64 [N] or None per split], class_names or None)``.

    Integers stay integers; text labels of all splits share one sorted vocabulary, so an
    index means the same class in training and test.
    """
    checked = []
    for y in splits:
        if y is not None:
            y = np.asarray(y)
            y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
            whole = y.dtype.kind != "f" or (np.isfinite(y).all() and (y == np.round(y)).all())
            if y.ndim != 1 or y.dtype.kind not in "biufUS" or not whole:
                raise _error(where, f"labels are {y.dtype} {y.shape}: expected [N] whole "
                                    "numbers or text", flag)
        checked.append(y)
    present = [y for y in checked if y is not None]
    if not any(y.dtype.kind in "US" for y in present):
        return [None if y is None else y.astype(np.int64) for y in checked], None
    names = np.unique(np.concatenate([y.astype(str) for y in present]))
    return ([None if y is None else np.searchsorted(names, y.astype(str)).astype(np.int64)
             for y in checked], [str(n) for n in names])


# --- IDX, .npz, .npy ----------------------------------------------------------------------------

def _read_idx_folder(folder: str) -> dict:
    fields = {}
    for split in ("train", "test"):
        images = _find(folder, IDX_FILES[f"{split}_images"])
        labels = _find(folder, IDX_FILES[f"{split}_labels"])
        if labels is not None and images is None:
            raise _error(labels, f"labels without {IDX_FILES[f'{split}_images']}[.gz]")
        try:
            x = None if images is None else read_idx(images, IMAGES_MAGIC)
            y = None if labels is None else read_idx(labels, LABELS_MAGIC).astype(np.int64)
        except DataError as e:  # datasets' message names the file; add the option
            raise DataError(f"{e} (check {DATA_FLAG})") from None
        if y is not None and len(y) != len(x):
            raise _error(labels, f"{len(y)} labels for the {len(x)} images in {images}")
        fields[f"{split}_x"], fields[f"{split}_y"] = x, y
    return fields


def _read_npz(path: str) -> dict:
    if not zipfile.is_zipfile(path):  # else np.load tries it as a pickle: a confusing message
        raise _error(path, "not a .npz file (a .npz is a zip archive of .npy arrays)")
    try:
        with np.load(path) as f:
            arrays = {key: f[key] for key in f.files}
    except Exception as e:  # noqa: BLE001 - zip, pickle and format errors alike: unreadable
        raise _error(path, f"cannot read as .npz ({type(e).__name__}: {e})") from None
    if "x_train" not in arrays:
        raise _error(path, f"no x_train array (has {', '.join(sorted(arrays)) or 'none'}); "
                           "expected Keras' layout x_train, y_train, x_test, y_test")
    if "y_test" in arrays and "x_test" not in arrays:
        raise _error(path, "y_test without x_test")
    for key in ("x_train", "x_test"):
        x = arrays.get(key)
        if x is not None and (x.ndim > 4 or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4))):
            raise _error(path, f"{key} has shape {x.shape}: expected [N, H, W], [N, H, W, C] "
                               "with C in 1, 3, 4, or [N, D]")
    (train_y, test_y), names = _encode_labels([arrays.get("y_train"), arrays.get("y_test")],
                                              path, DATA_FLAG)
    return {"train_x": arrays["x_train"], "train_y": train_y, "test_x": arrays.get("x_test"),
            "test_y": test_y, "class_names": names}


def _load_npy(path: str, flag: str) -> np.ndarray:
    try:
        return np.load(path)  # allow_pickle=False: object arrays are refused, not unpickled
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise _error(path, f"cannot read as .npy ({type(e).__name__}: {e})", flag) from None


def _read_npy(path: str, labels: Optional[str]) -> dict:
    x = _load_npy(path, DATA_FLAG)
    if labels is None:
        return {"train_x": x}
    labels = os.path.abspath(os.path.expanduser(labels))
    if not os.path.isfile(labels):
        raise _error(labels, "no such labels file", LABELS_FLAG)
    if labels.endswith(".npy"):
        values = _load_npy(labels, LABELS_FLAG)
    else:  # text: one label per line
        with open(labels, encoding="utf-8") as f:
            values = _text_labels([line.strip() for line in f.read().splitlines()], labels,
                                  LABELS_FLAG, first_line=1)
    (y,), names = _encode_labels([values], labels, LABELS_FLAG)
    if x.ndim >= 1 and len(y) != len(x):
        raise _error(labels, f"{len(y)} labels for the {len(x)} examples in {path}", LABELS_FLAG)
    return {"train_x": x, "train_y": y, "class_names": names}


# --- CSV ----------------------------------------------------------------------------------------

def _read_csv(path: str, label_column: Optional[str]) -> dict:
    """Numeric columns under a header row: ``[N, D]`` float64 and the label column, if named."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
        header = next(csv.reader(f), None)
    if not header:
        raise _error(path, "empty file; expected a header row of column names")
    header = [h.strip() for h in header]
    if label_column is not None and label_column not in header:
        raise _error(path, f"no column '{label_column}'; the columns are {', '.join(header)}",
                     LABEL_COLUMN_FLAG)
    label_index = None if label_column is None else header.index(label_column)
    features = [i for i in range(len(header)) if i != label_index]
    if not features:
        raise _error(path, "no feature columns besides the label column", LABEL_COLUMN_FLAG)
    try:
        # NumPy's C parser: twice as fast as csv.reader + float() (0.75 s against 1.3-1.8 s
        # for 5,000 x 785 cells); the slow scan runs only to explain a failure.
        with warnings.catch_warnings():  # "input contained no data": our own message follows
            warnings.simplefilter("ignore", UserWarning)
            x = np.loadtxt(path, delimiter=",", skiprows=1, usecols=features, ndmin=2,
                           dtype=np.float64, encoding="utf-8", quotechar='"')
    except ValueError as e:
        raise _error(path, _first_bad_cell(path, header, features) or str(e)) from None
    if x.size == 0:
        raise _error(path, "no data rows below the header")
    fields = {"train_x": x, "feature_names": [header[i] for i in features]}
    if label_index is not None:
        y = _text_labels([row[label_index].strip() for _, row in _csv_rows(path)], path,
                         LABEL_COLUMN_FLAG, first_line=2)
        (fields["train_y"],), fields["class_names"] = _encode_labels([y], path, LABEL_COLUMN_FLAG)
    if not np.isfinite(x).all():
        row, column = np.argwhere(~np.isfinite(x))[0]
        raise _error(path, f"NaN or Inf at line {row + 2}, column '{header[features[column]]}'")
    return fields


def _csv_rows(path: str):
    """``(line number, cells)`` of the non-empty rows below the header."""
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if line > 1 and row:
                yield line, row


def _first_bad_cell(path: str, header, features) -> Optional[str]:
    """Where NumPy refused the file, found again slowly to name the line and the column."""
    for line, row in _csv_rows(path):
        if len(row) != len(header):
            return f"line {line} has {len(row)} cells, the header {len(header)}"
        for i in features:
            try:
                float(row[i])
            except ValueError:
                return f"line {line}, column '{header[i]}': {row[i]!r} is not a number"
    return None
