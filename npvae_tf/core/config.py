"""One typed, frozen configuration shared by training, evaluation and export.

A run folder holds ``config.json`` written by :meth:`Config.save`; :meth:`Config.load`
is all that is needed to rebuild the run's model (see :func:`npvae_tf.model.vae.build_model`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional, Tuple

from npvae_tf.core.files import write_json
from npvae_tf.core.objective import RETIRED, SCHEMES, Objective, knob

MODELS = ("npvae", "vae")
# The decoder's likelihood families (npvae_tf/model/likelihoods.py).
LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
CONFIG_FILE = "config.json"
# config.json also names the run's scheme (``"neighbour"``), derived from its knobs.
SCHEME_NAME_KEY = "scheme_name"
# Fields added after run folders were first named by a digest of the config (see
# Config.digest_fields).
LATER_FIELDS = ("x_path_decoder_epochs", "neighbour_weight", "n_neighbors", "min_dist",
                "landmark_weight", "likelihood", "test_fraction")


class ConfigError(ValueError):
    """A setting is out of range; the message names the setting."""


@dataclasses.dataclass(frozen=True)
class Config(Objective):
    """Model and training settings (defaults reproduce the paper's MNIST setup).

    The objective's knobs are inherited from :class:`npvae_tf.core.objective.Objective`;
    every field's meaning is its ``help`` metadata (the command lines' flag text).
    ``image_shape``: the shape of one example, ``[H, W]``, ``[H, W, C]`` or ``[D]`` (the models
    see them flattened), set by the data.
    """

    model: str = knob("npvae", "npvae: nonparametric VAE (paper eq. 5); vae: standard VAE",
                      choices=MODELS)
    z_dim: int = knob(500, "latent dimension Z")
    x_dim: int = knob(2, "dimension of the kernel's embedding X (npVAE)")
    hidden: Tuple[int, ...] = knob((500, 500), "hidden layer widths of every MLP")
    dropout: float = knob(0.1, "dropout rate (the paper's keep-probability 0.9 = rate 0.1)")
    image_shape: Tuple[int, ...] = knob((28, 28), "", flag=False)
    likelihood: str = knob("bernoulli", "the decoder's likelihood p(y|z): bernoulli (the paper's, "
                           "values in [0, 1]), continuous_bernoulli (its normalised density on "
                           "[0, 1]) or gaussian (real-valued data, standardised)",
                           choices=LIKELIHOODS)
    batch_size: int = knob(128, "global mini-batch size (>= 2)")
    learning_rate: float = knob(1e-3, "Adam learning rate", flag="lr")
    epochs: int = knob(50, "training epochs")
    initial_lengthscale: float = knob(1.0, "initial kernel lengthscale l (learned)")
    seed: int = knob(0, "random seed")
    binarize: bool = knob(False, "dynamically binarise training images")
    train_examples: Optional[int] = knob(
        None, "use only the first N training examples (quick runs)")
    validation_examples: int = knob(
        5000, "validation examples taken from the end of the training split (a tenth of it "
              "where that many would take half or more)")
    test_fraction: float = knob(
        0.15, "share of the examples held out (seeded) as the test split when the data has none")
    jit_compile: bool = knob(False, "compile steps with XLA")

    def __post_init__(self):
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        self.validate()

    @property
    def scheme(self) -> str:
        """A short name of the training objective, e.g. for table headings: ``"VAE"``;
        ``"npVAE"`` for the paper's objective (eq. 5); otherwise ``"npVAE: "`` and what
        differs from the paper (:meth:`~npvae_tf.core.objective.Objective.objective_label`)."""
        if self.model == "vae":
            return "VAE"
        label = self.objective_label()
        return f"npVAE: {label}" if label else "npVAE"

    @property
    def scheme_name(self) -> Optional[str]:
        """The name in :data:`~npvae_tf.core.objective.SCHEMES` of this objective (``"paper"``,
        ``"umap-landmark"``, ...), or None for a combination no scheme names."""
        mine = (self.model, self.objective())
        for name, scheme in SCHEMES.items():
            named = Config(**scheme.changes)
            if (named.model, named.objective()) == mine:
                return name
        return None

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
        """``P``: values per example (the product of ``image_shape``)."""
        return int(math.prod(self.image_shape))

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
        require(1 <= len(self.image_shape) <= 3 and all(s >= 1 for s in self.image_shape),
                f"image_shape must be 1 to 3 positive sizes, got {list(self.image_shape)}")
        require(self.likelihood in LIKELIHOODS,
                f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        require(not (self.binarize and self.likelihood == "gaussian"),
                "binarize draws binary pixels: it needs a likelihood on [0, 1], not gaussian")
        require(0.0 < self.test_fraction < 1.0,
                f"test_fraction must be in (0, 1), got {self.test_fraction}")
        require(self.batch_size >= 2,
                f"batch_size must be >= 2 (the kernel needs neighbours), got {self.batch_size}")
        require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        for ok, message in self.objective_problems(self.model == "npvae"):
            require(ok, message)
        require(self.initial_lengthscale > 0,
                f"initial_lengthscale must be > 0, got {self.initial_lengthscale}")
        require(self.train_examples is None or self.train_examples >= 2,
                f"train_examples must be >= 2, got {self.train_examples}")
        require(self.validation_examples >= 2,
                f"validation_examples must be >= 2, got {self.validation_examples}")

    def digest_fields(self) -> dict:
        """The fields that identify a run (:func:`npvae_tf.runs.layout.config_digest`): all of them,
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
        values = dict(values)
        values.pop(SCHEME_NAME_KEY, None)  # written for readers; the knobs decide it
        for name, default in RETIRED.items():
            if name in values and values.pop(name) != default:
                raise ConfigError(f"{name} is an option this version no longer has (it was "
                                  "measured not to help); train a new run")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        return cls(**values)

    def save(self, run_dir: str) -> str:
        """Writes ``run_dir/config.json`` atomically and returns its path."""
        os.makedirs(run_dir, exist_ok=True)
        path = os.path.join(run_dir, CONFIG_FILE)
        named = {SCHEME_NAME_KEY: self.scheme_name} if self.scheme_name else {}
        write_json(path, {**self.to_dict(), **named})
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
