"""Named random streams split from one run seed.

Every consumer of randomness gets its own stream, ``stream_seed(run_seed, name)``, so no two
consumers draw from the same raw bits (Keras' ``SeedGenerator(s)`` walks the stateless seeds
``(s, 0), (s, 1), ...``: two consumers seeded ``s`` would draw identical numbers, and ``s``
and ``s + 1`` overlap across runs). Streams of a training run:

    data_order                    the permutation of the training set in each epoch
    binarize                      dynamic binarisation draws (``--binarize``)
    posterior_noise               eps of the reparameterised z ~ q(z|y)
    <mlp>/dropout_<i>             each dropout layer (encoder, decoder, x_encoder, x_path_decoder)
    neighbour_tails               the graph neighbour drawn for each head (``umap`` scheme)
    neighbour_negatives           the negatives' positions in each batch (``umap`` scheme)
"""

from __future__ import annotations

import hashlib
from typing import Optional


def stream_seed(seed: Optional[int], stream: str) -> Optional[int]:
    """The seed, in ``[0, 2**31 - 1)``, of the stream ``stream`` of a run seeded ``seed``.

    A hash of ``(seed, stream)``; ``None`` (unseeded) stays ``None``.
    """
    if seed is None:
        return None
    digest = hashlib.sha256(f"npvae_tf/{int(seed)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2 ** 31 - 1)
