"""Placing a new image in X from its nearest training images (a nonparametric placement).

The X encoder ``f`` places a new image at ``f(y)``. A neighbour-embedding X can also place it
where its neighbours are: the coordinate-wise **median** of the training locations of its
``k`` nearest training images in pixel space,

    x*(y) = median_{j in kNN_k(y)} x_j        (per coordinate; Euclidean distance on pixels)

The median, not the mean: the mean of neighbours from two clusters falls between them.
This is what UMAP's ``transform`` does in spirit (it optimises from such a start).
Cost per query: an exact search over the M training images, ``2 M P`` flops (86 MFLOP at
M = 55,000, P = 784), plus sorting ``k`` values.
"""

from __future__ import annotations

import numpy as np

PLACEMENT_NEIGHBOURS = 15


def neighbour_placement(train_images: np.ndarray, train_x: np.ndarray, images: np.ndarray,
                        k: int = PLACEMENT_NEIGHBOURS, exclude_self: bool = False) -> np.ndarray:
    """``[N, D]``: the median training location of each image's ``k`` nearest training images.

    ``train_images`` ``[M, P]``, ``train_x`` ``[M, D]``, ``images`` ``[N, P]``.
    ``exclude_self``: the images are the training images themselves (leave each one out).
    """
    from sklearn.neighbors import NearestNeighbors

    train_images = np.asarray(train_images, np.float32).reshape(len(train_images), -1)
    images = np.asarray(images, np.float32).reshape(len(images), -1)
    if len(train_images) != len(train_x):
        raise ValueError(f"{len(train_images)} training images for {len(train_x)} locations")
    k = int(k)
    if not 1 <= k <= len(train_images) - int(exclude_self):
        raise ValueError(f"k = {k} neighbours out of {len(train_images)} training images")
    search = NearestNeighbors(n_neighbors=k + int(exclude_self), algorithm="brute")
    _, index = search.fit(train_images).kneighbors(images)
    if exclude_self:
        index = index[:, 1:]
    return np.median(np.asarray(train_x)[index], axis=1).astype(np.float32)
