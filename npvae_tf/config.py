"""One typed, frozen configuration shared by training, evaluation and export.

A run folder holds ``config.json`` written by :meth:`Config.save`; :meth:`Config.load`
is all that is needed to rebuild the run's model (see :func:`npvae_tf.model.build_model`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Tuple

from npvae_tf.files import write_json

MODELS = ("npvae", "vae")
X_PATH_DECODERS = ("shared", "separate")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
CONFIG_FILE = "config.json"
# Fields added after run folders were first named by a digest of the config (see
# Config.digest_fields).
LATER_FIELDS = ("x_path_hold_decoder", "x_path_decoder_epochs", "neighbour_weight", "n_neighbors", "min_dist",
                "landmark_weight")


class ConfigError(ValueError):
    """A setting is out of range; the message names the setting."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Model and training settings (defaults reproduce the paper's MNIST setup).

    Attributes:
      model: ``"npvae"`` (nonparametric VAE, paper eq. 5) or ``"vae"`` (Kingma & Welling).
      z_dim: dimension Z of the Gaussian latent z.
      x_dim: dimension of the deterministic embedding x used by the kernel (npVAE only).
      hidden: widths of the hidden layers of every MLP (encoder, decoder, X encoder).
      dropout: Keras dropout *rate* after each hidden layer; the paper's keep-probability
        0.9 is rate 0.1.
      image_shape: height and width of the images; the models see flattened pixels.
      batch_size: global mini-batch size (>= 2: the kernel needs neighbours).
      learning_rate: Adam step size.
      epochs: passes over the training split.
      match_weight: weight of ``||E[z_i] - z~_i||^2`` in the loss; 1 is the paper's objective,
        0 reduces the npVAE to a VAE with an unused X encoder.
      x_path_weight: weight of the *X-path* term ``-log p(y_i | z~_i)`` in the loss, the
        likelihood of each image decoded from its kernel prediction z~_i (0 is the paper).
        It trains what X is used for after training: y -> x -> z~ -> decoder.
      x_path_decoder: ``"shared"`` decodes z~ with the model's decoder; ``"separate"`` gives
        the X path a decoder of its own (same architecture), so the VAE's decoder keeps
        decoding posterior samples only. A separate decoder with ``x_path_weight`` 0 is
        fitted after training, on leave-one-out kernel averages of the training codes at
        the serving lengthscale (:mod:`npvae_tf.xpath_decoder`; the ``umap-own`` scheme).
      x_path_decoder_epochs: epochs of that fit.
      x_path_stop_gradient: the X-path term treats the latent means E[z_j] it averages as
        constants, so it trains the X encoder, the lengthscale and the X-path decoder but never
        moves the VAE's encoder (with ``match_weight`` 0 and a separate decoder the VAE is
        then trained exactly as a plain VAE).
      x_path_hold_decoder: with the shared decoder, the X-path term treats the decoder's
        weights as constants too (and decodes without dropout): with ``x_path_stop_gradient``
        it then trains only the X encoder and the lengthscale, and the VAE stays untouched.
      neighbour_weight: weight of the *neighbour term* (the ``umap`` scheme, not in the paper):
        UMAP's cross-entropy between the fuzzy k-nearest-neighbour graph of the training
        images and X (:mod:`npvae_tf.neighbours`). It trains the X encoder only. 0 is off.
      n_neighbors: neighbours per image of that graph (UMAP's ``n_neighbors``).
      min_dist: UMAP's ``min_dist``: how tightly X may pack neighbours (sets ``a``, ``b``).
      landmark_weight: weight of the *landmark term* ``||x_i - u_i||^2``: X regresses the
        training images' nonparametric UMAP layout ``u`` (computed once with the graph). It
        trains the X encoder only. 0 is off.
      initial_lengthscale: starting value of the learned kernel lengthscale l.
      seed: seeds weight initialisation, dropout, sampling and shuffling.
      binarize: dynamically binarise training images (y ~ Bernoulli(pixel) per epoch).
      train_examples: use only the first N training examples (None: all of them).
      validation_examples: size of the validation split, taken from the end of the
        training file (MNIST: 5,000 of 60,000).
      jit_compile: compile train/test steps with XLA.
    """

    model: str = "npvae"
    z_dim: int = 500
    x_dim: int = 2
    hidden: Tuple[int, ...] = (500, 500)
    dropout: float = 0.1
    image_shape: Tuple[int, int] = (28, 28)
    batch_size: int = 128
    learning_rate: float = 1e-3
    epochs: int = 50
    match_weight: float = 1.0
    x_path_weight: float = 0.0
    x_path_decoder: str = "shared"
    x_path_stop_gradient: bool = False
    x_path_hold_decoder: bool = False
    x_path_decoder_epochs: int = 10
    neighbour_weight: float = 0.0
    n_neighbors: int = 15
    min_dist: float = 0.1
    landmark_weight: float = 0.0
    initial_lengthscale: float = 1.0
    seed: int = 0
    binarize: bool = False
    train_examples: Optional[int] = None
    validation_examples: int = 5000
    jit_compile: bool = False

    def __post_init__(self):
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        self.validate()

    @property
    def scheme(self) -> str:
        """A short name of the training objective, e.g. for table headings.

        ``"VAE"``; ``"npVAE"`` for the paper's objective (eq. 5); otherwise ``"npVAE"`` with
        what differs from the paper, e.g. ``"npVAE: match 0, X path 1, own decoder"``.
        """
        if self.model == "vae":
            return "VAE"
        parts = []
        if self.match_weight != 1.0:
            parts.append(f"match {self.match_weight:g}")
        if self.x_path_weight > 0:
            parts.append(f"X path {self.x_path_weight:g}")
            if self.x_path_decoder == "separate":
                parts.append("own decoder")
            if self.x_path_stop_gradient:
                parts.append("E[z] held")
            if self.x_path_hold_decoder:
                parts.append("decoder held")
        elif self.fits_x_path_decoder:
            parts.append("own decoder fitted after")
        if self.landmark_weight > 0:
            parts.insert(0, f"landmarks {self.landmark_weight:g}")
        if self.neighbour_weight > 0:
            parts.insert(0, f"neighbour {self.neighbour_weight:g}")
        return "npVAE: " + ", ".join(parts) if parts else "npVAE"

    @property
    def uses_neighbour_graph(self) -> bool:
        """Training draws from the k-NN graph of the training images (neighbours, landmarks)."""
        return self.neighbour_weight > 0 or self.landmark_weight > 0

    @property
    def fits_x_path_decoder(self) -> bool:
        """The X path's own decoder is fitted after training (not by the X-path term)."""
        return (self.model == "npvae" and self.x_path_decoder == "separate"
                and self.x_path_weight == 0)

    @property
    def has_x(self) -> bool:
        """Whether the model has the embedding X (the npVAE); as ``model.has_x``."""
        return self.model == "npvae"

    @property
    def image_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def validate(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        require(self.model in MODELS, f"model must be one of {MODELS}, got {self.model!r}")
        require(self.z_dim >= 1, f"z_dim must be >= 1, got {self.z_dim}")
        require(self.x_dim >= 1, f"x_dim must be >= 1, got {self.x_dim}")
        require(len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
                f"hidden must be one or more positive widths, got {list(self.hidden)}")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(len(self.image_shape) == 2 and all(s >= 1 for s in self.image_shape),
                f"image_shape must be two positive sizes, got {list(self.image_shape)}")
        require(self.batch_size >= 2,
                f"batch_size must be >= 2 (the kernel needs neighbours), got {self.batch_size}")
        require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.match_weight >= 0, f"match_weight must be >= 0, got {self.match_weight}")
        require(self.x_path_weight >= 0, f"x_path_weight must be >= 0, got {self.x_path_weight}")
        require(self.x_path_decoder in X_PATH_DECODERS,
                f"x_path_decoder must be one of {X_PATH_DECODERS}, got {self.x_path_decoder!r}")
        require(self.model == "npvae" or (self.x_path_weight == 0 and self.match_weight == 1.0
                                         and self.x_path_decoder == "shared"
                                         and not self.x_path_stop_gradient
                                         and not self.x_path_hold_decoder),
                "match_weight and the x_path_* settings apply to model 'npvae' only")
        require(self.neighbour_weight >= 0,
                f"neighbour_weight must be >= 0, got {self.neighbour_weight}")
        require(self.model == "npvae" or self.neighbour_weight == 0,
                "neighbour_weight (the neighbour term trains X) applies to model 'npvae' only")
        require(self.x_path_decoder_epochs >= 1,
                f"x_path_decoder_epochs must be >= 1, got {self.x_path_decoder_epochs}")
        require(self.landmark_weight >= 0,
                f"landmark_weight must be >= 0, got {self.landmark_weight}")
        require(self.model == "npvae" or self.landmark_weight == 0,
                "landmark_weight (the landmark term trains X) applies to model 'npvae' only")
        require(self.n_neighbors >= 2, f"n_neighbors must be >= 2, got {self.n_neighbors}")
        require(self.min_dist >= 0, f"min_dist must be >= 0, got {self.min_dist}")
        require(not self.x_path_hold_decoder or self.x_path_decoder == "shared",
                "x_path_hold_decoder holds the shared decoder: it needs x_path_decoder 'shared'")
        require(self.initial_lengthscale > 0,
                f"initial_lengthscale must be > 0, got {self.initial_lengthscale}")
        require(self.train_examples is None or self.train_examples >= 2,
                f"train_examples must be >= 2, got {self.train_examples}")
        require(self.validation_examples >= 2,
                f"validation_examples must be >= 2, got {self.validation_examples}")

    def digest_fields(self) -> dict:
        """The fields that identify a run (:func:`npvae_tf.runs.config_digest`): all of them,
        except fields added later while they keep their defaults, so a configuration made
        before they existed keeps its run-folder name."""
        values = self.to_dict()
        for name in LATER_FIELDS:
            if values[name] == _field_default(name):
                del values[name]
        return values

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        return cls(**values)

    def save(self, run_dir: str) -> str:
        """Writes ``run_dir/config.json`` atomically and returns its path."""
        os.makedirs(run_dir, exist_ok=True)
        path = os.path.join(run_dir, CONFIG_FILE)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, run_dir: str) -> "Config":
        path = os.path.join(run_dir, CONFIG_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: no config.json; is {run_dir!r} a run folder?")
        try:
            with open(path) as f:
                values = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(values)


def _field_default(name: str):
    return next(f.default for f in dataclasses.fields(Config) if f.name == name)
