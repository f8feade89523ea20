"""Input checks inside the SavedModel's signatures, as TensorFlow ops (they run in TF
Serving too): rank, width, finiteness, the pixel range, the sample count.

Images come as ``[N, P]`` or in the data's own shape ``[N, H, W]`` / ``[N, H, W, C]``
(flattened here). The signatures leave the rank and the width unknown (``TensorSpec(None)``):
NumPy input of a wrong shape then reaches these checks, which name the input and the shape it
must have, instead of failing in TensorFlow's Python binding (a ``TypeError`` that prints the
array). A float32 signature accepts NumPy or list input of any float type (converted to float32) and
rejects a ``tf.Tensor`` of another dtype (``InvalidArgumentError``); a session-style client
converts what it feeds.
"""

from __future__ import annotations

import math

from npvae_tf.core.backend import tf

MAX_SAMPLE_COUNT = 100_000


def checked_matrix(t: tf.Tensor, width: int, name: str, what: str,
                   also: str = "") -> tf.Tensor:
    """``t`` ``[N, width]``, checked at run time for its rank, width and finiteness; ``also``
    names another accepted shape in the messages (`` or [N, 28, 28]``)."""
    must = f"{name} must be [N, {width}]{also} ({what})"
    # The rank is checked on the tensor's run-time shape (Grappler would fold an assert on
    # a static rank away), before anything indexes its shape.
    rank_ok = tf.debugging.assert_equal(tf.size(tf.shape(t)), 2, message=f"{must}; wrong rank")
    with tf.control_dependencies([rank_ok]):
        t = tf.ensure_shape(t, [None, None], name=f"check_{name}_rank")
    width_ok = tf.debugging.assert_equal(tf.shape(t)[1], width, message=f"{must}; wrong width")
    with tf.control_dependencies([width_ok]):
        t = tf.ensure_shape(t, [None, width], name=f"check_{name}_shape")
    return tf.debugging.assert_all_finite(t, f"{name} must be finite (no NaN or Inf)")


def as_rows(images: tf.Tensor, image_shape: tuple) -> tf.Tensor:
    """Examples of the data's own shape ``[N, *image_shape]`` (a tuple of ints) flattened to
    ``[N, P]``; input of any other shape unchanged, for :func:`checked_matrix` to judge."""
    k = len(image_shape)
    if k < 2:  # feature vectors: [N, D] is their own shape
        return images
    dims = tf.shape(images)
    # Zero-padded so that the slice exists whatever the rank (no size is 0 in image_shape).
    padded = tf.concat([dims, tf.zeros([k + 1], tf.int32)], axis=0)
    whole = tf.logical_and(tf.equal(tf.size(dims), k + 1),
                           tf.reduce_all(tf.equal(padded[1:k + 1], image_shape)))
    width = math.prod(image_shape)
    return tf.cond(whole, lambda: tf.reshape(images, tf.stack([padded[0], width])),
                   lambda: images)


def checked_images(images: tf.Tensor, image_shape, unit: bool = True) -> tf.Tensor:
    """``images`` ``[N, P]`` or ``[N, *image_shape]`` as ``[N, P]``; ``unit``: values in
    [0, 1] too (the Bernoulli likelihoods)."""
    image_shape = tuple(int(d) for d in image_shape)
    image_dim = math.prod(image_shape)
    either = "" if len(image_shape) < 2 else f" or [N, {', '.join(map(str, image_shape))}]"
    images = checked_matrix(as_rows(images, image_shape), image_dim, "images",
                            f"{image_dim} values per example", also=either)
    if not unit:
        return images
    in_range = [
        tf.debugging.assert_greater_equal(images, 0.0,
                                          message="images must be pixel values in [0, 1]"),
        tf.debugging.assert_less_equal(images, 1.0,
                                       message="images must be pixel values in [0, 1]"),
    ]
    with tf.control_dependencies(in_range):
        return tf.identity(images)


def checked_count(count: tf.Tensor) -> tf.Tensor:
    count = tf.ensure_shape(count, [], name="check_count_shape")
    checks = [
        tf.debugging.assert_non_negative(count, message="count must be >= 0"),
        tf.debugging.assert_less_equal(count, MAX_SAMPLE_COUNT,
                                       message=f"count must be <= {MAX_SAMPLE_COUNT}"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(count)


def checked_seed(seed: tf.Tensor) -> tf.Tensor:
    return tf.ensure_shape(seed, [], name="check_seed_shape")
