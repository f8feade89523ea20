"""TensorBoard's Embedding Projector of the test set, written by ``evaluate.py``.

The projector holds X (npVAE) and ``E[z]`` of test images as TSV tensors, their labels
(``metadata.tsv``) and a sprite of the images; the folder also gets an (empty) event file,
which is what makes TensorBoard list it as a run, so ``tensorboard --logdir RUN`` shows both
it and the training logs.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence

import numpy as np

from npvae_tf.data.pictures import pictures, rgb, tile

PROJECTOR_DIR = "projector"    # <evaluation output>/projector
PROJECTOR_CONFIG = "projector_config.pbtxt"


def write_projector(out_dir: str, images: np.ndarray, labels: np.ndarray,
                    embeddings: Dict[str, np.ndarray], image_shape: Sequence[int],
                    class_names: Optional[Sequence[str]] = None) -> str:
    """Writes a TensorBoard Embedding Projector to ``out_dir``; returns its config path.

    ``embeddings``: name -> ``[N, d]`` (e.g. ``{"x": ..., "z_mean": ...}``) for ``N`` images
    ``[N, H*W]`` with ``labels`` ``[N]``. Writes ``<name>.tsv`` per embedding,
    ``metadata.tsv`` (index, label; the label's class name if given), ``sprite.png`` (the
    images, white on black, in a square mosaic; at most 8,192 px a side, TensorBoard's
    limit), ``projector_config.pbtxt`` and an event file (so TensorBoard finds the folder).
    """
    from npvae_tf.core.backend import tf
    from PIL import Image
    from tensorboard.plugins import projector

    from npvae_tf.core.files import atomic_write, write_text

    images = np.asarray(images, np.float32)
    n = len(images)
    h, w = pictures(images[:1], image_shape).shape[1:3]
    per_side = int(math.ceil(math.sqrt(n)))
    if per_side * max(h, w) > 8192:
        raise ValueError(f"{n} images of {h}x{w} exceed the projector's 8192-pixel sprite")
    for name, values in embeddings.items():
        if len(values) != n:
            raise ValueError(f"embedding {name} has {len(values)} rows for {n} images")
    os.makedirs(out_dir, exist_ok=True)
    config = projector.ProjectorConfig()
    for name, values in embeddings.items():
        values = np.asarray(values, np.float64)
        if values.ndim == 2 and values.shape[1] == 2:
            # The projector opens on a 3-D PCA view; of a 2-D tensor it asks for a third
            # component that does not exist ("Total variance described: NaN%") and draws no
            # point. A third column of zeros adds no variance: the points lie flat, as in X.
            values = np.concatenate([values, np.zeros((len(values), 1))], axis=1)
        lines = ["\t".join(f"{v:.6g}" for v in row) for row in values]
        write_text(os.path.join(out_dir, f"{name}.tsv"), "\n".join(lines) + "\n")
        embedding = config.embeddings.add()
        embedding.tensor_name = name
        embedding.tensor_path = f"{name}.tsv"
        embedding.tensor_shape.extend(np.shape(values))
        embedding.metadata_path = "metadata.tsv"
        embedding.sprite.image_path = "sprite.png"
        embedding.sprite.single_image_dim.extend([w, h])
    names = [class_names[int(c)] if class_names else str(int(c)) for c in labels]
    write_text(os.path.join(out_dir, "metadata.tsv"),
               "index\tlabel\n" + "".join(f"{i}\t{c}\n" for i, c in enumerate(names)))
    # White on black as TensorBoard shows MNIST; colour and heat strips as RGB.
    sprite = rgb(tile(images, image_shape, per_side), image_shape, light=False)
    sprite = (sprite * 255).round().astype(np.uint8)
    atomic_write(os.path.join(out_dir, "sprite.png"),
                 lambda tmp: Image.fromarray(sprite).save(tmp, format="PNG"))
    path = os.path.join(out_dir, PROJECTOR_CONFIG)
    write_text(path, str(config))  # a protobuf message prints as its text format
    writer = tf.summary.create_file_writer(out_dir)  # an event file: TensorBoard lists the run
    writer.flush()
    writer.close()
    return path
