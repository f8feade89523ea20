"""Examples as pictures a person can read: for figures, TensorBoard, the projector, the explorer.

Examples come flattened, ``[N, P]``, with ``image_shape`` the shape of one: ``(H, W)``
grayscale images in [0, 1] (drawn dark on light), ``(H, W, 3)`` colour images, or feature
vectors ``(D,)`` of standardised values, drawn as heat strips (one cell per feature, on a
diverging map clipped to +-:data:`VECTOR_RANGE`), never as a fake image.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

VECTOR_CMAP, VECTOR_RANGE = "RdBu_r", 3.0


def pictures(images: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """``[N, P]`` -> ``[N, H, W]`` (grayscale), ``[N, H, W, 3]`` (colour, clipped to [0, 1]) or,
    for feature vectors ``[D]``, ``[N, h, D]`` heat strips ``h = max(2, D // 6)`` cells tall."""
    images = np.asarray(images, np.float32)
    n, shape = len(images), tuple(image_shape)
    if len(shape) == 1:
        return np.repeat(images.reshape(n, 1, shape[0]), max(2, shape[0] // 6), axis=1)
    if len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    out = images.reshape((n,) + shape)
    return np.clip(out, 0.0, 1.0) if len(shape) == 3 else out


def mosaic(images: np.ndarray, rows: int, cols: int, image_shape: Sequence[int],
           pad: int = 1) -> np.ndarray:
    """Tiles up to ``rows * cols`` examples (as :func:`pictures`) row by row into one array
    ``[rows * (h + pad) - pad, cols * (w + pad) - pad (, 3)]``; missing tiles and padding are 0."""
    tiles = pictures(np.asarray(images)[:rows * cols], image_shape)
    h, w = tiles.shape[1:3]
    out = np.zeros((rows * (h + pad) - pad, cols * (w + pad) - pad) + tiles.shape[3:],
                   np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = tile
    return out


def tile(images: np.ndarray, image_shape: Sequence[int], columns: int) -> np.ndarray:
    """:func:`mosaic` of all ``images`` in ``columns`` columns, without padding."""
    return mosaic(images, max(1, math.ceil(len(images) / columns)), columns, image_shape, pad=0)


def rgb(pictured: np.ndarray, image_shape: Sequence[int], light: bool = True) -> np.ndarray:
    """Pictures (from :func:`pictures` or :func:`mosaic`) as values in [0, 1] an image file or
    TensorBoard shows: grayscale stays one channel ``[..., H, W]`` (dark on light with
    ``light``, else light on dark as TensorBoard shows MNIST), colour is ``[..., 3]`` as is,
    heat strips become ``[..., 3]`` through :data:`VECTOR_CMAP`."""
    if len(image_shape) == 1:
        from matplotlib import colormaps

        unit = (np.clip(pictured, -VECTOR_RANGE, VECTOR_RANGE) + VECTOR_RANGE) / (2 * VECTOR_RANGE)
        return colormaps[VECTOR_CMAP](unit)[..., :3].astype(np.float32)
    if len(image_shape) == 3 and image_shape[2] == 3:
        return pictured
    return 1.0 - pictured if light else pictured
