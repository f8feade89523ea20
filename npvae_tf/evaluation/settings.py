"""The evaluation settings, importable without TensorFlow: the command lines take their flags'
defaults from :class:`Settings` before TensorFlow starts (:mod:`npvae_tf.evaluation` uses them).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

# Epochs of the judging classifier (npvae_tf.evaluation.classifier) when it must be trained.
CLASSIFIER_EPOCHS = 3


@dataclasses.dataclass(frozen=True)
class Settings:
    """Evaluation settings (all seeded by ``seed``).

    Attributes:
      iw_samples: draws k per image of the importance-weighted log-likelihood (cost: k
        decoder passes over the test set; k = 1 is the ELBO estimate).
      trust_subset: test images used for trustworthiness (O(n^2) memory).
      generated: images generated per source (prior, X density) for the sample metrics.
      pairs: test-image pairs for the interpolation metric; steps: points per path.
      grid_size: the decoded grid over X (or a 2-D Z) is grid_size x grid_size.
      batch_size: images per prediction batch.
      plots: also draw the figures.
      projector_images: test images in the TensorBoard Embedding Projector (0: none).
    """

    iw_samples: int = 100
    seed: int = 0
    trust_subset: int = 2000
    generated: int = 10000
    pairs: int = 100
    steps: int = 10
    grid_size: int = 20
    batch_size: int = 1000
    plots: bool = False
    projector_images: int = 2000
    classifier_cache: Optional[str] = None
    classifier_epochs: int = CLASSIFIER_EPOCHS
