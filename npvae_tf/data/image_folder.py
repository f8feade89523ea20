"""A folder of image files (PNG, JPEG) as arrays: decoded once, then cached.

Flat (no labels) or one subfolder per class as Keras' ``image_dataset_from_directory`` reads
it (class = index in the sorted subfolder names). Grayscale gives ``[N, H, W]`` uint8, colour
``[N, H, W, 3]`` uint8. The decoded arrays are cached in ``$NPVAE_CACHE_DIR/data`` (default
``~/.cache/npvae_tf/data``), keyed by the files' names, sizes and modification times.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from typing import Optional

import numpy as np

from npvae_tf.core.files import atomic_write
from npvae_tf.data.formats import _error

IMAGE_EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
CACHE_ENV = "NPVAE_CACHE_DIR"
CACHE_FORMAT = 1  # part of the cache key: bump when the decoded layout changes
_CHUNK = 512  # images per pool task: large enough that task overhead is noise

def cache_dir() -> str:
    """``$NPVAE_CACHE_DIR/data``, else ``~/.cache/npvae_tf/data``."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "npvae_tf")
    return os.path.join(os.environ.get(CACHE_ENV) or default, "data")


def _scan(top: str, prefix: str = "") -> list:
    """``(relative path, size, mtime_ns)`` of the images under ``top``, recursively, sorted.

    One ``scandir`` pass: the entry types come with the listing, and each image costs one
    ``stat`` (its size and mtime key the cache), where isdir / isfile / stat took three.
    """
    found = []
    for entry in sorted(os.scandir(top), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += _scan(entry.path, f"{prefix}{entry.name}/")
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
            st = entry.stat()
            found.append((prefix + entry.name, st.st_size, st.st_mtime_ns))
    return found


def _list_images(folder: str):
    """``(scanned images, labels or None, class_names or None)``, in sorted order.

    Class subfolders as Keras reads them: every visible subfolder is a class (in sorted name
    order, even an empty one, so indices match Keras'), searched recursively.
    """
    scanned = _scan(folder)
    flat = [f for f in scanned if "/" not in f[0]]
    if len(flat) == len(scanned):
        return scanned, None, None
    if flat:
        raise _error(folder, f"holds images both in class subfolders and at the top level "
                             f"({flat[0][0]}); use one layout")
    classes = sorted(e.name for e in os.scandir(folder)
                     if e.is_dir() and not e.name.startswith("."))
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[f[0].split("/", 1)[0]] for f in scanned], np.int64)
    return scanned, labels, classes


def _decode(path: str) -> np.ndarray:
    """One image: ``[H, W]`` uint8 for grayscale, ``[H, W, 3]`` for colour (alpha dropped)."""
    from PIL import Image

    try:
        # formats=: skips trying every other plugin's header check first.
        with Image.open(path, formats=[IMAGE_EXTENSIONS[os.path.splitext(path)[1].lower()]]) as im:
            if im.mode in ("L", "RGB"):
                return np.asarray(im)
            if im.mode not in ("I", "I;16", "I;16B", "F"):
                return np.asarray(im.convert("L" if im.mode in ("1", "LA") else "RGB"))
            mode = im.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _error(path, f"cannot decode image ({e})") from None
    raise _error(path, f"{mode} images (16-bit or float) are not supported; save them as 8-bit")


def _decode_many(paths) -> list:
    return [_decode(p) for p in paths]


def _decode_folder(folder: str, files) -> np.ndarray:
    """``[N, H, W]`` or ``[N, H, W, 3]`` uint8 from ``files`` (relative to ``folder``).

    Threads overlap file reads and whatever Pillow decodes without the GIL. For small images
    the per-file Python work dominates, so on the shared 2-core machine they ran no faster
    than one thread (70,000 28x28 PNGs: ~12 s; benchmarks/bench_data_read.py), but no slower.
    Processes are avoided: fork is unsafe in a parent that may hold TensorFlow's threads, and
    spawn re-imports the caller's main module (which breaks unguarded scripts).
    """
    paths = [os.path.join(folder, f) for f in files]
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    workers = min(len(chunks), os.cpu_count() or 1, 8)
    with concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool:
        images = [im for chunk in pool.map(_decode_many, chunks) for im in chunk]
    for i, im in enumerate(images):
        if im.shape[:2] != images[0].shape[:2]:
            (h0, w0), (h, w) = images[0].shape[:2], im.shape[:2]
            raise _error(folder, f"images of mixed sizes: {files[0]} is {h0}x{w0}, {files[i]} is "
                                 f"{h}x{w} (height x width); resize them to one size")
    if any(im.ndim == 3 for im in images) and any(im.ndim == 2 for im in images):
        # Grayscale among colour: repeat the channel, as Pillow's convert("RGB") does.
        images = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im for im in images]
    return np.stack(images)


def _read_image_folder(folder: str) -> dict:
    scanned, labels, classes = _list_images(folder)
    if not scanned:
        raise _error(folder, "no IDX files, .npz or images "
                             f"({', '.join(sorted(IMAGE_EXTENSIONS))}) found")
    key = hashlib.sha256(repr((CACHE_FORMAT, folder)).encode())
    for name, size, mtime in scanned:  # any added, removed, resized or touched file: a new key
        key.update(f"{name}\0{size}\0{mtime}\n".encode())
    files = [name for name, _, _ in scanned]
    cache = os.path.join(cache_dir(), f"images-{key.hexdigest()[:32]}.npz")
    x = _load_cache(cache, len(files))
    if x is None:
        x = _decode_folder(folder, files)
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            atomic_write(cache, lambda tmp: np.savez(tmp, x=x))
        except OSError:  # a read-only or full cache costs the next read time, not this one
            pass
    return {"train_x": x, "train_y": labels, "class_names": classes}


def _load_cache(path: str, n: int) -> Optional[np.ndarray]:
    """The cached ``[N, ...]`` uint8 array, or None when missing or damaged (then rebuilt)."""
    try:
        with np.load(path) as f:
            x = f["x"]
    except Exception:  # noqa: BLE001 - truncated zip, bad header, missing key: decode again
        return None
    return x if x.dtype == np.uint8 and x.ndim in (3, 4) and len(x) == n else None
